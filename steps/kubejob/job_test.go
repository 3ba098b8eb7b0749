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

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	_ "planrun.dev/planrun/steps"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubejob"
)

var clusters []*kubetest.Cluster

// One complete cluster for the package: the Job controller runs the Jobs the step creates, the
// node runs their pods, and their logs are read through the API as in a real cluster.
func TestMain(m *testing.M) { kubetest.MainWith(m, 1, &clusters, controlplane.WithNode()) }

func main() map[string]*kubetest.Cluster { return map[string]*kubetest.Cluster{"main": clusters[0]} }

func ctx() context.Context { return context.Background() }

// image is the busybox image the node has; the step's pods use it without a pull (its tag is
// not "latest", so the pull policy is IfNotPresent).
const image = controlplane.BusyboxImage

// jobStep is a plan with one kube.job step s running script in ns.
func jobStep(ns, script string, extra string) string {
	return fmt.Sprintf("steps:\n  - {id: s, type: kube.job, with: {namespace: %s, image: %s, command: [sh, -c, %q]%s}}\n", ns, image, script, extra)
}

// podsOf lists the pods the Job controller created for the Job named name.
func podsOf(t *testing.T, ns, name string) []corev1.Pod {
	t.Helper()
	return clusters[0].Pods(t, ns, "job-name="+name)
}

func waitPhase(t *testing.T, ns, name string, phase corev1.PodPhase) {
	t.Helper()
	kubetest.Poll(t, fmt.Sprintf("pod %s/%s %s", ns, name, phase), func() (bool, error) {
		p, err := clusters[0].Typed.CoreV1().Pods(ns).Get(ctx(), name, metav1.GetOptions{})
		return err == nil && p.Status.Phase == phase, err
	})
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestJobCompletes(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	name := kubejob.DefaultName("r1", "hook")
	if name != "planrun-r1-hook" {
		t.Fatalf("default name %s", name)
	}
	// A pod runs only as a service account that exists.
	if _, err := clusters[0].Typed.CoreV1().ServiceAccounts(ns).Create(ctx(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "migrator"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	run := kubetest.Apply(t, main(), fmt.Sprintf(`
steps:
  - id: hook
    type: kube.job
    with:
      namespace: %s
      image: %s
      command: [sh, -c]
      args: ["echo backing up $TARGET; echo mode $MODE; echo as $(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)"]
      env: {TARGET: catalog, MODE: final}
      serviceAccount: migrator
      activeDeadlineSeconds: 600
      backoffLimit: 2
      labels: {migration-job: "true"}
      timeout: 5m
  - {id: check, type: assert, with: {that: 'steps.hook.outputs.succeeded == 1 && steps.hook.outputs.failed == 0'}}
`, ns, image), kubetest.Options{RunID: "r1"})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	dir, err := run.Store.ArtifactDir("r1", "hook")
	if err != nil {
		t.Fatal(err)
	}
	pods := podsOf(t, ns, name)
	if len(pods) != 1 || pods[0].Status.Phase != corev1.PodSucceeded || pods[0].Spec.ServiceAccountName != "migrator" || pods[0].Labels["migration-job"] != "true" {
		t.Fatalf("pods of the Job: %s", kubetest.PodSummary(pods))
	}
	out := run.Outputs(t, "hook")
	if out["name"] != name || out["namespace"] != ns || out["resumed"] != false || fmt.Sprint(out["logs"]) != "["+pods[0].Name+".log]" || out["logDir"] != dir {
		t.Fatalf("outputs %v", out)
	}
	// The log the pod really wrote is kept, and nothing says a log is missing.
	if got, want := readFile(t, filepath.Join(dir, pods[0].Name+".log")), "backing up catalog\nmode final\nas "+ns+"\n"; got != want {
		t.Errorf("kept log %q, want %q", got, want)
	}
	wantFolder(t, dir, []string{pods[0].Name + ".log"})

	job, err := clusters[0].Typed.BatchV1().Jobs(ns).Get(ctx(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := job.Spec.Template.Spec
	c := spec.Containers[0]
	if c.Image != image || !slices.Equal(c.Command, []string{"sh", "-c"}) || len(c.Args) != 1 ||
		fmt.Sprint(c.Env) != "[{MODE final nil} {TARGET catalog nil}]" || spec.ServiceAccountName != "migrator" ||
		spec.RestartPolicy != corev1.RestartPolicyNever || *job.Spec.ActiveDeadlineSeconds != 600 || *job.Spec.BackoffLimit != 2 ||
		job.Labels["migration-job"] != "true" || job.Spec.Template.Labels["migration-job"] != "true" ||
		job.Annotations["planrun.dev/run"] != "r1" || job.Annotations["planrun.dev/step"] != "hook" {
		t.Fatalf("job %+v", job)
	}
}

// A pod that fails fails the step with its exit status and last log line; the failed Job is left
// for inspection; resuming the run with the step fixed runs a new Job instead of reporting the
// old failure.
func TestJobFails(t *testing.T) {
	kubetest.Need(t, clusters)
	// Every line on stderr: the runtime copies stdout and stderr into the log separately, so
	// lines of the two streams may land in either order.
	ns := clusters[0].Namespace(t)
	dir := t.TempDir()
	run := kubetest.Apply(t, main(), jobStep(ns, "echo starting >&2; echo boom-detail >&2; exit 3", ", timeout: 5m"), kubetest.Options{NoRollback: true, Dir: dir})
	failedPods := podsOf(t, ns, "planrun-run-s")
	if len(failedPods) != 1 || failedPods[0].Status.Phase != corev1.PodFailed {
		t.Fatalf("pods of the Job: %s", kubetest.PodSummary(failedPods))
	}
	pod := failedPods[0].Name
	logDir, _ := run.Store.ArtifactDir("run", "s")
	kubetest.WantRunError(t, run, `step "s" failed: Job `+ns+`/planrun-run-s failed: BackoffLimitExceeded: Job has reached the specified backoff limit (succeeded 0, failed 1; logs in `+
		logDir+`): pod `+pod+` exited with status 3: boom-detail`)
	if got := readFile(t, filepath.Join(logDir, pod+".log")); got != "starting\nboom-detail\n" {
		t.Errorf("kept log %q", got)
	}
	failed, err := clusters[0].Typed.BatchV1().Jobs(ns).Get(ctx(), "planrun-run-s", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The operator fixes the step (a failed step may change) and resumes the run.
	fixed := kubetest.Load(t, main(), jobStep(ns, "echo fixed", ", timeout: 5m"), kubetest.Options{})
	r := &engine.Runner{Store: run.Store, NoRollback: true}
	j, err := r.Resume(ctx(), "run", func(*engine.Journal) (*engine.Plan, error) { return fixed, nil })
	if err != nil {
		t.Fatal(err)
	}
	again, err := clusters[0].Typed.BatchV1().Jobs(ns).Get(ctx(), "planrun-run-s", metav1.GetOptions{})
	if err != nil || again.UID == failed.UID {
		t.Fatalf("job after resume: %v, %v", again, err)
	}
	run = &kubetest.Run{Journal: j, Store: run.Store}
	out := run.Outputs(t, "s")
	if out["resumed"] != false || fmt.Sprint(out["succeeded"], out["failed"]) != "1 0" {
		t.Fatalf("outputs %v", out)
	}
	// Only the new Job's pod counts, whether the old one is still being collected or not.
	var newPod string
	for _, p := range podsOf(t, ns, "planrun-run-s") {
		if owner := metav1.GetControllerOf(&p); owner != nil && owner.UID == again.UID {
			newPod = p.Name
		}
	}
	if fmt.Sprint(out["logs"]) != "["+newPod+".log]" {
		t.Fatalf("logs %v, want the new pod %s's only", out["logs"], newPod)
	}
	if got := readFile(t, filepath.Join(logDir, newPod+".log")); got != "fixed\n" {
		t.Errorf("kept log %q", got)
	}
}

// A step run again in the same run (after a crash; here after its wait timed out) finds its Job
// instead of starting a second one; rolling back deletes the Job and, through the garbage
// collector, its pods.
func TestJobResumeAndRollback(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	name := kubejob.DefaultName("resume", "job")
	plan := fmt.Sprintf("steps:\n  - {id: job, type: kube.job, with: {namespace: %s, image: %s, command: [sh, -c, 'sleep 5; echo slow-done'], timeout: 1s}}\n", ns, image)
	run := kubetest.Apply(t, main(), plan, kubetest.Options{RunID: "resume", NoRollback: true})
	// Its pod sleeps 5 s: the Job cannot have finished within the step's 1 s.
	kubetest.WantRunError(t, run, `step "job" failed: Job `+ns+`/`+name+` did not finish within 1s (active `)
	first, err := clusters[0].Typed.BatchV1().Jobs(ns).Get(ctx(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}

	run = kubetest.Apply(t, main(), strings.Replace(plan, "timeout: 1s", "timeout: 5m", 1)+"  - {id: boom, type: assert, with: {that: 'false'}}\n", kubetest.Options{RunID: "resume"})
	var re *engine.RunError
	if !errors.As(run.Err, &re) || re.Status != engine.RunRolledBack {
		t.Fatalf("want rolled back, got %v", run.Err)
	}
	out := run.Outputs(t, "job")
	if out["resumed"] != true || pluckInt(out["succeeded"]) != 1 {
		t.Fatalf("outputs %v", out)
	}
	if st := run.Journal.Step("job").Status; st != engine.StepRolledBack {
		t.Fatalf("status %s", st)
	}
	// The Job found again ran its one pod to the end, and its log was kept.
	logs, _ := out["logs"].([]any)
	if len(logs) != 1 {
		t.Fatalf("logs %v, want the Job's one pod's", out["logs"])
	}
	dir, _ := run.Store.ArtifactDir("resume", "job")
	if got := readFile(t, filepath.Join(dir, logs[0].(string))); got != "slow-done\n" {
		t.Errorf("kept log %q", got)
	}
	// Undo deleted the Job that was found again, the one and only, and its pod goes with it.
	kubetest.Poll(t, "the Job and its pod gone", func() (bool, error) {
		j, err := clusters[0].Typed.BatchV1().Jobs(ns).Get(ctx(), name, metav1.GetOptions{})
		if err == nil && j.UID != first.UID {
			return false, fmt.Errorf("another Job %s was created", j.UID)
		}
		return apierrors.IsNotFound(err) && len(podsOf(t, ns, name)) == 0, nil
	})
	if list, err := clusters[0].Typed.BatchV1().Jobs(ns).List(ctx(), metav1.ListOptions{}); err != nil || len(list.Items) != 0 {
		t.Fatalf("jobs %v %v", list, err)
	}
}

func pluckInt(v any) int {
	switch n := v.(type) {
	case int:
		return n
	case float64:
		return int(n)
	}
	return -1
}

func TestJobDryRun(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	run := kubetest.Apply(t, main(), "steps:\n  - {id: job, type: kube.job, with: {namespace: "+ns+", image: "+image+"}}\n", kubetest.Options{DryRun: true, RunID: "dry"})
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
	if pods := clusters[0].Pods(t, ns, ""); len(pods) != 0 {
		t.Fatalf("dry run started pods: %s", kubetest.PodSummary(pods))
	}
}

func TestJobErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	// Someone else's Job, suspended: it needs no pod to be in the way.
	suspend := true
	other := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: ns, Annotations: map[string]string{"planrun.dev/run": "older", "planrun.dev/step": "s"}},
		Spec: batchv1.JobSpec{Suspend: &suspend, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: image}}}}},
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

// A Job as a hook runs before the steps of its phase, which see its outputs; a hook whose pod
// fails stops the run before them, with the pod's last words in the error.
func TestJobAsHook(t *testing.T) {
	kubetest.Need(t, clusters)
	for _, tc := range []struct {
		name, script string
		wantErr      []string // nil: the run succeeds
		wantLog      string
	}{
		{name: "succeeds", script: "echo quiescing the app", wantLog: "quiescing the app\n"},
		{name: "fails", script: "echo quiescing the app >&2; echo boom-detail >&2; exit 3", wantLog: "quiescing the app\nboom-detail\n",
			wantErr: []string{`step "quiesce-app" failed: Job `, `/planrun-run-quiesce-app failed: BackoffLimitExceeded: `, ` exited with status 3: boom-detail`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := clusters[0].Namespace(t)
			run := kubetest.Apply(t, main(), fmt.Sprintf(`
hooks:
  PreBackup:
    - {id: quiesce-app, type: kube.job, with: {namespace: %s, image: %s, command: [sh, -c, %q], timeout: 5m}}
steps:
  - {id: backup, type: assert, phase: Backup, with: {that: 'steps["quiesce-app"].outputs.succeeded == 1'}}
`, ns, image, tc.script), kubetest.Options{})
			pods := podsOf(t, ns, "planrun-run-quiesce-app")
			if len(pods) != 1 {
				t.Fatalf("pods of the hook's Job: %s", kubetest.PodSummary(pods))
			}
			dir, _ := run.Store.ArtifactDir("run", "quiesce-app")
			if got := readFile(t, filepath.Join(dir, pods[0].Name+".log")); got != tc.wantLog {
				t.Errorf("kept log %q, want %q", got, tc.wantLog)
			}
			if tc.wantErr != nil {
				kubetest.WantRunError(t, run, tc.wantErr...)
				if st := run.Journal.Step("backup").Status; st != engine.StepPending {
					t.Fatalf("the Backup step after a failed hook: %s", st)
				}
				return
			}
			if run.Err != nil {
				t.Fatal(run.Err)
			}
			for _, id := range []string{"quiesce-app", "backup"} {
				if st := run.Journal.Step(id).Status; st != engine.StepSucceeded {
					t.Fatalf("%s: %s", id, st)
				}
			}
		})
	}
}

// A Job that cannot finish because its pod cannot start: the step's timeout error says why, not
// only how many pods are active.
func TestJobTimeoutSaysWhy(t *testing.T) {
	kubetest.Need(t, clusters)
	for _, tc := range []struct {
		name, with string
		// cause, if set, is what the Job's pod must show before the error can name it: the
		// step runs once to create the Job, then again, once the pod shows it, to find the
		// Job and time out.
		cause string
		want  []string
	}{
		{name: "image that cannot be pulled", with: `image: planrun.local/no-such-image:1`, cause: "ImagePull",
			want: []string{`did not finish within 1s (active `, `); pod planrun-run-s-`, ` Pending: container job waiting: `, `ImagePull`}},
		{name: "service account that does not exist", with: `image: ` + image + `, serviceAccount: nobody`,
			want: []string{`did not finish within 1s (active 0, succeeded 0, failed 0); no pod created (the Job's events say why)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := clusters[0].Namespace(t)
			plan := "steps:\n  - {id: s, type: kube.job, with: {namespace: " + ns + ", " + tc.with + ", timeout: 1s}}\n"
			run := kubetest.Apply(t, main(), plan, kubetest.Options{NoRollback: true})
			if tc.cause != "" {
				kubetest.Poll(t, "the Job's pod waiting for "+tc.cause, func() (bool, error) {
					for _, p := range podsOf(t, ns, "planrun-run-s") {
						for _, st := range p.Status.ContainerStatuses {
							if w := st.State.Waiting; w != nil && strings.Contains(w.Reason, tc.cause) {
								return true, nil
							}
						}
					}
					return false, nil
				})
				run = kubetest.Apply(t, main(), plan, kubetest.Options{NoRollback: true})
			}
			kubetest.WantRunError(t, run, append([]string{`step "s" failed: Job ` + ns + `/planrun-run-s `}, tc.want...)...)
		})
	}
}
