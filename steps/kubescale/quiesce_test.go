package kubescale_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubescale"
)

// workloads creates one of every kind kube.quiesce knows in ns, and objects outside the label
// selector. The ReplicaSet the Deployment controller makes for "web" stands for a ReplicaSet
// with a controller: the step leaves it alone (its Deployment decides), so the outputs never
// list it.
func workloads(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	cs := clusters[0].Typed
	deployment(t, ns, "web", 3, map[string]string{"quiesce": "yes"})
	statefulSet(t, ns, "db", 2, map[string]string{"quiesce": "yes"})
	statefulSet(t, ns, "other", 2, nil) // does not match the selector
	rs := func(name string, replicas int32) {
		r := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"quiesce": "yes"}},
			Spec: appsv1.ReplicaSetSpec{Replicas: ptr(replicas), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}, Template: podTemplate(name)}}
		if _, err := cs.AppsV1().ReplicaSets(ns).Create(ctx, r, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	rs("bare", 2)
	// With the Deployment's own ReplicaSet in place, a quiesce run right after sees it.
	kubetest.Poll(t, "the ReplicaSet of Deployment web", func() (bool, error) {
		list, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		return err == nil && len(list.Items) == 1, err
	})
	tpl := podTemplate("job")
	tpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "copy", Labels: map[string]string{"quiesce": "yes"}},
		Spec: batchv1.JobSpec{Parallelism: ptr(int32(4)), Template: tpl}}
	if _, err := cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "nightly", Labels: map[string]string{"quiesce": "yes"}},
		Spec: batchv1.CronJobSpec{Schedule: "0 0 1 1 *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: tpl}}}}
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
Job/copy 4 []
CronJob/nightly false []
DaemonSet/agent {"disk":"ssd"} []`

const quiesced = `Deployment/web 0 [previous-replicas=3]
StatefulSet/db 0 [previous-replicas=2]
StatefulSet/other 2 []
ReplicaSet/bare 0 [previous-replicas=2]
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

// TestQuiesceStopsPods quiesces a namespace whose Deployment, StatefulSet and DaemonSet run
// pods on the node: when the step ends, none of their pods is left (not merely replicas 0: the
// pods have stopped and are gone), while a pod that no workload owns keeps running. Rolling the
// run back brings the original number of pods back, Running.
func TestQuiesceStopsPods(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	cs := c.Typed
	template := func(app string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}}, Spec: kubetest.BusyboxSpec("sleep 3600")}
	}
	selector := func(app string) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx(), &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(2)), Selector: selector("web"), Template: template("web")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().StatefulSets(ns).Create(ctx(), &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr(int32(2)), Selector: selector("db"), Template: template("db"), ServiceName: "db"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx(), &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{Selector: selector("agent"), Template: template("agent")}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	standalone := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "standalone", Labels: map[string]string{"app": "standalone"}}, Spec: kubetest.BusyboxSpec("sleep 3600")}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx(), standalone, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"web": 2, "db": 2, "agent": 1, "standalone": 1}
	for app, n := range want {
		c.WaitRunning(t, ns, "app="+app, n)
	}

	run := kubetest.Apply(t, main(), "steps:\n  - {id: q, type: kube.quiesce, with: {namespace: "+ns+"}}\n", kubetest.Options{NoRollback: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	// Looked at once, right when the step has ended: it ends only when the pods are gone.
	if pods := c.Pods(t, ns, "app in (web, db, agent)"); len(pods) != 0 {
		t.Fatalf("pods of the quiesced workloads left when the step ended: %s", kubetest.PodSummary(pods))
	}
	if pods := c.Pods(t, ns, "app=standalone"); len(pods) != 1 || pods[0].Status.Phase != corev1.PodRunning || pods[0].DeletionTimestamp != nil {
		t.Fatalf("the pod no workload owns: %s", kubetest.PodSummary(pods))
	}
	if p := run.Progress["q"]; p.Unit != "pods stopped" || p.Total == 0 || p.Done != p.Total {
		t.Errorf("last progress %+v, want every pod waited for stopped", p)
	}
	if out := run.Outputs(t, "q"); out["count"] != float64(3) && out["count"] != 3 {
		t.Errorf("outputs %v", out)
	}

	// Rolled back on demand: the workloads get their pods back.
	rollBack(t, run)
	for app, n := range want {
		c.WaitRunning(t, ns, "app="+app, n)
	}
	wantReplicas(t, deployments, ns, "web", 2, "-")
	wantReplicas(t, statefulSets, ns, "db", 2, "-")
	ds := c.Get(t, daemonSets, ns, "agent")
	sel, _, _ := unstructured.NestedStringMap(ds.Object, "spec", "template", "spec", "nodeSelector")
	if _, has := ds.GetAnnotations()[kubescale.AnnotationNodeSelector]; len(sel) != 0 || has {
		t.Errorf("DaemonSet after rollback: nodeSelector %v, annotations %v", sel, ds.GetAnnotations())
	}
}

// TestQuiesceWaitTimesOut: a pod that takes longer to stop than the step's timeout (it ignores
// SIGTERM and has a minute's grace period) fails the step, which names it.
func TestQuiesceWaitTimesOut(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	spec := kubetest.BusyboxSpec("trap '' TERM; sleep 3600")
	grace := int64(60)
	spec.TerminationGracePeriodSeconds = &grace
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "slow"}, Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(1)),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "slow"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "slow"}}, Spec: spec}}}
	if _, err := c.Typed.AppsV1().Deployments(ns).Create(ctx(), dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := c.WaitRunning(t, ns, "app=slow", 1)[0].Name
	// The pod would otherwise keep the node busy for its minute after the test.
	t.Cleanup(func() {
		zero := int64(0)
		_ = c.Typed.CoreV1().Pods(ns).Delete(ctx(), pod, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})

	run := kubetest.Apply(t, main(), "steps:\n  - {id: s, type: kube.quiesce, with: {namespace: "+ns+", timeout: 2s}}\n", kubetest.Options{NoRollback: true})
	kubetest.WantRunError(t, run, `step "s" failed: 1 pod(s) of the quiesced workloads still there after 2s: Pod `+ns+`/`+pod+` of Deployment `+ns+`/slow (Running`)
	// The Deployment stays quiesced, its original replicas recorded: resuming the run (with a
	// longer timeout, say) finds it so and waits again.
	wantReplicas(t, deployments, ns, "slow", 0, "1")
}
