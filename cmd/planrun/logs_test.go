package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
)

// TestLogs: planrun logs prints the files a run's steps wrote, one step or all of them, and -f
// follows a step that another process runs, line by line, until it ends.
func TestLogs(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "runs")
	plan := writePlan(t, dir, "plan.yaml", `apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: logged}
steps:
  - {id: hello, type: exec, with: {command: [sh, -c, "echo hello out; echo hello err >&2"]}}
  - {id: slow, type: exec, with: {command: [sh, -c, "echo first line; sleep 1.5; echo second line; sleep 0.5"]}}
`)
	runner := exec.Command(planrunBin, "apply", plan, "--run-id", "l", "--state-dir", state)
	if err := runner.Start(); err != nil {
		t.Fatal(err)
	}
	defer runner.Process.Kill()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		j, err := engine.NewDirStore(state).Load(t.Context(), "l")
		if err == nil && j.Step("slow") != nil && j.Step("slow").Status == engine.StepRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("step slow did not start")
		}
	}
	code, stdout, stderr := runCLI(t, "logs", "l", "slow", "-f", "--state-dir", state)
	if code != exitOK || !strings.Contains(stdout, "first line") || !strings.Contains(stdout, "second line") {
		t.Fatalf("logs -f: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if err := runner.Wait(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"one step", []string{"l", "hello"}, exitOK, []string{"==> hello/stderr.log <==", "hello err\n", "==> hello/stdout.log <==", "hello out\n"}},
		{"every step", []string{"l"}, exitOK, []string{"==> hello/stdout.log <==", "==> slow/stdout.log <==", "first line\nsecond line\n"}},
		{"an unknown step", []string{"l", "nope"}, exitUsage, nil},
		{"-f of every step", []string{"l", "-f"}, exitUsage, nil},
		{"an unknown run", []string{"gone"}, exitRunFailed, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append(append([]string{"logs"}, tc.args...), "--state-dir", state)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}
