package kubejob_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"planrun.dev/planrun/engine"
	_ "planrun.dev/planrun/steps"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubejob"
)

var clusters []*kubetest.Cluster

func TestMain(m *testing.M) { kubetest.Main(m, 1, &clusters) }

func main() map[string]*kubetest.Cluster { return map[string]*kubetest.Cluster{"main": clusters[0]} }

func ctx() context.Context { return context.Background() }

// simulate plays the Job controller and kubelet, which the test control plane does not have:
// once the Job exists (one whose UID is not previous) it creates the pods, owned by the Job and
// labelled job-name=<job>, and sets the Job's status to Complete (ok) or Failed through the
// /status subresource. The returned channel gives its error.
func simulate(t *testing.T, ns, name string, ok bool, previous types.UID, pods ...*corev1.Pod) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- simulateJob(ns, name, ok, previous, pods) }()
	return done
}

// unscheduled is a pod that never got a node; onNode one the scheduler put on a node.
func unscheduled(name string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func onNode(name, node string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeName: node}}
}

func simulateJob(ns, name string, ok bool, previous types.UID, pods []*corev1.Pod) error {
	jobs := clusters[0].Typed.BatchV1().Jobs(ns)
	var job *batchv1.Job
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if job, err = jobs.Get(ctx(), name, metav1.GetOptions{}); err == nil && job.UID != previous {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("job %s/%s never appeared: %v", ns, name, err)
		}
	}
	if len(pods) == 0 {
		pods = []*corev1.Pod{unscheduled(name + "-abcde")}
	}
	for _, p := range pods {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: ns,
				Labels:          map[string]string{"job-name": name, "batch.kubernetes.io/job-name": name},
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(job, batchv1.SchemeGroupVersion.WithKind("Job"))}},
			Spec: job.Spec.Template.Spec,
		}
		pod.Spec.NodeName = p.Spec.NodeName
		if _, err := clusters[0].Typed.CoreV1().Pods(ns).Create(ctx(), pod, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("fake pod: %w", err)
		}
	}
	now := metav1.Now()
	job.Status.StartTime = &now
	if ok {
		job.Status.Succeeded = 1
		job.Status.CompletionTime = &now
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now, Reason: "CompletionsReached"},
			{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now, Reason: "CompletionsReached"},
		}
	} else {
		job.Status.Failed = 1
		job.Status.Conditions = []batchv1.JobCondition{
			{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit"},
			{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit"},
		}
	}
	if _, err := jobs.UpdateStatus(ctx(), job, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("job status: %w", err)
	}
	return nil
}

func wait(t *testing.T, sim <-chan error) {
	t.Helper()
	if err := <-sim; err != nil {
		t.Fatal(err)
	}
}

func TestJobCompletes(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	name := kubejob.DefaultName("r1", "hook")
	if name != "planrun-r1-hook" {
		t.Fatalf("default name %s", name)
	}
	// Two pods: one never scheduled, one on a node whose kubelet cannot be reached (the test
	// control plane has no nodes). Neither log can be read; both reasons are kept.
	sim := simulate(t, ns, name, true, "", unscheduled(name+"-abcde"), onNode(name+"-fghij", "node-1"))
	run := kubetest.Apply(t, main(), fmt.Sprintf(`
steps:
  - id: hook
    type: kube.job
    with:
      namespace: %s
      image: busybox:1.36
      command: [sh, -c]
      args: ["echo backing up $TARGET"]
      env: {TARGET: catalog, MODE: final}
      serviceAccount: migrator
      activeDeadlineSeconds: 600
      backoffLimit: 2
      labels: {migration-job: "true"}
      timeout: 1m
  - {id: check, type: assert, with: {that: 'steps.hook.outputs.succeeded == 1 && steps.hook.outputs.failed == 0'}}
`, ns), kubetest.Options{RunID: "r1"})
	wait(t, sim)
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	dir, err := run.Store.ArtifactDir("r1", "hook")
	if err != nil {
		t.Fatal(err)
	}
	out := run.Outputs(t, "hook")
	if out["name"] != name || out["namespace"] != ns || out["resumed"] != false || fmt.Sprint(out["logs"]) != "[]" || out["logDir"] != dir {
		t.Fatalf("outputs %v", out)
	}
	job, err := clusters[0].Typed.BatchV1().Jobs(ns).Get(ctx(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := job.Spec.Template.Spec
	c := spec.Containers[0]
	if c.Image != "busybox:1.36" || !slices.Equal(c.Command, []string{"sh", "-c"}) || !slices.Equal(c.Args, []string{"echo backing up $TARGET"}) ||
		fmt.Sprint(c.Env) != "[{MODE final nil} {TARGET catalog nil}]" || spec.ServiceAccountName != "migrator" ||
		spec.RestartPolicy != corev1.RestartPolicyNever || *job.Spec.ActiveDeadlineSeconds != 600 || *job.Spec.BackoffLimit != 2 ||
		job.Labels["migration-job"] != "true" || job.Spec.Template.Labels["migration-job"] != "true" ||
		job.Annotations["planrun.dev/run"] != "r1" || job.Annotations["planrun.dev/step"] != "hook" {
		t.Fatalf("job %+v", job)
	}
	// Without a kubelet no log can be read: the reasons are noted, one line per container.
	note, err := os.ReadFile(filepath.Join(dir, "logs-unavailable.txt"))
	lines := strings.Split(strings.TrimSuffix(string(note), "\n"), "\n")
	if err != nil || len(lines) != 2 ||
		lines[0] != "pod "+name+"-abcde container job: the pod was never scheduled to a node, so it has no log (phase Pending)" ||
		!strings.HasPrefix(lines[1], "pod "+name+"-fghij container job: ") || !strings.Contains(lines[1], "node-1") {
		t.Fatalf("log note %q, %v", note, err)
	}
}

func TestJobFails(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	sim := simulate(t, ns, "planrun-run-s", false, "")
	plan := "steps:\n  - {id: s, type: kube.job, with: {namespace: " + ns + ", image: busybox}}\n"
	run := kubetest.Apply(t, main(), plan, kubetest.Options{NoRollback: true})
	wait(t, sim)
	dir, _ := run.Store.ArtifactDir("run", "s")
	want := `step "s" failed: Job ` + ns + `/planrun-run-s failed: BackoffLimitExceeded: Job has reached the specified backoff limit (succeeded 0, failed 1; logs in ` + dir + `)`
	if run.Err == nil || !strings.Contains(run.Err.Error(), want) || strings.Contains(run.Err.Error(), "\n") {
		t.Fatalf("error %v\nwant %q", run.Err, want)
	}
	// The failed Job is left for inspection, and the folder says why there is no log.
	failed, err := clusters[0].Typed.BatchV1().Jobs(ns).Get(ctx(), "planrun-run-s", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	note, err := os.ReadFile(filepath.Join(dir, "logs-unavailable.txt"))
	if err != nil || !strings.HasPrefix(string(note), "pod planrun-run-s-abcde container job: the pod was never scheduled") {
		t.Fatalf("log note %q, %v", note, err)
	}

	// Resuming the run (the cause fixed) starts the Job again instead of reporting the old failure.
	sim = simulate(t, ns, "planrun-run-s", true, failed.UID, unscheduled("planrun-run-s-xyz12"))
	r := &engine.Runner{Store: run.Store, NoRollback: true}
	j, err := r.Resume(ctx(), "run", func(*engine.Journal) (*engine.Plan, error) { return run.Plan, nil })
	wait(t, sim)
	if err != nil {
		t.Fatal(err)
	}
	run = &kubetest.Run{Journal: j, Store: run.Store}
	if out := run.Outputs(t, "s"); out["resumed"] != false || fmt.Sprint(out["succeeded"], out["failed"]) != "1 0" {
		t.Fatalf("outputs %v", out)
	}
	again, err := clusters[0].Typed.BatchV1().Jobs(ns).Get(ctx(), "planrun-run-s", metav1.GetOptions{})
	if err != nil || again.UID == failed.UID {
		t.Fatalf("job after resume: %v, %v", again, err)
	}
	// Only the new Job's pods are considered: the old pod (same job-name label) is not.
	note, err = os.ReadFile(filepath.Join(dir, "logs-unavailable.txt"))
	if err != nil || !strings.HasPrefix(string(note), "pod planrun-run-s-xyz12 container job: ") || strings.Count(string(note), "\n") != 1 {
		t.Fatalf("log note %q, %v", note, err)
	}
}

// After a crash (here: a wait that timed out), the step runs again in the same run and finds its
// Job instead of starting a second one.
func TestJobResumeAndRollback(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	name := kubejob.DefaultName("resume", "job")
	plan := "steps:\n  - {id: job, type: kube.job, with: {namespace: " + ns + ", image: busybox, timeout: 1s}}\n"
	run := kubetest.Apply(t, main(), plan, kubetest.Options{RunID: "resume", NoRollback: true})
	want := `step "job" failed: Job ` + ns + `/` + name + ` did not finish within 1s (active 0, succeeded 0, failed 0)`
	if run.Err == nil || !strings.Contains(run.Err.Error(), want) {
		t.Fatalf("error %v\nwant %q", run.Err, want)
	}
	first, err := clusters[0].Typed.BatchV1().Jobs(ns).Get(ctx(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	sim := simulate(t, ns, name, true, "")
	run = kubetest.Apply(t, main(), plan+"  - {id: boom, type: assert, with: {that: 'false'}}\n", kubetest.Options{RunID: "resume"})
	wait(t, sim)
	var re *engine.RunError
	if !errors.As(run.Err, &re) || re.Status != engine.RunRolledBack {
		t.Fatalf("want rolled back, got %v", run.Err)
	}
	out := run.Outputs(t, "job")
	if out["resumed"] != true || out["succeeded"] != float64(1) && out["succeeded"] != 1 {
		t.Fatalf("outputs %v", out)
	}
	if st := run.Journal.Step("job").Status; st != engine.StepRolledBack {
		t.Fatalf("status %s", st)
	}
	// Undo deleted the Job that was found again, the one and only.
	j, err := clusters[0].Typed.BatchV1().Jobs(ns).Get(ctx(), name, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) && (err != nil || j.DeletionTimestamp == nil || j.UID != first.UID) {
		t.Fatalf("job after rollback: %v %v", j, err)
	}
	list, err := clusters[0].Typed.BatchV1().Jobs(ns).List(ctx(), metav1.ListOptions{})
	if err != nil || len(list.Items) > 1 {
		t.Fatalf("jobs %v %v", list, err)
	}
}

func TestJobDryRun(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	run := kubetest.Apply(t, main(), "steps:\n  - {id: job, type: kube.job, with: {namespace: "+ns+", image: busybox}}\n", kubetest.Options{DryRun: true, RunID: "dry"})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if out := run.Outputs(t, "job"); out["dryRun"] != true || out["name"] != "planrun-dry-job" {
		t.Fatalf("outputs %v", out)
	}
	list, err := clusters[0].Typed.BatchV1().Jobs(ns).List(ctx(), metav1.ListOptions{})
	if err != nil || len(list.Items) != 0 {
		t.Fatalf("dry run created jobs: %v %v", list.Items, err)
	}
}

func TestJobErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	other := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: ns, Annotations: map[string]string{"planrun.dev/run": "older", "planrun.dev/step": "s"}},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}},
	}
	if _, err := clusters[0].Typed.BatchV1().Jobs(ns).Create(ctx(), other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	restricted := map[string]*kubetest.Cluster{"main": clusters[0].Restricted(t, "nobody")}
	cases := []struct {
		name     string
		clusters map[string]*kubetest.Cluster
		with     string
		want     string
	}{
		{"missing namespace", main(), `{namespace: no-such-ns, image: busybox}`,
			`step "s" failed: Job no-such-ns/planrun-run-s: namespaces "no-such-ns" not found`},
		{"someone else's job", main(), `{namespace: ` + ns + `, name: taken, image: busybox}`,
			`step "s" failed: Job ` + ns + `/taken already exists and was not started by this step (run "older", step "s"); delete it or choose another name`},
		{"forbidden", restricted, `{namespace: ` + ns + `, image: busybox}`,
			`step "s" failed: Job ` + ns + `/planrun-run-s: jobs.batch is forbidden: User "nobody" cannot create resource "jobs" in API group "batch" in the namespace "` + ns + `"`},
		{"invalid manifest", main(), `{namespace: ` + ns + `, image: busybox, serviceAccount: Bad_SA}`,
			`step "s" failed: Job ` + ns + `/planrun-run-s: Job.batch "planrun-run-s" is invalid: spec.template.spec.serviceAccountName: Invalid value: "Bad_SA"`},
		{"negative deadline", main(), `{namespace: ` + ns + `, image: busybox, activeDeadlineSeconds: "${{ -1 }}"}`,
			`: with: activeDeadlineSeconds: must not be negative`},
		{"unknown cluster", main(), `{cluster: "${{ 'other' }}", namespace: x, image: busybox}`,
			`step "s" failed: cluster: the plan has no cluster "other" (clusters: main)`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run := kubetest.Apply(t, tc.clusters, "steps:\n  - {id: s, type: kube.job, with: "+tc.with+"}\n", kubetest.Options{})
			kubetest.WantRunError(t, run, `step "s" failed: `, tc.want)
		})
	}
	if _, err := clusters[0].Typed.BatchV1().Jobs(ns).Get(ctx(), "planrun-run-s", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a failed step left a Job: %v", err)
	}
}

// A Job as a hook: it runs before the steps of its phase, which see its outputs.
func TestJobAsHook(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	sim := simulate(t, ns, "planrun-run-quiesce-app", true, "")
	run := kubetest.Apply(t, main(), `
hooks:
  PreBackup:
    - {id: quiesce-app, type: kube.job, with: {namespace: `+ns+`, image: busybox, command: [/bin/quiesce], timeout: 1m}}
steps:
  - {id: backup, type: assert, phase: Backup, with: {that: 'steps["quiesce-app"].outputs.succeeded == 1'}}
`, kubetest.Options{})
	wait(t, sim)
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if st := run.Journal.Step("quiesce-app").Status; st != engine.StepSucceeded {
		t.Fatalf("hook status %s", st)
	}
}
