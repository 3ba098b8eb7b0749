package plans_test

// Helpers shared by the end-to-end tests of the shipped plans: the planrun binary built once
// (internal/plantest runs it as a process), applying YAML files, reading a run's journal.

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
)

// planrunBin is the planrun binary, built once for the tests that run plans as a process.
var planrunBin string

func TestMain(m *testing.M) { plantest.MainWithPlanrun(m, "../cmd/planrun", &planrunBin) }

// applyFile creates the objects of a YAML file (CRDs and admission objects).
func applyFile(t *testing.T, dyn dynamic.Interface, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(obj) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		gv, _ := schema.ParseGroupVersion(u.GetAPIVersion())
		res := map[string]string{"CustomResourceDefinition": "customresourcedefinitions", "ValidatingAdmissionPolicy": "validatingadmissionpolicies", "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings"}[u.GetKind()]
		if _, err := dyn.Resource(gv.WithResource(res)).Create(t.Context(), u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// loadJournal reads the journal of run id from dir/runs.
func loadJournal(t *testing.T, dir, id string) *engine.Journal {
	t.Helper()
	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// addObjects lists the objects of a resource (in namespace ns, or all of them when ns is empty)
// into out, keyed "resource ns/name"; a resource that is not served adds nothing.
func addObjects(t *testing.T, dyn dynamic.Interface, out map[string]*unstructured.Unstructured, gvr schema.GroupVersionResource, ns string) {
	t.Helper()
	var r dynamic.ResourceInterface = dyn.Resource(gvr)
	if ns != "" {
		r = dyn.Resource(gvr).Namespace(ns)
	}
	l, err := r.List(t.Context(), metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return // no CRD
	}
	if err != nil {
		t.Fatalf("list %s: %v", gvr.Resource, err)
	}
	for i := range l.Items {
		o := &l.Items[i]
		out[gvr.Resource+" "+o.GetNamespace()+"/"+o.GetName()] = o
	}
}

// normalized is the JSON form of v, for comparisons that ignore Go types.
func normalized(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
