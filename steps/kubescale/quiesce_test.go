package kubescale_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubescale"
)

// workloads creates one of every kind kube.quiesce knows in ns, plus a ReplicaSet owned by the
// Deployment (left alone: its Deployment decides) and objects outside the label selector.
func workloads(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	cs := clusters[0].Typed
	d := deployment(t, ns, "web", 3, map[string]string{"quiesce": "yes"})
	statefulSet(t, ns, "db", 2, map[string]string{"quiesce": "yes"})
	statefulSet(t, ns, "other", 2, nil) // does not match the selector
	rs := func(name string, replicas int32, owner *appsv1.Deployment) {
		r := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"quiesce": "yes"}},
			Spec: appsv1.ReplicaSetSpec{Replicas: ptr(replicas), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}, Template: podTemplate(name)}}
		if owner != nil {
			r.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(owner, appsv1.SchemeGroupVersion.WithKind("Deployment"))}
		}
		if _, err := cs.AppsV1().ReplicaSets(ns).Create(ctx, r, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rs("bare", 2, nil)
	rs("web-123", 3, d)
	tpl := podTemplate("job")
	tpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "copy", Labels: map[string]string{"quiesce": "yes"}},
		Spec: batchv1.JobSpec{Parallelism: ptr(int32(4)), Template: tpl}}
	if _, err := cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "nightly", Labels: map[string]string{"quiesce": "yes"}},
		Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: tpl}}}}
	if _, err := cs.BatchV1().CronJobs(ns).Create(ctx, cj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dsTpl := podTemplate("agent")
	dsTpl.Spec.NodeSelector = map[string]string{"disk": "ssd"}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent", Labels: map[string]string{"quiesce": "yes"}},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}}, Template: dsTpl}}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// state is every workload's field and its planrun annotations, one sorted line per object.
func state(t *testing.T, ns string) string {
	t.Helper()
	var lines []string
	add := func(kind, name string, obj *unstructured.Unstructured, value any) {
		var ann []string
		for k, v := range obj.GetAnnotations() {
			if strings.HasPrefix(k, "planrun.dev/") {
				ann = append(ann, strings.TrimPrefix(k, "planrun.dev/")+"="+v)
			}
		}
		sort.Strings(ann)
		b, _ := json.Marshal(value)
		lines = append(lines, fmt.Sprintf("%s/%s %s %v", kind, name, b, ann))
	}
	field := func(obj *unstructured.Unstructured, path ...string) any {
		v, _, _ := unstructured.NestedFieldNoCopy(obj.Object, path...)
		return v
	}
	for _, o := range []struct {
		kind, name string
		gvr        schema.GroupVersionResource
		path       []string
	}{
		{"Deployment", "web", deployments, []string{"spec", "replicas"}},
		{"StatefulSet", "db", statefulSets, []string{"spec", "replicas"}},
		{"StatefulSet", "other", statefulSets, []string{"spec", "replicas"}},
		{"ReplicaSet", "bare", replicaSets, []string{"spec", "replicas"}},
		{"ReplicaSet", "web-123", replicaSets, []string{"spec", "replicas"}},
		{"Job", "copy", jobs, []string{"spec", "parallelism"}},
		{"CronJob", "nightly", cronJobs, []string{"spec", "suspend"}},
		{"DaemonSet", "agent", daemonSets, []string{"spec", "template", "spec", "nodeSelector"}},
	} {
		obj := clusters[0].Get(t, o.gvr, ns, o.name)
		add(o.kind, o.name, obj, field(obj, o.path...))
	}
	return strings.Join(lines, "\n")
}

const running = `Deployment/web 3 []
StatefulSet/db 2 []
StatefulSet/other 2 []
ReplicaSet/bare 2 []
ReplicaSet/web-123 3 []
Job/copy 4 []
CronJob/nightly false []
DaemonSet/agent {"disk":"ssd"} []`

const quiesced = `Deployment/web 0 [previous-replicas=3]
StatefulSet/db 0 [previous-replicas=2]
StatefulSet/other 2 []
ReplicaSet/bare 0 [previous-replicas=2]
ReplicaSet/web-123 3 []
Job/copy 0 [previous-parallelism=4]
CronJob/nightly true [previous-suspend=false]
DaemonSet/agent {"disk":"ssd","planrun.dev/quiesced":"true"} [previous-node-selector={"existed":false}]`

func objects(t *testing.T, run *kubetest.Run) string {
	t.Helper()
	var parts []string
	list, _ := run.Outputs(t, "q")["objects"].([]any)
	for _, o := range list {
		m := o.(map[string]any)
		b, _ := json.Marshal(m["previous"])
		parts = append(parts, fmt.Sprintf("%s/%s %s=%s %v", m["kind"], m["name"], m["field"], b, m["changed"]))
	}
	return strings.Join(parts, "; ")
}

func TestQuiesce(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	workloads(t, ns)
	if got := state(t, ns); got != running {
		t.Fatalf("initial state:\n%s", got)
	}
	plan := "steps:\n  - {id: q, type: kube.quiesce, with: {namespace: " + ns + ", labelSelector: quiesce=yes}}\n"
	wantObjects := func(changed bool) string {
		return strings.NewReplacer("CH", fmt.Sprint(changed)).Replace(`Deployment/web replicas=3 CH; StatefulSet/db replicas=2 CH; ReplicaSet/bare replicas=2 CH; ` +
			`Job/copy parallelism=4 CH; CronJob/nightly suspend=false CH; DaemonSet/agent nodeSelector={"existed":false} CH`)
	}

	// Dry run: the outputs say what would change, the cluster does not.
	run := kubetest.Apply(t, main(), plan, kubetest.Options{DryRun: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if got := objects(t, run); got != wantObjects(true) {
		t.Errorf("dry run objects:\n%s\nwant\n%s", got, wantObjects(true))
	}
	if out := run.Outputs(t, "q"); out["dryRun"] != true || out["changed"] != 6 || out["count"] != 6 {
		t.Errorf("dry run outputs %v", out)
	}
	if got := state(t, ns); got != running {
		t.Fatalf("dry run changed the cluster:\n%s", got)
	}

	// Quiesce, then again: the second run changes nothing and still reports the originals.
	for i, changed := range []bool{true, false} {
		run = kubetest.Apply(t, main(), plan, kubetest.Options{})
		if run.Err != nil {
			t.Fatal(run.Err)
		}
		if got := objects(t, run); got != wantObjects(changed) {
			t.Errorf("run %d objects:\n%s\nwant\n%s", i+1, got, wantObjects(changed))
		}
		if got := state(t, ns); got != quiesced {
			t.Fatalf("run %d state:\n%s\nwant\n%s", i+1, got, quiesced)
		}
	}

	// Rollback of a run that quiesced (here: finding everything already quiesced, from the
	// annotations) puts everything back and removes the annotations.
	run = kubetest.Apply(t, main(), plan+"  - {id: later, type: assert, with: {that: \"false\", message: later step fails}}\n", kubetest.Options{})
	if run.Err == nil || !strings.Contains(run.Err.Error(), "later step fails") || run.Journal.Status != engine.RunRolledBack {
		t.Fatalf("run error %v, status %s", run.Err, run.Journal.Status)
	}
	if got := state(t, ns); got != running {
		t.Fatalf("after rollback:\n%s\nwant\n%s", got, running)
	}
}

func TestQuiesceRollbackInOneRun(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	workloads(t, ns)
	run := kubetest.Apply(t, main(), `
steps:
  - {id: q, type: kube.quiesce, with: {namespaces: [`+ns+`]}}
  - {id: check, type: assert, with: {that: 'steps.q.outputs.count == 7 && steps.q.outputs.changed == 7'}}
  - {id: later, type: assert, with: {that: "false", message: later step fails}}
`, kubetest.Options{})
	if run.Err == nil || !strings.Contains(run.Err.Error(), "later step fails") {
		t.Fatalf("run error %v", run.Err)
	}
	if st := run.Journal.Step("q").Status; st != engine.StepRolledBack {
		t.Errorf("step status %s", st)
	}
	if got := state(t, ns); got != running {
		t.Fatalf("after rollback:\n%s\nwant\n%s", got, running)
	}
	if a := kubescale.QuiescedNodeSelector; !strings.HasPrefix(a, "planrun.dev/") {
		t.Errorf("node selector key %s", a)
	}
}

func TestQuiesceErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	deployment(t, ns, "web", 1, nil)
	kubetest.RunErrorCases(t, main(), []kubetest.ErrorCase{
		{Name: "missing namespace", Plan: "steps:\n  - {id: s, type: kube.quiesce, with: {namespace: no-such-ns}}\n",
			Want: `step "s" failed: namespace no-such-ns not found`},
		{Name: "forbidden", Clusters: map[string]*kubetest.Cluster{"main": clusters[0].Restricted(t, "nobody")}, Plan: "steps:\n  - {id: s, type: kube.quiesce, with: {namespace: " + ns + "}}\n",
			Want: `step "s" failed: Namespace ` + ns + `: namespaces "` + ns + `" is forbidden: User "nobody" cannot get resource "namespaces" in API group "" in the namespace "` + ns + `"`},
		{Name: "bad selector from a template", Plan: "params:\n  sel: {default: \"a in (\"}\nsteps:\n  - {id: s, type: kube.quiesce, with: {namespace: " + ns + ", labelSelector: \"${{ params.sel }}\"}}\n",
			Want: `plan.yaml:7:5: with: labelSelector: `},
	})
	wantReplicas(t, deployments, ns, "web", 1, "-")
}

// TestQuiesceWaitsForPods: with wait, the step returns only once the pods its workloads control
// are gone: a pod of a Deployment's ReplicaSet held terminating by a finalizer (this API server
// runs no controllers; the test lets the pod go, as its kubelet would after the grace period).
// Pods of workloads it did not quiesce, pods without a controller and finished pods do not
// count. A pod that never goes fails the step at its timeout, naming it.
func TestQuiesceWaitsForPods(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	ctx := context.Background()
	cs := clusters[0].Typed
	d := deployment(t, ns, "web", 1, map[string]string{"quiesce": "yes"})
	rs, err := cs.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-1",
		OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(d, appsv1.SchemeGroupVersion.WithKind("Deployment"))}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, Template: podTemplate("web")}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other := deployment(t, ns, "other", 1, nil) // outside the label selector: not quiesced
	pods := cs.CoreV1().Pods(ns)
	pod := func(name string, owner metav1.Object, kind string, hold bool) {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: podTemplate(name).Spec}
		if owner != nil {
			p.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(owner, appsv1.SchemeGroupVersion.WithKind(kind))}
		}
		if hold {
			p.Finalizers = []string{"planrun.dev/test-hold"}
		}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	release := func(name string) error {
		_, err := pods.Patch(ctx, name, types.JSONPatchType, []byte(`[{"op": "remove", "path": "/metadata/finalizers"}]`), metav1.PatchOptions{})
		return err
	}
	pod("web-1-a", rs, "ReplicaSet", true)
	if err := pods.Delete(ctx, "web-1-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pod("other-a", other, "Deployment", false)
	pod("bare", nil, "", false)
	pod("web-1-done", rs, "ReplicaSet", false)
	done, err := pods.Get(ctx, "web-1-done", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done.Status.Phase = corev1.PodSucceeded
	if _, err := pods.UpdateStatus(ctx, done, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	released := make(chan error, 1)
	go func() {
		// Long enough for a step that does not wait to have returned already.
		time.Sleep(time.Second)
		released <- release("web-1-a")
	}()
	plan := "steps:\n  - {id: s, type: kube.quiesce, with: {namespace: " + ns + ", labelSelector: quiesce=yes, wait: true}}\n"
	run := kubetest.Apply(t, main(), plan, kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if _, err := pods.Get(ctx, "web-1-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the step returned with the Deployment's pod still there (%v)", err)
	}
	if err := <-released; err != nil {
		t.Fatal(err)
	}

	pod("web-1-b", rs, "ReplicaSet", true)
	defer release("web-1-b")
	plan = "steps:\n  - {id: s, type: kube.quiesce, with: {namespace: " + ns + ", labelSelector: quiesce=yes, wait: true, timeout: 1s}}\n"
	run = kubetest.Apply(t, main(), plan, kubetest.Options{})
	kubetest.WantRunError(t, run, `step "s" failed: namespace `+ns+`: quiesced, but 1 pod(s) of its workloads still run after 1s: web-1-b`)
}
