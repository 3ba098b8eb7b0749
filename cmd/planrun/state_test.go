package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/internal/controlplane"
)

// TestStateInACluster: apply, runs, status, resume and rollback keep and find runs in a cluster
// namespace with --state k8s://CONTEXT/NAMESPACE, and the run's plan comes from there when its
// file is gone; bad state URLs and a missing namespace are one-line errors.
func TestStateInACluster(t *testing.T) {
	cp := controlplane.StartForTest(t)
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "runs"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	state := "k8s://" + cp.ContextName + "/runs"
	common := []string{"--state", state, "--kubeconfig", cp.Kubeconfig}
	dir := t.TempDir()
	plan := filepath.Join(dir, "plan.yaml")
	flag := filepath.Join(dir, "fail")
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	body := "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: kept}\nsteps:\n" +
		"  - {id: a, type: assert, with: {that: 'true'}}\n" +
		"  - {id: b, type: exec, with: {command: [sh, -c, 'test ! -e " + flag + "']}}\n"
	if err := os.WriteFile(plan, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, append([]string{"apply", plan, "--run-id", "kept-1", "--no-rollback"}, common...)...)
	if code != exitRunFailed {
		t.Fatalf("apply: exit %d: %s", code, stderr)
	}
	code, stdout, stderr := runCLI(t, append([]string{"runs", "-o", "json"}, common...)...)
	if code != exitOK || !strings.Contains(stdout, `"kept-1"`) || !strings.Contains(stdout, "Failed") {
		t.Fatalf("runs: exit %d: %s %s", code, stdout, stderr)
	}

	// Resumed elsewhere: the plan file is gone, the store has it.
	if err := os.Remove(plan); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, append([]string{"resume", "kept-1"}, common...)...)
	if code != exitOK {
		t.Fatalf("resume: exit %d: %s", code, stderr)
	}
	code, stdout, stderr = runCLI(t, append([]string{"status", "kept-1", "-o", "json"}, common...)...)
	var st struct {
		Status string `json:"status"`
	}
	if code != exitOK || json.Unmarshal([]byte(stdout), &st) != nil || st.Status != "Succeeded" {
		t.Fatalf("status: exit %d: %s %s", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, append([]string{"rollback", "kept-1"}, common...)...)
	if code != exitOK || !strings.Contains(stdout, "rolled back") {
		t.Fatalf("rollback: exit %d: %s %s", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, append([]string{"status", "kept-1", "-w", "-o", "json"}, common...)...)
	if code != exitRunFailed || !strings.Contains(stdout, `"type":"run.finished"`) || !strings.Contains(stdout, `"status":"RolledBack"`) {
		t.Fatalf("status -w of the rolled-back run: exit %d: %s %s", code, stdout, stderr)
	}

	for _, tc := range []struct {
		state string
		code  int
		want  string
	}{
		{"k8s://" + cp.ContextName, exitUsage, "no namespace"},
		{"k8s://" + cp.ContextName + "/runs?lease=1s", exitUsage, "at least 3s"},
		{"k8s://" + cp.ContextName + "/absent", exitRunFailed, "namespace absent does not exist"},
		{"k8s://no-such-context/runs", exitRunFailed, "no-such-context"},
	} {
		code, _, stderr := runCLI(t, "runs", "--state", tc.state, "--kubeconfig", cp.Kubeconfig)
		if code != tc.code || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("runs --state %s: exit %d, %q; want exit %d and one line with %q", tc.state, code, stderr, tc.code, tc.want)
		}
	}
	code, stdout, _ = runCLI(t, "install-crd")
	if code != exitOK || !strings.Contains(stdout, "name: planruns.planrun.dev") {
		t.Errorf("install-crd: exit %d: %s", code, stdout)
	}
}
