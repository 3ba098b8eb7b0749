package kubejob

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// The test control plane has no kubelet, so no real log can be read there; a fake clientset
// (whose logs are "fake logs") checks that the log of every container of every pod of the Job
// is kept, pods of another Job of the same name are not, and a stale note is removed.
func TestKeepLogsOfEveryPod(t *testing.T) {
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: "ns", UID: "job-uid"}}
	owned := []metav1.OwnerReference{*metav1.NewControllerRef(job, batchv1.SchemeGroupVersion.WithKind("Job"))}
	old := job.DeepCopy()
	old.UID = "old-uid"
	pod := func(name string, owners []metav1.OwnerReference, containers ...string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", Labels: map[string]string{"job-name": "hook"}, OwnerReferences: owners},
			Spec: corev1.PodSpec{NodeName: "node-1"}}
		for _, c := range containers {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c})
		}
		return p
	}
	withInit := pod("hook-bbbbb", owned, "job")
	withInit.Spec.InitContainers = []corev1.Container{{Name: "setup"}}
	cs := fake.NewClientset(
		pod("hook-aaaaa", owned, "job"), // first attempt, failed
		withInit,                        // second attempt
		pod("hook-zzzzz", []metav1.OwnerReference{*metav1.NewControllerRef(old, batchv1.SchemeGroupVersion.WithKind("Job"))}, "job"),
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: "ns"}, Spec: corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "c"}}}},
	)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, logNote), []byte("stale\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := keepLogs(context.Background(), cs, job, dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"hook-aaaaa.log", "hook-bbbbb.setup.log", "hook-bbbbb.job.log"}
	if !slices.Equal(files, want) {
		t.Fatalf("files %v, want %v", files, want)
	}
	for _, f := range want {
		if b, err := os.ReadFile(filepath.Join(dir, f)); err != nil || string(b) != "fake logs" {
			t.Errorf("%s: %q, %v", f, b, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != len(want) || strings.Contains(strings.Join(names, " "), ".tmp") {
		t.Errorf("folder holds %v; want only the logs (the stale note removed)", names)
	}

	// No pod at all: the note says so.
	files, err = keepLogs(context.Background(), fake.NewClientset(), job, dir)
	note, _ := os.ReadFile(filepath.Join(dir, logNote))
	if err != nil || len(files) != 0 || string(note) != "Job hook has no pods (none left, or none was ever started)\n" {
		t.Errorf("no pods: %v %v %q", files, err, note)
	}
}
