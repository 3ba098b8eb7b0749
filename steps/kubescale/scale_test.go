package kubescale_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	_ "planrun.dev/planrun/steps/assert"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubescale"
)

var clusters []*kubetest.Cluster

// One complete cluster for the package: the controllers act on what the steps change (status
// updates race with the steps' writes, Deployments make ReplicaSets, DaemonSets and StatefulSets
// make pods), and TestQuiesceStopsPods sees pods really stop and start again.
func TestMain(m *testing.M) { kubetest.MainWith(m, 1, &clusters, controlplane.WithNode()) }

func main() map[string]*kubetest.Cluster { return map[string]*kubetest.Cluster{"main": clusters[0]} }

var (
	deployments  = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	statefulSets = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "statefulsets"}
	replicaSets  = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}
	daemonSets   = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}
	jobs         = schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "jobs"}
	cronJobs     = schema.GroupVersionResource{Group: "batch", Version: "v1", Resource: "cronjobs"}
)

func ptr[T any](v T) *T { return &v }

func ctx() context.Context { return context.Background() }

// podTemplate is a pod that the controllers create and delete as in any cluster but that no node
// runs (its nodeSelector matches none): the tests of what the steps write to objects need no
// running pods, and the node of a small test machine has fewer to start. TestQuiesceStopsPods
// runs real ones.
func podTemplate(app string) corev1.PodTemplateSpec {
	spec := kubetest.BusyboxSpec("sleep 3600")
	spec.NodeSelector = map[string]string{"planrun.dev/test-no-such-node": "true"}
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}}, Spec: spec}
}

func deployment(t *testing.T, ns, name string, replicas int32, labels map[string]string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: ptr(replicas), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: podTemplate(name)},
	}
	d, err := clusters[0].Typed.AppsV1().Deployments(ns).Create(context.Background(), d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func statefulSet(t *testing.T, ns, name string, replicas int32, labels map[string]string) {
	t.Helper()
	s := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr(replicas), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: podTemplate(name), ServiceName: name},
	}
	if _, err := clusters[0].Typed.AppsV1().StatefulSets(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// replicas reads spec.replicas and the previous-replicas annotation ("-" when absent).
func replicas(t *testing.T, gvr schema.GroupVersionResource, ns, name string) (int64, string) {
	t.Helper()
	obj := clusters[0].Get(t, gvr, ns, name)
	n, _, _ := unstructured.NestedInt64(obj.Object, "spec", "replicas")
	a, ok := obj.GetAnnotations()[kubescale.AnnotationReplicas]
	if !ok {
		a = "-"
	}
	return n, a
}

func wantReplicas(t *testing.T, gvr schema.GroupVersionResource, ns, name string, n int64, annotation string) {
	t.Helper()
	if got, a := replicas(t, gvr, ns, name); got != n || a != annotation {
		t.Errorf("%s %s/%s: replicas %d, annotation %s; want %d, %s", gvr.Resource, ns, name, got, a, n, annotation)
	}
}

func previous(t *testing.T, run *kubetest.Run, step string) string {
	t.Helper()
	var parts []string
	list, _ := run.Outputs(t, step)["previous"].([]any)
	for _, p := range list {
		m := p.(map[string]any)
		parts = append(parts, fmt.Sprintf("%s/%s/%s=%v,%v", m["kind"], m["namespace"], m["name"], m["replicas"], m["changed"]))
	}
	return strings.Join(parts, " ")
}

func scalePlan(with string) string {
	return "steps:\n  - {id: s, type: kube.scale, with: " + with + "}\n"
}

func TestScale(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	deployment(t, ns, "web", 3, nil)

	// Dry run: outputs say what would change; the cluster does not.
	run := kubetest.Apply(t, main(), scalePlan(`{apiVersion: apps/v1, kind: Deployment, namespace: `+ns+`, name: web, replicas: 0}`), kubetest.Options{DryRun: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if got, want := previous(t, run, "s"), "Deployment/"+ns+"/web=3,true"; got != want {
		t.Errorf("dry run previous %s, want %s", got, want)
	}
	if out := run.Outputs(t, "s"); out["dryRun"] != true || out["changed"] != 1 {
		t.Errorf("dry run outputs %v", out)
	}
	wantReplicas(t, deployments, ns, "web", 3, "-")

	// Happy path, then the same again: the second run changes nothing and still reports 3.
	for i, want := range []string{"3,true", "3,false"} {
		run = kubetest.Apply(t, main(), scalePlan(`{apiVersion: apps/v1, kind: Deployment, namespace: `+ns+`, name: web, replicas: 0}`), kubetest.Options{})
		if run.Err != nil {
			t.Fatal(run.Err)
		}
		if got := previous(t, run, "s"); got != "Deployment/"+ns+"/web="+want {
			t.Errorf("run %d: previous %s, want %s", i+1, got, want)
		}
		wantReplicas(t, deployments, ns, "web", 0, "3")
	}
	if out := run.Outputs(t, "s"); out["replicas"] != 0 || out["changed"] != 0 || out["dryRun"] != nil {
		t.Errorf("second run outputs %v", out)
	}

	// Scaling up again keeps the original in the annotation: it is written only when absent.
	run = kubetest.Apply(t, main(), scalePlan(`{apiVersion: apps/v1, kind: Deployment, namespace: `+ns+`, name: web, replicas: 5}`), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	wantReplicas(t, deployments, ns, "web", 5, "3")
}

// A crash between writing the annotation and scaling: the rerun scales and keeps the original.
func TestScaleResumesAfterCrash(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	deployment(t, ns, "web", 2, nil)
	// Written by the attempt that died. A patch, not an update: the Deployment controller writes
	// the object's status meanwhile, and an update of the created copy would conflict.
	patch := []byte(`{"metadata":{"annotations":{"` + kubescale.AnnotationReplicas + `":"4"}}}`)
	if _, err := clusters[0].Typed.AppsV1().Deployments(ns).Patch(context.Background(), "web", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	run := kubetest.Apply(t, main(), scalePlan(`{apiVersion: apps/v1, kind: Deployment, namespace: `+ns+`, name: web, replicas: 0}`), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if got, want := previous(t, run, "s"), "Deployment/"+ns+"/web=4,true"; got != want {
		t.Errorf("previous %s, want %s", got, want)
	}
	wantReplicas(t, deployments, ns, "web", 0, "4")
}

func TestScaleSelectorAndRollback(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	statefulSet(t, ns, "db-a", 2, map[string]string{"tier": "db"})
	statefulSet(t, ns, "db-b", 3, map[string]string{"tier": "db"})
	statefulSet(t, ns, "cache", 1, map[string]string{"tier": "cache"})

	run := kubetest.Apply(t, main(), `
steps:
  - {id: s, type: kube.scale, with: {apiVersion: apps/v1, kind: StatefulSet, namespace: `+ns+`, labelSelector: tier=db, replicas: 0}}
  - {id: later, type: assert, with: {that: "false", message: later step fails}}
`, kubetest.Options{})
	if run.Err == nil || !strings.Contains(run.Err.Error(), "later step fails") {
		t.Fatalf("run error %v, want the assert's", run.Err)
	}
	if got, want := previous(t, run, "s"), "StatefulSet/"+ns+"/db-a=2,true StatefulSet/"+ns+"/db-b=3,true"; got != want {
		t.Errorf("previous %s, want %s", got, want)
	}
	if st := run.Journal.Status; st != engine.RunRolledBack {
		t.Errorf("run status %s, want RolledBack", st)
	}
	if rec := run.Journal.Step("s"); rec.Status != engine.StepRolledBack {
		t.Errorf("step status %s, want RolledBack", rec.Status)
	}
	wantReplicas(t, statefulSets, ns, "db-a", 2, "-")
	wantReplicas(t, statefulSets, ns, "db-b", 3, "-")
	wantReplicas(t, statefulSets, ns, "cache", 1, "-")

	// Without the failing step, the scale stays.
	run = kubetest.Apply(t, main(), scalePlan(`{apiVersion: apps/v1, kind: StatefulSet, namespace: `+ns+`, labelSelector: tier=db, replicas: 1}`), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	wantReplicas(t, statefulSets, ns, "db-a", 1, "2")
	wantReplicas(t, statefulSets, ns, "db-b", 1, "3")
	wantReplicas(t, statefulSets, ns, "cache", 1, "-")
}

// TestScaleWaitsForPods: with wait, the step returns only once the pods of what it scaled to 0
// are gone, terminating ones too; a pod that never goes fails the step at its timeout, naming it.
// The pods are held by a finalizer, terminating until the test lets them go: how long a real
// pod takes to stop depends on its grace period and the node, which a test cannot pin down.
func TestScaleWaitsForPods(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	ctx := context.Background()
	deployment(t, ns, "web", 1, nil)
	pods := clusters[0].Typed.CoreV1().Pods(ns)
	terminating := func(name string) {
		t.Helper()
		tmpl := podTemplate("web")
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: tmpl.Labels, Finalizers: []string{"planrun.dev/test-hold"}}, Spec: tmpl.Spec}
		if _, err := pods.Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	release := func(name string) error {
		_, err := pods.Patch(ctx, name, types.JSONPatchType, []byte(`[{"op": "remove", "path": "/metadata/finalizers"}]`), metav1.PatchOptions{})
		return err
	}

	terminating("web-1")
	released := make(chan error, 1)
	go func() {
		// Long enough for a step that does not wait to have returned already.
		time.Sleep(time.Second)
		released <- release("web-1")
	}()
	run := kubetest.Apply(t, main(), scalePlan(`{apiVersion: apps/v1, kind: Deployment, namespace: `+ns+`, name: web, replicas: 0, wait: true}`), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if _, err := pods.Get(ctx, "web-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the step returned with the pod still there (%v)", err)
	}
	if err := <-released; err != nil {
		t.Fatal(err)
	}

	terminating("web-2")
	defer release("web-2")
	run = kubetest.Apply(t, main(), scalePlan(`{apiVersion: apps/v1, kind: Deployment, namespace: `+ns+`, name: web, replicas: 0, wait: true, timeout: 1s}`), kubetest.Options{})
	kubetest.WantRunError(t, run, `step "s" failed: Deployment `+ns+`/web: scaled to 0, but its pods are not after 1s: 1 pod(s): web-2 terminating`)
}

const widgetCRD = `{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "widgets.scale.planrun.dev"},
  "spec": {"group": "scale.planrun.dev", "scope": "Namespaced",
    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
    "versions": [{"name": "v1", "served": true, "storage": true,
      "subresources": {"scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}, "status": {}},
      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
        "status": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}}`

func TestScaleCustomResource(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	crd := &unstructured.Unstructured{}
	if err := crd.UnmarshalJSON([]byte(widgetCRD)); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Dynamic.Resource(crds).Create(ctx, crd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	widgets := schema.GroupVersionResource{Group: "scale.planrun.dev", Version: "v1", Resource: "widgets"}
	w := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "scale.planrun.dev/v1", "kind": "Widget",
		"metadata": map[string]any{"name": "w"}, "spec": map[string]any{"size": int64(7)}}}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.Dynamic.Resource(widgets).Namespace(ns).Create(ctx, w, metav1.CreateOptions{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	plan := `
steps:
  - {id: s, type: kube.scale, with: {apiVersion: scale.planrun.dev/v1, kind: Widget, namespace: ` + ns + `, name: w, replicas: 2}}
  - {id: check, type: assert, with: {that: 'steps.s.outputs.previous[0].replicas == 7'}}
`
	if run := kubetest.Apply(t, main(), plan, kubetest.Options{}); run.Err != nil {
		t.Fatal(run.Err)
	}
	obj := c.Get(t, widgets, ns, "w")
	if size, _, _ := unstructured.NestedInt64(obj.Object, "spec", "size"); size != 2 || obj.GetAnnotations()[kubescale.AnnotationReplicas] != "7" {
		t.Errorf("widget: size %d, annotations %v; want 2 and %s=7", size, obj.GetAnnotations(), kubescale.AnnotationReplicas)
	}
}

func TestScaleErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	deployment(t, ns, "web", 1, nil)
	kubetest.RunErrorCases(t, main(), []kubetest.ErrorCase{
		{Name: "unknown kind", Plan: scalePlan(`{apiVersion: example.com/v1, kind: Widget, namespace: x, name: y, replicas: 0}`),
			Want: `step "s" failed: unknown kind example.com/v1 Widget on cluster main (is its CRD installed?)`},
		{Name: "missing object", Plan: scalePlan(`{apiVersion: apps/v1, kind: Deployment, namespace: ` + ns + `, name: nope, replicas: 0}`),
			Want: `step "s" failed: Deployment ` + ns + `/nope not found`},
		{Name: "no scale subresource", Plan: scalePlan(`{apiVersion: v1, kind: ConfigMap, namespace: ` + ns + `, name: x, replicas: 0}`),
			Want: `step "s" failed: kind: v1 ConfigMap has no scale subresource`},
		{Name: "no namespace", Plan: scalePlan(`{apiVersion: apps/v1, kind: Deployment, name: web, replicas: 0}`),
			Want: `step "s" failed: namespace: required, Deployment is namespaced`},
		{Name: "forbidden", Clusters: map[string]*kubetest.Cluster{"main": clusters[0].Restricted(t, "nobody")}, Plan: scalePlan(`{apiVersion: apps/v1, kind: Deployment, namespace: ` + ns + `, name: web, replicas: 0}`),
			Want: `step "s" failed: Deployment ` + ns + `/web: deployments.apps "web" is forbidden: User "nobody" cannot get resource "deployments" in API group "apps" in the namespace "` + ns + `"`},
		{Name: "negative replicas from a template", Plan: "params:\n  n: {type: int, default: -1}\n" + scalePlan(`{apiVersion: apps/v1, kind: Deployment, namespace: `+ns+`, name: web, replicas: "${{ params.n }}"}`),
			// The engine validates the config once the template is filled in and reports it at
			// the step's position in the plan (engine/prepare.go), hence the step id twice.
			Want: `plan.yaml:7:5: with: replicas: must not be negative, got -1`},
	})
	wantReplicas(t, deployments, ns, "web", 1, "-")
}

// Invalid configs are refused when the plan loads, before anything touches a cluster.
func TestLoadErrors(t *testing.T) {
	cases := []struct{ with, want string }{
		{`{type: kube.scale, with: {apiVersion: apps/v1, kind: Deployment, namespace: n, replicas: 1}}`, `step "s": with: name or labelSelector: one is required`},
		{`{type: kube.scale, with: {apiVersion: apps/v1, kind: Deployment, namespace: n, name: a, labelSelector: b, replicas: 1}}`, `step "s": with: name and labelSelector: give only one`},
		{`{type: kube.scale, with: {apiVersion: apps/v1, kind: Deployment, namespace: n, name: a, replicas: -2}}`, `step "s": with: replicas: must not be negative, got -2`},
		{`{type: kube.scale, with: {apiVersion: apps/v1, kind: Deployment, namespace: n, name: a}}`, `missing required field "replicas"`},
		{`{type: kube.scale, with: {apiVersion: apps/v1, kind: Deployment, namespace: n, labelSelector: "a in (", replicas: 1}}`, `step "s": with: labelSelector:`},
		{`{type: kube.quiesce, with: {}}`, `step "s": with: namespace or namespaces: one is required`},
		{`{type: kube.quiesce, with: {namespaces: [a, ""]}}`, `step "s": with: namespaces[1]: must not be empty`},
	}
	for _, tc := range cases {
		path := filepath.Join(t.TempDir(), "plan.yaml")
		src := "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: test}\nsteps:\n  - {id: s, " + strings.TrimPrefix(tc.with, "{")
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := engine.Load(path, engine.LoadOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\nerror %v\nwant %q", tc.with, err, tc.want)
		}
	}
}
