package kuberestore_test

import (
	"context"
	"encoding/json"
	"sort"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/uuid"

	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/storage"
)

var clusters []*kubetest.Cluster

func TestMain(m *testing.M) { kubetest.Main(m, 1, &clusters) }

func mainCluster() map[string]*kubetest.Cluster {
	return map[string]*kubetest.Cluster{"main": clusters[0]}
}

// kinds the tests back up: kind → resource, group, version, namespaced.
var kinds = map[string]struct {
	gvr        schema.GroupVersionResource
	namespaced bool
}{
	"Namespace":                {schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, false},
	"ConfigMap":                {schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, true},
	"Secret":                   {schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, true},
	"ServiceAccount":           {schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, true},
	"Deployment":               {schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}, true},
	"ReplicaSet":               {schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}, true},
	"CustomResourceDefinition": {schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}, false},
	"Widget":                   {widgets, true},
	"Gadget":                   {schema.GroupVersionResource{Group: "nope.example.com", Version: "v1", Resource: "gadgets"}, true},
	"PersistentVolume":         {schema.GroupVersionResource{Version: "v1", Resource: "persistentvolumes"}, false},
	"Job":                      {schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}, true},
}

var (
	widgets = schema.GroupVersionResource{Group: "restore.example.com", Version: "v1", Resource: "widgets"}
	cmGVR   = kinds["ConfigMap"].gvr
)

// obj builds an object as a backup holds it: with a UID and other server fields.
func obj(kind, ns, name string, fields map[string]any) *unstructured.Unstructured {
	k := kinds[kind]
	u := &unstructured.Unstructured{Object: map[string]any{}}
	for key, v := range fields {
		u.Object[key] = v
	}
	u.SetAPIVersion(k.gvr.GroupVersion().String())
	u.SetKind(kind)
	u.SetName(name)
	if k.namespaced {
		u.SetNamespace(ns)
	}
	u.SetUID(uuid.NewUUID())
	u.SetResourceVersion("12345")
	u.SetGeneration(3)
	u.Object["metadata"].(map[string]any)["creationTimestamp"] = "2020-01-01T00:00:00Z"
	u.Object["metadata"].(map[string]any)["managedFields"] = []any{map[string]any{"manager": "old", "operation": "Update"}}
	return u
}

func ownedBy(u, owner *unstructured.Unstructured) *unstructured.Unstructured {
	refs := u.GetOwnerReferences()
	refs = append(refs, ownerRef(owner))
	u.SetOwnerReferences(refs)
	return u
}

func ownerRef(owner *unstructured.Unstructured) metav1.OwnerReference {
	t := true
	return metav1.OwnerReference{APIVersion: owner.GetAPIVersion(), Kind: owner.GetKind(), Name: owner.GetName(), UID: owner.GetUID(), Controller: &t}
}

// writeBackup writes objects as kube.backup does: one JSON-lines file per resource and
// namespace, and the manifest.
func writeBackup(t testing.TB, dir string, objs []*unstructured.Unstructured) {
	t.Helper()
	type key struct {
		kind, ns string
	}
	groups := map[key][]*unstructured.Unstructured{}
	var keys []key
	for _, o := range objs {
		k := key{o.GetKind(), o.GetNamespace()}
		if _, ok := groups[k]; !ok {
			keys = append(keys, k)
		}
		groups[k] = append(groups[k], o)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].kind+"/"+keys[i].ns < keys[j].kind+"/"+keys[j].ns })
	ctx := context.Background()
	loc := storage.OpenLocal(dir)
	m := &archive.Manifest{}
	byKind := map[string]int{}
	for _, k := range keys {
		info := kinds[k.kind]
		w, err := archive.Create(ctx, loc, archive.None, info.gvr.Group, info.gvr.Resource, k.ns)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range groups[k] {
			b, err := json.Marshal(o.Object)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(b); err != nil {
				t.Fatal(err)
			}
		}
		f, err := w.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		i, ok := byKind[k.kind]
		if !ok {
			i = len(m.Resources)
			byKind[k.kind] = i
			m.Resources = append(m.Resources, archive.Resource{Group: info.gvr.Group, Version: info.gvr.Version, Resource: info.gvr.Resource, Kind: k.kind, Namespaced: info.namespaced})
		}
		m.Resources[i].Files = append(m.Resources[i].Files, f)
		m.Resources[i].Count += f.Count
		m.Objects += f.Count
		m.Bytes += f.Bytes
	}
	if err := archive.WriteManifest(ctx, loc, m); err != nil {
		t.Fatal(err)
	}
}
