package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/steps/kubejob"
)

// TestJobCrashAndResume SIGKILLs planrun while the pod of its kube.job runs, on a complete
// cluster, and resumes the run: the step must find the Job it started (no second Job, no second
// pod), wait for it to finish and keep the pod's whole log.
func TestJobCrashAndResume(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.WithNode())
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	ctx := t.Context()
	const ns = "crash-job"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No pod can be created before the namespace's default service account exists.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		t.Fatalf("waiting for the default service account of %s: %v", ns, err)
	}

	dir := t.TempDir()
	plan := writePlan(t, dir, "job.yaml", fmt.Sprintf(`apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: crash-job}
clusters:
  main: {kubeconfig: %q, context: %q}
steps:
  - id: job
    type: kube.job
    with: {namespace: %s, image: %s, command: [sh, -c, 'sleep 8; echo finished'], timeout: 5m}
  - {id: after, type: assert, with: {that: 'steps.job.outputs.succeeded == 1 && steps.job.outputs.resumed'}}
`, cp.Kubeconfig, cp.ContextName, ns, controlplane.BusyboxImage))
	name := kubejob.DefaultName("r", "job")
	selector := "job-name=" + name

	// Killed at the first progress event of the step (the Job's status changing) that finds the
	// Job's pod Running: the container is in its sleep, the log not yet written.
	var jobUID types.UID
	var podName string
	kp := plantest.KillPoint{Event: engine.EventStepProgress, Step: "job", UntilDoc: "its pod Running", Until: func() bool {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil || len(pods.Items) != 1 || pods.Items[0].Status.Phase != corev1.PodRunning {
			return false
		}
		owner := metav1.GetControllerOf(&pods.Items[0])
		if owner == nil {
			return false
		}
		jobUID, podName = owner.UID, pods.Items[0].Name
		return true
	}}
	if r := runPlanrun(t, dir, &kp, "apply", plan, "--run-id", "r"); !r.Killed {
		t.Fatalf("the run ended (exit %d) before it was killed at %s\n%s", r.Code, kp, r)
	}
	t.Logf("killed with pod %s of Job %s Running", podName, jobUID)

	if r := runPlanrun(t, dir, nil, "resume", "r", "--break-lock"); r.Code != 0 {
		t.Fatalf("resume exited %d\n%s", r.Code, r)
	}
	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != engine.RunSucceeded {
		t.Fatalf("run status %s", j.Status)
	}
	out := j.Step("job").Outputs
	if out["resumed"] != true || outputInt(t, out, "succeeded") != 1 || outputInt(t, out, "failed") != 0 || fmt.Sprint(out["logs"]) != "["+podName+".log]" {
		t.Fatalf("outputs %v", out)
	}
	logDir, _ := out["logDir"].(string)
	if b, err := os.ReadFile(filepath.Join(logDir, podName+".log")); err != nil || string(b) != "finished\n" {
		t.Fatalf("kept log %q, %v; want %q", b, err, "finished\n")
	}

	// One Job, the one started before the kill, which made one pod.
	jobs, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs.Items) != 1 || jobs.Items[0].UID != jobUID {
		t.Fatalf("jobs after resume: %d (want the one %s)", len(jobs.Items), jobUID)
	}
	if st := jobs.Items[0].Status; st.Succeeded != 1 || st.Failed != 0 {
		t.Errorf("Job status: succeeded %d, failed %d", st.Succeeded, st.Failed)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 || pods.Items[0].Name != podName || pods.Items[0].Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pods of the Job: %v, want only %s, Succeeded", podNames(pods.Items), podName)
	}
}

func podNames(pods []corev1.Pod) []string {
	var names []string
	for _, p := range pods {
		names = append(names, p.Name+" "+string(p.Status.Phase))
	}
	return names
}
