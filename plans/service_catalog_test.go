package plans_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
)

const (
	scPlan       = "service-catalog-to-crds.yaml"
	scNamespace  = "catalog"
	scController = "catalog-catalog-controller-manager"
	scAPIServer  = "catalog-catalog-apiserver"
	scGroup      = "servicecatalog.k8s.io"
	scVersion    = "v1beta1"
	scFinalizer  = "kubernetes-incubator/service-catalog"
	oldCRDLabel  = "planrun.dev/stand-in=old-service-catalog-apiserver"
	replicas     = 2
)

var teams = []string{"team-a", "team-b", "team-c"}

// scKinds are the 8 kinds, in restore order, with their resource and scope.
var scKinds = []struct {
	kind, resource string
	namespaced     bool
}{
	{"ClusterServiceBroker", "clusterservicebrokers", false},
	{"ServiceBroker", "servicebrokers", true},
	{"ClusterServiceClass", "clusterserviceclasses", false},
	{"ServiceClass", "serviceclasses", true},
	{"ClusterServicePlan", "clusterserviceplans", false},
	{"ServicePlan", "serviceplans", true},
	{"ServiceInstance", "serviceinstances", true},
	{"ServiceBinding", "servicebindings", true},
}

func scGVR(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: scGroup, Version: scVersion, Resource: resource}
}

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// scEnv is a complete cluster (controllers: the garbage collector deletes what a deleted owner
// leaves) with the old Service Catalog stood in by CRDs, and seeded objects.
type scEnv struct {
	cp       *controlplane.ControlPlane
	dyn      dynamic.Interface
	cs       kubernetes.Interface
	dir      string
	migrator string
}

// startCatalog starts the cluster (with controllers, or as opts say) and seeds it; withAPIServer
// adds the old apiserver Deployment whose presence makes the plan migrate.
func startCatalog(t *testing.T, withAPIServer bool, opts ...controlplane.Option) *scEnv {
	t.Helper()
	if len(opts) == 0 {
		opts = []controlplane.Option{controlplane.WithControllers()}
	}
	cp := controlplane.StartForTest(t, opts...)
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = -1, 0
	e := &scEnv{cp: cp, dyn: dynamic.NewForConfigOrDie(cfg), cs: kubernetes.NewForConfigOrDie(cfg), dir: t.TempDir()}
	ctx := t.Context()
	applyFile(t, e.dyn, "../testdata/servicecatalog/old-api.yaml")
	waitEstablished(t, e.dyn, oldCRDLabel)
	for _, ns := range append([]string{scNamespace}, teams...) {
		if _, err := e.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deployments := []string{scController}
	if withAPIServer {
		deployments = append(deployments, scAPIServer)
	}
	for _, name := range deployments {
		labels := map[string]string{"app": name}
		n := int32(replicas)
		_, err := e.cs.AppsV1().Deployments(scNamespace).Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
			Spec: appsv1.DeploymentSpec{
				Replicas: &n,
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					// On a node the pods run; sleep as PID 1 ignores SIGTERM, so a deleted pod
					// runs on for its grace period, as a busy controller manager may.
					Spec: corev1.PodSpec{TerminationGracePeriodSeconds: new(int64(3)), Containers: []corev1.Container{{
						Name: "catalog", Image: controlplane.BusyboxImage, ImagePullPolicy: corev1.PullNever, Command: []string{"sleep", "3600"}}}},
				},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	rev, err := e.cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	e.migrator = rev.Status.UserInfo.Username
	seedCatalog(t, e)
	return e
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func waitEstablished(t *testing.T, dyn dynamic.Interface, selector string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		l, err := dyn.Resource(crdGVR).List(t.Context(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			t.Fatal(err)
		}
		ready := 0
		for _, crd := range l.Items {
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conds {
				if m := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
					ready++
				}
			}
		}
		if ready == len(scKinds) {
			// Discovery and the storage of a new CRD lag a little behind Established.
			for _, k := range scKinds {
				for {
					_, err := dyn.Resource(scGVR(k.resource)).List(t.Context(), metav1.ListOptions{Limit: 1})
					if err == nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s not served: %v", k.resource, err)
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			var conds []string
			for _, crd := range l.Items {
				c, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
				conds = append(conds, crd.GetName()+": "+normalized(c))
			}
			t.Fatalf("%d of %d CRDs established: %s", ready, len(scKinds), strings.Join(conds, "; "))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cond(reason, msg string) []any {
	return []any{map[string]any{"type": "Ready", "status": "True", "reason": reason, "message": msg, "lastTransitionTime": "2020-03-01T10:00:00Z"}}
}

func ownerRef(kind, name string, uid types.UID, block bool) map[string]any {
	return map[string]any{"apiVersion": scGroup + "/" + scVersion, "kind": kind, "name": name, "uid": string(uid), "controller": true, "blockOwnerDeletion": block}
}

// create creates a Service Catalog object and sets its status, as the old API server and the
// controller manager had.
func create(t *testing.T, e *scEnv, resource, kind, ns, name string, meta, spec, status map[string]any) *unstructured.Unstructured {
	t.Helper()
	md := map[string]any{"name": name}
	if ns != "" {
		md["namespace"] = ns
	}
	for k, v := range meta {
		md[k] = v
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": scGroup + "/" + scVersion, "kind": kind, "metadata": md, "spec": spec}}
	var r dynamic.ResourceInterface = e.dyn.Resource(scGVR(resource))
	if ns != "" {
		r = e.dyn.Resource(scGVR(resource)).Namespace(ns)
	}
	got, err := r.Create(t.Context(), u, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("%s %s/%s: %v", kind, ns, name, err)
	}
	if status != nil {
		got.Object["status"] = status
		if got, err = r.UpdateStatus(t.Context(), got, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("%s %s/%s status: %v", kind, ns, name, err)
		}
	}
	return got
}

// seedCatalog creates 4 cluster brokers with 3 classes of 2 plans each, 2 brokers per team
// namespace with 2 classes of 2 plans each, 34 instances per team (102) and a binding per
// instance with its Secret owned by the binding.
func seedCatalog(t *testing.T, e *scEnv) {
	t.Helper()
	type class struct{ name, ext, plan, planExt string }
	var clusterClasses []class
	for b := range 4 {
		broker := create(t, e, "clusterservicebrokers", "ClusterServiceBroker", "", fmt.Sprintf("cluster-broker-%d", b), nil,
			map[string]any{"url": fmt.Sprintf("https://broker-%d.brokers.svc", b), "relistBehavior": "Duration", "relistDuration": "15m0s", "relistRequests": int64(b)},
			map[string]any{"conditions": cond("FetchedCatalog", "Successfully fetched catalog entries from broker."), "reconciledGeneration": int64(1), "lastCatalogRetrievalTime": "2020-03-01T10:00:00Z", "operationStartTime": nil})
		for c := range 3 {
			ext := fmt.Sprintf("db-%d-%d", b, c)
			name := fmt.Sprintf("3f2e%04d-%04d-4c1e-9a0b-5d6f7e8a9b0c", b, c)
			create(t, e, "clusterserviceclasses", "ClusterServiceClass", "", name,
				map[string]any{"ownerReferences": []any{ownerRef("ClusterServiceBroker", broker.GetName(), broker.GetUID(), false)}, "labels": map[string]any{"servicecatalog.k8s.io/spec.externalName": ext}},
				map[string]any{"clusterServiceBrokerName": broker.GetName(), "externalName": ext, "externalID": name, "description": "A database, size " + ext, "bindable": true, "planUpdatable": c%2 == 0, "tags": []any{"db", ext}},
				map[string]any{"removedFromBrokerCatalog": false})
			for p := range 2 {
				pext := []string{"small", "large"}[p]
				pname := fmt.Sprintf("%s-%s", name[:18], pext)
				create(t, e, "clusterserviceplans", "ClusterServicePlan", "", pname,
					map[string]any{"ownerReferences": []any{ownerRef("ClusterServiceBroker", broker.GetName(), broker.GetUID(), false)}},
					map[string]any{"clusterServiceBrokerName": broker.GetName(), "externalName": pext, "externalID": pname, "description": pext + " plan", "free": p == 0, "clusterServiceClassRef": map[string]any{"name": name}},
					map[string]any{"removedFromBrokerCatalog": false})
				clusterClasses = append(clusterClasses, class{name, ext, pname, pext})
			}
		}
	}
	nsClasses := map[string][]class{}
	for _, ns := range teams {
		for b := range 2 {
			broker := create(t, e, "servicebrokers", "ServiceBroker", ns, fmt.Sprintf("team-broker-%d", b), nil,
				map[string]any{"url": fmt.Sprintf("https://broker-%d.%s.svc", b, ns), "relistBehavior": "Duration", "relistDuration": "30m0s"},
				map[string]any{"conditions": cond("FetchedCatalog", "Successfully fetched catalog entries from broker."), "reconciledGeneration": int64(1)})
			for c := range 2 {
				ext := fmt.Sprintf("queue-%d-%d", b, c)
				name := fmt.Sprintf("7a1b%04d-%04d-4d2e-8f9a-0b1c2d3e4f5a", b, c)
				create(t, e, "serviceclasses", "ServiceClass", ns, name,
					map[string]any{"ownerReferences": []any{ownerRef("ServiceBroker", broker.GetName(), broker.GetUID(), false)}},
					map[string]any{"serviceBrokerName": broker.GetName(), "externalName": ext, "externalID": name, "description": "A queue", "bindable": true},
					map[string]any{"removedFromBrokerCatalog": false})
				for p := range 2 {
					pext := []string{"basic", "premium"}[p]
					pname := name[:18] + "-" + pext
					create(t, e, "serviceplans", "ServicePlan", ns, pname,
						map[string]any{"ownerReferences": []any{ownerRef("ServiceBroker", broker.GetName(), broker.GetUID(), false)}},
						map[string]any{"serviceBrokerName": broker.GetName(), "externalName": pext, "externalID": pname, "free": p == 0, "serviceClassRef": map[string]any{"name": name}},
						map[string]any{"removedFromBrokerCatalog": false})
					nsClasses[ns] = append(nsClasses[ns], class{name, ext, pname, pext})
				}
			}
		}
	}
	for _, ns := range teams {
		for i := range 34 {
			name := fmt.Sprintf("instance-%02d", i)
			var spec map[string]any
			if i%3 == 0 {
				c := nsClasses[ns][i%len(nsClasses[ns])]
				spec = map[string]any{"serviceClassExternalName": c.ext, "servicePlanExternalName": c.planExt, "serviceClassRef": map[string]any{"name": c.name}, "servicePlanRef": map[string]any{"name": c.plan}}
			} else {
				c := clusterClasses[i%len(clusterClasses)]
				spec = map[string]any{"clusterServiceClassExternalName": c.ext, "clusterServicePlanExternalName": c.planExt, "clusterServiceClassRef": map[string]any{"name": c.name}, "clusterServicePlanRef": map[string]any{"name": c.plan}}
			}
			spec["externalID"] = fmt.Sprintf("%s-%s-ext", ns, name)
			spec["parameters"] = map[string]any{"size": int64(i), "region": "eu-west-1"}
			spec["updateRequests"] = int64(i % 2)
			spec["userInfo"] = map[string]any{"username": "alice", "groups": []any{"system:authenticated"}}
			inst := create(t, e, "serviceinstances", "ServiceInstance", ns, name,
				map[string]any{"finalizers": []any{scFinalizer}, "labels": map[string]any{"team": ns}, "annotations": map[string]any{"example.com/owner": "alice"}},
				spec,
				map[string]any{"conditions": cond("ProvisionedSuccessfully", "The instance was provisioned successfully"), "asyncOpInProgress": false, "orphanMitigationInProgress": false,
					"provisionStatus": "Provisioned", "deprovisionStatus": "Required", "reconciledGeneration": int64(1), "observedGeneration": int64(1),
					"externalProperties": map[string]any{"parameterChecksum": fmt.Sprintf("%064d", i), "userInfo": map[string]any{"username": "alice"}}})
			bname := fmt.Sprintf("binding-%02d", i)
			secret := bname + "-creds"
			binding := create(t, e, "servicebindings", "ServiceBinding", ns, bname,
				map[string]any{"finalizers": []any{scFinalizer}},
				map[string]any{"instanceRef": map[string]any{"name": inst.GetName()}, "secretName": secret, "externalID": fmt.Sprintf("%s-%s-bind", ns, bname)},
				map[string]any{"conditions": cond("InjectedBindResult", "Injected bind result"), "asyncOpInProgress": false, "reconciledGeneration": int64(1), "unbindStatus": "Required",
					"externalProperties": map[string]any{}})
			_, err := e.cs.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: secret, OwnerReferences: []metav1.OwnerReference{{
					APIVersion: scGroup + "/" + scVersion, Kind: "ServiceBinding", Name: bname, UID: binding.GetUID(), Controller: new(true), BlockOwnerDeletion: new(true),
				}}},
				Data: map[string][]byte{"username": []byte("user-" + bname), "password": fmt.Appendf(nil, "s3cret-%s-%d", ns, i), "uri": fmt.Appendf(nil, "postgres://db-%d:5432/%s", i, ns)},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

// snapshot is every Service Catalog object and every Secret of the team namespaces, by
// "resource ns/name".
func snapshot(t *testing.T, e *scEnv) map[string]*unstructured.Unstructured {
	t.Helper()
	out := map[string]*unstructured.Unstructured{}
	add := func(gvr schema.GroupVersionResource, ns string) { addObjects(t, e.dyn, out, gvr, ns) }
	for _, k := range scKinds {
		add(scGVR(k.resource), "")
	}
	for _, ns := range teams {
		add(secretsGVR, ns)
	}
	return out
}

// planArgs are the params of the plan for the test control plane: the old CRDs stand in for
// the aggregated API; the APIService of the group is the API server's own (for the CRDs), so
// none is deleted.
func (e *scEnv) planArgs(extra ...string) []string {
	newCRDs, _ := filepath.Abs("../testdata/servicecatalog/new-crds.yaml")
	plan, _ := filepath.Abs(scPlan)
	args := []string{"apply", plan, "--kubeconfig", e.cp.Kubeconfig, "--context", e.cp.ContextName, "--run-id", "r",
		"--set", "newCRDs=" + newCRDs, "--set", "oldCRDSelector=" + oldCRDLabel, "--set", "apiService=",
		"--set", "backupDir=" + filepath.Join(e.dir, "backup"), "--set", "migrator=" + e.migrator}
	return append(args, extra...)
}

// run runs planrun in e.dir (with -o json unless plain), killing it at k if set.
func (e *scEnv) run(t *testing.T, k *plantest.KillPoint, plain bool, args ...string) plantest.Result {
	t.Helper()
	return plantest.RunBinary(t, planrunBin, e.dir, plantest.RunOptions{Kill: k, Plain: plain}, args...)
}

func (e *scEnv) journal(t *testing.T) *engine.Journal {
	t.Helper()
	return loadJournal(t, e.dir, "r")
}

// assertUnchanged checks that every object of before is still there at the same
// resourceVersion (else it reports "<object> <changed>") and that the controller manager still
// runs at its replicas.
func (e *scEnv) assertUnchanged(t *testing.T, before map[string]*unstructured.Unstructured, changed string) {
	t.Helper()
	after := snapshot(t, e)
	for k, b := range before {
		if a := after[k]; a == nil || a.GetResourceVersion() != b.GetResourceVersion() {
			t.Errorf("%s %s", k, changed)
		}
	}
	if got := e.replicas(t, scController); got != replicas {
		t.Errorf("controller manager at %d replicas", got)
	}
}

func (e *scEnv) replicas(t *testing.T, name string) int32 {
	t.Helper()
	d, err := e.cs.AppsV1().Deployments(scNamespace).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return *d.Spec.Replicas
}

// assertUnfrozen checks that no freeze of planrun is left and that a write to the group is allowed.
func (e *scEnv) assertUnfrozen(t *testing.T) {
	t.Helper()
	l, err := e.cs.AdmissionregistrationV1().ValidatingAdmissionPolicies().List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/managed-by=planrun"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Items {
		t.Errorf("freeze left behind: ValidatingAdmissionPolicy %s", p.Name)
	}
	probe := &unstructured.Unstructured{Object: map[string]any{"apiVersion": scGroup + "/" + scVersion, "kind": "ServiceBroker",
		"metadata": map[string]any{"name": "probe", "namespace": teams[0]}, "spec": map[string]any{"url": "https://probe"}}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := e.dyn.Resource(scGVR("servicebrokers")).Namespace(teams[0]).Create(t.Context(), probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a write to %s is still refused: %v", scGroup, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// assertMigrated checks the end state field by field against the snapshot taken before.
func assertMigrated(t *testing.T, e *scEnv, before map[string]*unstructured.Unstructured) {
	t.Helper()
	after := snapshot(t, e)
	problems := 0
	problem := func(format string, args ...any) {
		if problems++; problems <= 25 {
			t.Errorf(format, args...)
		}
	}
	// New UIDs by kind and name (ns/name), and the old → new UID map.
	newUID := map[string]types.UID{}
	oldToNew := map[types.UID]types.UID{}
	for key, a := range after {
		newUID[a.GetKind()+" "+a.GetNamespace()+"/"+a.GetName()] = a.GetUID()
		if b := before[key]; b != nil {
			oldToNew[b.GetUID()] = a.GetUID()
		}
	}
	keys := make([]string, 0, len(before))
	for k := range before {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		b, a := before[key], after[key]
		if a == nil {
			problem("%s: missing after the migration", key)
			continue
		}
		secret := strings.HasPrefix(key, "secrets ")
		if !secret && a.GetUID() == b.GetUID() {
			problem("%s: same UID %s as before: not recreated", key, a.GetUID())
		}
		if secret && a.GetUID() != b.GetUID() {
			problem("%s: UID changed from %s to %s: the Secret was recreated", key, b.GetUID(), a.GetUID())
		}
		for _, f := range []string{"spec", "status", "data", "type"} {
			if normalized(b.Object[f]) != normalized(a.Object[f]) {
				problem("%s: %s differs:\n before %s\n after  %s", key, f, normalized(b.Object[f]), normalized(a.Object[f]))
			}
		}
		for _, f := range [][]string{{"metadata", "labels"}, {"metadata", "annotations"}, {"metadata", "finalizers"}} {
			bv, _, _ := unstructured.NestedFieldNoCopy(b.Object, f...)
			av, _, _ := unstructured.NestedFieldNoCopy(a.Object, f...)
			if normalized(bv) != normalized(av) {
				problem("%s: %s differs: before %s, after %s", key, strings.Join(f, "."), normalized(bv), normalized(av))
			}
		}
		// Owner references: the same, pointing at the owners' new UIDs.
		brefs, arefs := b.GetOwnerReferences(), a.GetOwnerReferences()
		if len(brefs) != len(arefs) {
			problem("%s: %d owner references, want %d: %v", key, len(arefs), len(brefs), arefs)
			continue
		}
		for i, want := range brefs {
			got := arefs[i]
			ns := a.GetNamespace()
			owner, ok := newUID[want.Kind+" "+ns+"/"+want.Name]
			if !ok {
				owner, ok = newUID[want.Kind+" /"+want.Name] // cluster-scoped owner
			}
			if !ok || oldToNew[want.UID] != owner {
				problem("%s: owner %s %s has no new UID (%v)", key, want.Kind, want.Name, ok)
				continue
			}
			want.UID = owner
			if !reflect.DeepEqual(normalized(got), normalized(want)) {
				problem("%s: owner reference %s, want %s", key, normalized(got), normalized(want))
			}
		}
	}
	for key := range after {
		if before[key] == nil && !strings.Contains(key, "probe") {
			problem("%s: not there before the migration", key)
		}
	}
	if problems > 25 {
		t.Errorf("… %d problems in all", problems)
	}
	if got := e.replicas(t, scController); got != replicas {
		t.Errorf("controller manager has %d replicas, want %d", got, replicas)
	}
	if _, err := e.cs.AppsV1().Deployments(scNamespace).Get(t.Context(), scAPIServer, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the old apiserver Deployment is still there (%v)", err)
	}
	// The old API is gone: every CRD of the group is a new one.
	l, err := e.dyn.Resource(crdGVR).List(t.Context(), metav1.ListOptions{LabelSelector: oldCRDLabel})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Items) != 0 {
		t.Errorf("%d old CRDs left", len(l.Items))
	}
	e.assertUnfrozen(t)
}

func countByResource(snap map[string]*unstructured.Unstructured) map[string]int {
	out := map[string]int{}
	for k := range snap {
		out[strings.Fields(k)[0]]++
	}
	return out
}

// bindingSecrets counts the Secrets of the seeded bindings that exist.
func (e *scEnv) bindingSecrets(t *testing.T) int {
	t.Helper()
	n := 0
	for _, ns := range teams {
		l, err := e.cs.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range l.Items {
			if strings.HasPrefix(s.Name, "binding-") && strings.HasSuffix(s.Name, "-creds") {
				n++
			}
		}
	}
	return n
}

// waitGCCaughtUp makes sure the garbage collector has had its chance at the Secrets: a
// ServiceBinding of the new CRDs and a Secret it owns, created after the run, are deleted, and
// this waits until the collector has deleted that Secret. By then it watches the new CRDs,
// knows the owner references the run wrote, and would have deleted a Secret whose owner is gone.
func (e *scEnv) waitGCCaughtUp(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	ns := teams[0]
	bindings := e.dyn.Resource(scGVR("servicebindings")).Namespace(ns)
	owner, err := bindings.Create(ctx, &unstructured.Unstructured{Object: map[string]any{"apiVersion": scGroup + "/" + scVersion, "kind": "ServiceBinding",
		"metadata": map[string]any{"name": "gc-probe"}, "spec": map[string]any{"instanceRef": map[string]any{"name": "instance-00"}, "secretName": "gc-probe-creds"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gc-probe-creds", OwnerReferences: []metav1.OwnerReference{{
		APIVersion: scGroup + "/" + scVersion, Kind: "ServiceBinding", Name: owner.GetName(), UID: owner.GetUID(), Controller: new(true), BlockOwnerDeletion: new(true)}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := bindings.Delete(ctx, owner.GetName(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the garbage collector to delete the probe's Secret", func() (bool, string, error) {
		_, err := e.cs.CoreV1().Secrets(ns).Get(ctx, "gc-probe-creds", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err), nil
	})
}

// TestServiceCatalogMigrates applies the plan to the seeded catalog and checks the end state.
// On a cluster with a node, so that the controller manager's pods really run: the plan must not
// back up anything before they are gone.
func TestServiceCatalogMigrates(t *testing.T) {
	e := startCatalog(t, true, controlplane.WithNode())
	before := snapshot(t, e)
	t.Logf("seeded %v", countByResource(before))
	cmPods := "app=" + scController
	waitPods(t, e.cs, scNamespace, cmPods, replicas)
	// Once frozen, even a status write is refused with the plan's message; once the backup
	// starts, no pod of the controller manager is left.
	var statusErr error
	var podsAtBackup []string
	var podsErr error
	backupStarted := false
	r := plantest.RunBinary(t, planrunBin, e.dir, plantest.RunOptions{OnEvent: func(ev engine.Event) {
		if ev.Type == engine.EventStepStarted && ev.StepID == "backup" {
			podsAtBackup, _, podsErr = podsOf(t.Context(), e.cs, scNamespace, cmPods)
			backupStarted = true
			return
		}
		if ev.Type != engine.EventStepSucceeded || ev.StepID != "freeze" {
			return
		}
		list, err := e.dyn.Resource(scGVR("serviceinstances")).List(t.Context(), metav1.ListOptions{Limit: 1})
		if err != nil || len(list.Items) == 0 {
			statusErr = fmt.Errorf("listing instances: %v (%d)", err, len(list.Items))
			return
		}
		si := list.Items[0]
		si.Object["status"] = map[string]any{"asyncOpInProgress": true}
		_, statusErr = e.dyn.Resource(scGVR("serviceinstances")).Namespace(si.GetNamespace()).UpdateStatus(t.Context(), &si, metav1.UpdateOptions{})
	}}, e.planArgs()...)
	if r.Code != 0 {
		t.Fatalf("apply exited %d\n%s", r.Code, r)
	}
	if statusErr == nil || !strings.Contains(statusErr.Error(), "read-only while Service Catalog migrates to CRDs") {
		t.Errorf("a status write during the freeze: %v; want it refused with the plan's message", statusErr)
	}
	if !backupStarted || podsErr != nil || len(podsAtBackup) != 0 {
		t.Errorf("when the backup started (%v), the controller manager's pods were %q (%v); want none left", backupStarted, podsAtBackup, podsErr)
	}
	assertMigrated(t, e, before)
	// The Secrets outlive the garbage collector's look at them; the controller manager runs
	// again, the old apiserver's pods are gone with its Deployment.
	e.waitGCCaughtUp(t)
	if n := e.bindingSecrets(t); n != len(teams)*34 {
		t.Errorf("%d binding Secrets after the garbage collector caught up, want %d", n, len(teams)*34)
	}
	assertMigrated(t, e, before)
	waitPods(t, e.cs, scNamespace, cmPods, replicas)
	waitPods(t, e.cs, scNamespace, "app="+scAPIServer, 0)
	j := e.journal(t)
	out := j.Step("restore").Outputs
	if fmt.Sprint(out["failed"]) != "0" || fmt.Sprint(out["restored"]) != fmt.Sprint(len(before)-len(teams)*34) {
		t.Errorf("restore outputs: restored %v failed %v, want %d and 0", out["restored"], out["failed"], len(before)-len(teams)*34)
	}
	if n := j.Step("strip-secret-owners").Outputs["count"]; fmt.Sprint(n) != fmt.Sprint(len(teams)*34) {
		t.Errorf("strip-secret-owners patched %v Secrets, want %d", n, len(teams)*34)
	}

	// Applied again: the old apiserver is gone, so nothing happens.
	after := snapshot(t, e)
	if r := e.run(t, nil, false, append(e.planArgs(), "--run-id", "again")...); r.Code != 0 {
		t.Fatalf("second apply exited %d\n%s", r.Code, r)
	}
	for k, a := range snapshot(t, e) {
		if a.GetResourceVersion() != after[k].GetResourceVersion() {
			t.Errorf("%s changed by the second apply", k)
		}
	}
}

// TestServiceCatalogKilledAndResumed kills planrun in the middle of the deletion and of the
// restore; resumed, the run reaches the same end state.
func TestServiceCatalogKilledAndResumed(t *testing.T) {
	e := startCatalog(t, true)
	before := snapshot(t, e)
	r := e.run(t, &plantest.KillPoint{Event: engine.EventStepProgress, Step: "delete-serviceinstances", MinDone: 40}, false, e.planArgs()...)
	if !r.Killed {
		t.Fatalf("not killed during delete-serviceinstances (exit %d)\n%s", r.Code, r)
	}
	if st := e.journal(t).Step("delete-serviceinstances").Status; st != engine.StepRunning {
		t.Fatalf("killed with delete-serviceinstances %s", st)
	}
	kills := 1
	for _, k := range []plantest.KillPoint{
		{Event: engine.EventStepStarted, Step: "restore", Delay: 300 * time.Millisecond},
		{Event: engine.EventStepProgress, Step: "restore", MinDone: 250},
	} {
		r = e.run(t, &k, false, "resume", "r", "--break-lock", "--kubeconfig", e.cp.Kubeconfig, "--context", e.cp.ContextName)
		if r.Killed {
			kills++
			if st := e.journal(t).Step("restore").Status; st != engine.StepRunning {
				t.Fatalf("killed at %s/%s with restore %s", k.Event, k.Step, st)
			}
		} else if r.Code != 0 {
			t.Fatalf("resume exited %d\n%s", r.Code, r)
		}
	}
	if kills < 2 {
		t.Fatalf("killed %d times, want at least twice (once in the restore)", kills)
	}
	if r.Killed {
		if r = e.run(t, nil, false, "resume", "r", "--break-lock", "--kubeconfig", e.cp.Kubeconfig, "--context", e.cp.ContextName); r.Code != 0 {
			t.Fatalf("last resume exited %d\n%s", r.Code, r)
		}
	}
	t.Logf("killed %d times", kills)
	if st := e.journal(t).Status; st != engine.RunSucceeded {
		t.Fatalf("run %s", st)
	}
	assertMigrated(t, e, before)
	e.waitGCCaughtUp(t)
	if n := e.bindingSecrets(t); n != len(teams)*34 {
		t.Errorf("%d binding Secrets after the garbage collector caught up, want %d", n, len(teams)*34)
	}
}

// TestServiceCatalogWithoutStripDeletesSecrets is why strip-secret-owners exists: the plan
// without it, on a cluster whose garbage collector runs, loses every binding's Secret once the
// old bindings are deleted. planrun is stopped right after delete-servicebindings: later steps
// (reown-secrets) would race the collector for the Secrets, and the point is what the deletion
// alone does.
func TestServiceCatalogWithoutStripDeletesSecrets(t *testing.T) {
	e := startCatalog(t, true)
	b, err := os.ReadFile(scPlan)
	if err != nil {
		t.Fatal(err)
	}
	// The step is the list item from its id to the next step's.
	text := string(b)
	start := strings.Index(text, "  - id: strip-secret-owners\n")
	end := strings.Index(text, "  - id: hold\n")
	if start < 0 || end < start {
		t.Fatalf("strip-secret-owners followed by hold not found in %s", scPlan)
	}
	plan := filepath.Join(e.dir, "without-strip.yaml")
	if err := os.WriteFile(plan, []byte(text[:start]+text[end:]), 0o644); err != nil {
		t.Fatal(err)
	}
	args := e.planArgs()
	args[1] = plan
	if n := e.bindingSecrets(t); n != len(teams)*34 {
		t.Fatalf("%d binding Secrets seeded, want %d", n, len(teams)*34)
	}
	r := e.run(t, &plantest.KillPoint{Event: engine.EventStepSucceeded, Step: "delete-servicebindings"}, false, args...)
	if !r.Killed {
		t.Fatalf("not killed after delete-servicebindings (exit %d)\n%s", r.Code, r)
	}
	if rec := e.journal(t).Step("strip-secret-owners"); rec != nil {
		t.Fatalf("the plan run still has strip-secret-owners (%s)", rec.Status)
	}
	poll(t, "the garbage collector to delete the binding Secrets", func() (bool, string, error) {
		n := e.bindingSecrets(t)
		return n == 0, fmt.Sprintf("%d left", n), nil
	})
}

// TestServiceCatalogRollsBack breaks the backup on disk after the freeze, the scale-down and the
// Secret owner references were removed: the last check before deleting anything fails, and the
// run rolls back to the catalog as it was.
func TestServiceCatalogRollsBack(t *testing.T) {
	e := startCatalog(t, true)
	before := snapshot(t, e)
	r := e.run(t, &plantest.KillPoint{Event: engine.EventStepSucceeded, Step: "thaw"}, false, e.planArgs()...)
	if !r.Killed {
		t.Fatalf("not killed after thaw (exit %d)\n%s", r.Code, r)
	}
	if got := e.replicas(t, scController); got != 0 {
		t.Fatalf("controller manager at %d replicas after scale-down", got)
	}
	// An invalid object slipped into the backup.
	var file string
	filepath.Walk(filepath.Join(e.dir, "backup"), func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.Contains(p, "serviceinstances") && !info.IsDir() {
			file = p
		}
		return nil
	})
	if file == "" {
		t.Fatal("no serviceinstances file in the backup")
	}
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"apiVersion":"servicecatalog.k8s.io/v1beta1","kind":"ServiceInstance","metadata":{"name":"Invalid Name!"}}` + "\n")
	f.Close()

	r = e.run(t, nil, false, "resume", "r", "--break-lock", "--kubeconfig", e.cp.Kubeconfig, "--context", e.cp.ContextName)
	if r.Code != 1 {
		t.Fatalf("resume exited %d, want 1\n%s", r.Code, r)
	}
	j := e.journal(t)
	if j.Status != engine.RunRolledBack {
		t.Fatalf("run %s, want RolledBack\n%s", j.Status, r)
	}
	if rec := j.Step("verify-backup"); rec.Status != engine.StepFailed || !strings.Contains(rec.Error, "is damaged") {
		t.Errorf("verify-backup %s: %s", rec.Status, rec.Error)
	}
	for _, s := range []string{"delete-servicebindings", "restore"} {
		if st := j.Step(s).Status; st != engine.StepPending {
			t.Errorf("step %s %s, want Pending", s, st)
		}
	}
	// As it was: every object with its UID and resource content, Secrets owned by the old
	// bindings, replicas back, writes allowed.
	after := snapshot(t, e)
	for k, b := range before {
		a := after[k]
		if a == nil {
			t.Errorf("%s: gone after the rollback", k)
			continue
		}
		if a.GetUID() != b.GetUID() {
			t.Errorf("%s: UID changed", k)
		}
		for _, f := range []string{"spec", "status", "data"} {
			if normalized(a.Object[f]) != normalized(b.Object[f]) {
				t.Errorf("%s: %s changed", k, f)
			}
		}
		if normalized(a.GetOwnerReferences()) != normalized(b.GetOwnerReferences()) {
			t.Errorf("%s: owner references %s, want %s", k, normalized(a.GetOwnerReferences()), normalized(b.GetOwnerReferences()))
		}
	}
	if len(after) != len(before) {
		t.Errorf("%d objects after the rollback, %d before", len(after), len(before))
	}
	if got := e.replicas(t, scController); got != replicas {
		t.Errorf("controller manager at %d replicas, want %d", got, replicas)
	}
	e.assertUnfrozen(t)
	// Owned again by the old bindings' own UIDs: the garbage collector keeps them.
	e.waitGCCaughtUp(t)
	if n := e.bindingSecrets(t); n != len(teams)*34 {
		t.Errorf("%d binding Secrets after the garbage collector caught up, want %d", n, len(teams)*34)
	}
}

// TestServiceCatalogDryRun changes nothing and says what would happen.
func TestServiceCatalogDryRun(t *testing.T) {
	e := startCatalog(t, true)
	before := snapshot(t, e)
	r := e.run(t, nil, true, append(e.planArgs(), "--dry-run")...)
	if r.Code != 0 {
		t.Fatalf("dry run exited %d\n%s", r.Code, r)
	}
	for _, id := range []string{"freeze", "scale-down", "strip-secret-owners", "delete-serviceinstances", "delete-clusterservicebrokers", "remove-old-crds", "install-crds", "reown-secrets", "scale-up"} {
		if want := "✔ " + id + " dry run: not applied"; !strings.Contains(r.Stdout, want) {
			t.Errorf("the dry run does not say %q:\n%s", want, r.Stdout)
		}
	}
	for _, want := range []string{"✔ verify-backup done", "- restore skipped"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("the dry run does not say %q", want)
		}
	}
	t.Logf("dry run output:\n%s", r.Stdout)

	// The backup a dry run takes (into a temporary folder) is the one the real run would take,
	// and the verify checks it: every object of the 8 kinds and the bindings' Secrets.
	r = e.run(t, nil, false, append(e.planArgs("--run-id", "dry-json"), "--dry-run")...)
	if r.Code != 0 {
		t.Fatalf("dry run -o json exited %d\n%s", r.Code, r)
	}
	objects := map[string]any{}
	for _, ev := range r.Events {
		if ev.Type == engine.EventStepSucceeded && (ev.StepID == "backup" || ev.StepID == "verify-backup") {
			objects[ev.StepID] = ev.Outputs["objects"]
		}
	}
	scObjects := 0
	for k := range before {
		if !strings.HasPrefix(k, "secrets ") {
			scObjects++
		}
	}
	if fmt.Sprint(objects["backup"]) != fmt.Sprint(objects["verify-backup"]) || fmt.Sprint(objects["backup"]) == "<nil>" || plantest.Num(t, engine.Outputs{"n": objects["backup"]}, "n") < int64(scObjects) {
		t.Errorf("dry run: backup of %v objects, verified %v; want the same, at least the %d Service Catalog objects", objects["backup"], objects["verify-backup"], scObjects)
	}
	e.assertUnchanged(t, before, "changed by the dry run")
	if _, err := e.cs.AppsV1().Deployments(scNamespace).Get(t.Context(), scAPIServer, metav1.GetOptions{}); err != nil {
		t.Errorf("apiserver Deployment: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "backup")); !os.IsNotExist(err) {
		t.Errorf("the dry run wrote a backup (%v)", err)
	}
	e.assertUnfrozen(t)
}

// TestServiceCatalogSanityCheckRefuses lists every object that cannot be migrated, and changes
// nothing.
func TestServiceCatalogSanityCheckRefuses(t *testing.T) {
	e := startCatalog(t, true)
	ctx := t.Context()
	insts := e.dyn.Resource(scGVR("serviceinstances"))
	// Being deleted: held by its finalizer.
	if err := insts.Namespace("team-a").Delete(ctx, "instance-05", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// An asynchronous operation in progress.
	b, err := e.dyn.Resource(scGVR("servicebindings")).Namespace("team-b").Get(ctx, "binding-07", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unstructured.SetNestedField(b.Object, true, "status", "asyncOpInProgress")
	if _, err := e.dyn.Resource(scGVR("servicebindings")).Namespace("team-b").UpdateStatus(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Its class is gone.
	i, err := insts.Namespace("team-c").Get(ctx, "instance-10", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unstructured.SetNestedField(i.Object, "0bsolete-class", "spec", "clusterServiceClassRef", "name")
	if _, err := insts.Namespace("team-c").Update(ctx, i, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, e)

	r := e.run(t, nil, false, e.planArgs()...)
	if r.Code != 1 {
		t.Fatalf("apply exited %d, want 1\n%s", r.Code, r)
	}
	j := e.journal(t)
	rec := j.Step("sanity")
	want := `assertion failed: Service Catalog is not ready to migrate; fix these objects and apply again: being deleted: ServiceInstance team-a/instance-05; in progress (status.asyncOpInProgress): ServiceBinding team-b/binding-07; ServiceClass not exist for the ServiceInstances: team-c/instance-10;`
	if rec.Status != engine.StepFailed || !strings.Contains(rec.Error, want) {
		t.Fatalf("sanity %s: %s\nwant %s", rec.Status, rec.Error, want)
	}
	if !strings.Contains(r.String(), `step "sanity" failed: `+want) {
		t.Errorf("the run's error does not say it: %s", r)
	}
	if st := j.Step("freeze").Status; st != engine.StepPending {
		t.Errorf("freeze %s, want Pending", st)
	}
	e.assertUnchanged(t, before, "changed")
}

// TestServiceCatalogSkippedWithoutAPIServer: no old apiserver Deployment, nothing to migrate.
func TestServiceCatalogSkippedWithoutAPIServer(t *testing.T) {
	e := startCatalog(t, false)
	before := snapshot(t, e)
	r := e.run(t, nil, false, e.planArgs()...)
	if r.Code != 0 {
		t.Fatalf("apply exited %d\n%s", r.Code, r)
	}
	j := e.journal(t)
	for _, rec := range j.Steps {
		want := engine.StepSkipped
		if rec.ID == "old-apiserver" {
			want = engine.StepSucceeded
		}
		if rec.Status != want {
			t.Errorf("step %s %s, want %s", rec.ID, rec.Status, want)
		}
	}
	if len(j.Steps) < 30 {
		t.Errorf("%d steps in the journal", len(j.Steps))
	}
	e.assertUnchanged(t, before, "changed")
}
