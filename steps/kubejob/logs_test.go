package kubejob_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubejob"
)

// TestKeepLogsOfEveryPod runs real pods for a Job and keeps their logs: every container of every
// pod of the Job (init containers too), not the pods of an earlier Job of the same name nor
// unrelated pods; a pod never scheduled is noted instead, and the note goes once every log could
// be read. The Jobs are managed by "another controller" (spec.managedBy), so that the built-in
// Job controller leaves them alone and the test can give them the pods it wants, as a Job
// controller or a retried Job would.
func TestKeepLogsOfEveryPod(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	job := externalJob(t, ns, "hook")
	old := externalJob(t, ns, "hook-old") // stands for an earlier Job named hook: another UID

	pod := func(name string, owner *batchv1.Job, script string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}, Spec: kubetest.BusyboxSpec(script)}
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		p.Spec.Containers[0].Name = "job"
		if owner != nil {
			p.Labels["job-name"] = "hook"
			p.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(owner, batchv1.SchemeGroupVersion.WithKind("Job"))}
		}
		return p
	}
	// Both lines on stderr: the runtime copies stdout and stderr into the log separately, so lines
	// of the two streams may land in either order.
	failed := pod("hook-aaaaa", job, "echo first attempt >&2; echo it broke >&2; exit 3")
	second := pod("hook-bbbbb", job, "echo second attempt")
	second.Spec.InitContainers = []corev1.Container{second.Spec.Containers[0]}
	second.Spec.InitContainers[0].Name, second.Spec.InitContainers[0].Command = "setup", []string{"sh", "-c", "echo setting up"}
	unscheduled := pod("hook-ccccc", job, "true")
	unscheduled.Spec.NodeSelector = map[string]string{"planrun.dev/no-such-node": "true"}
	for _, p := range []*corev1.Pod{failed, second, unscheduled, pod("hook-zzzzz", old, "echo not mine"), pod("other", nil, "echo unrelated")} {
		if _, err := c.Typed.CoreV1().Pods(ns).Create(ctx(), p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for name, phase := range map[string]corev1.PodPhase{"hook-aaaaa": corev1.PodFailed, "hook-bbbbb": corev1.PodSucceeded, "hook-zzzzz": corev1.PodSucceeded, "other": corev1.PodSucceeded} {
		waitPhase(t, ns, name, phase)
	}

	dir := t.TempDir()
	files, lastFailure, err := kubejob.KeepLogs(ctx(), c.Typed, job, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"hook-aaaaa.log", "hook-bbbbb.setup.log", "hook-bbbbb.job.log"}
	if !slices.Equal(files, want) {
		t.Fatalf("files %v, want %v", files, want)
	}
	for f, content := range map[string]string{"hook-aaaaa.log": "first attempt\nit broke\n", "hook-bbbbb.setup.log": "setting up\n", "hook-bbbbb.job.log": "second attempt\n"} {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || string(b) != content {
			t.Errorf("%s: %q, %v; want %q", f, b, err, content)
		}
	}
	if want := "pod hook-aaaaa exited with status 3: it broke"; lastFailure != want {
		t.Errorf("last failure %q, want %q", lastFailure, want)
	}
	wantFolder(t, dir, append(want, "logs-unavailable.txt"))
	note, err := os.ReadFile(filepath.Join(dir, "logs-unavailable.txt"))
	if err != nil || string(note) != "pod hook-ccccc container job: the pod was never scheduled to a node, so it has no log (phase Pending)\n" {
		t.Errorf("log note %q, %v", note, err)
	}

	// Once every log could be read, the note of an earlier attempt goes.
	zero := int64(0)
	if err := c.Typed.CoreV1().Pods(ns).Delete(ctx(), "hook-ccccc", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	kubetest.Poll(t, "pod hook-ccccc gone", func() (bool, error) {
		return len(c.Pods(t, ns, "job-name=hook")) == 3, nil
	})
	if files, _, err = kubejob.KeepLogs(ctx(), c.Typed, job, dir); err != nil || !slices.Equal(files, want) {
		t.Fatalf("second time: %v, %v", files, err)
	}
	wantFolder(t, dir, want)

	// No pod at all: the note says so.
	files, lastFailure, err = kubejob.KeepLogs(ctx(), c.Typed, externalJob(t, ns, "empty"), dir)
	note, _ = os.ReadFile(filepath.Join(dir, "logs-unavailable.txt"))
	if err != nil || len(files) != 0 || lastFailure != "" || string(note) != "Job empty has no pods (none left, or none was ever started)\n" {
		t.Errorf("no pods: %v %q %v %q", files, lastFailure, err, note)
	}
}

// externalJob creates a Job that the built-in Job controller leaves alone (another controller
// manages it), so that it gets no pods but those the test makes.
func externalJob(t *testing.T, ns, name string) *batchv1.Job {
	t.Helper()
	managedBy := "planrun.dev/test"
	spec := kubetest.BusyboxSpec("true")
	spec.RestartPolicy = corev1.RestartPolicyNever
	j, err := clusters[0].Typed.BatchV1().Jobs(ns).Create(ctx(), &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       batchv1.JobSpec{ManagedBy: &managedBy, Template: corev1.PodTemplateSpec{Spec: spec}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// wantFolder fails the test unless dir holds exactly the files named (no temporary file).
func wantFolder(t *testing.T, dir string, want []string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(names, want) {
		t.Errorf("folder holds %v, want %v", names, want)
	}
}
