package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
)

// TestCancel: planrun cancel stops a run another process runs at a safe point; the runner exits
// as on Ctrl-C, the journal says who cancelled, and resume finishes the run.
func TestCancel(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "runs")
	plan := writePlan(t, dir, "plan.yaml", "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: long}\nsteps:\n"+
		"  - {id: wait, type: exec, with: {command: [sh, -c, 'test -e "+filepath.Join(dir, "go")+" || sleep 600']}}\n"+
		"  - {id: after, type: assert, with: {that: 'true'}}\n")
	runner := exec.Command(planrunBin, "apply", plan, "--run-id", "c", "--state-dir", state)
	runner.Env = append(os.Environ(), "PLANRUN_ACTOR=alice")
	if err := runner.Start(); err != nil {
		t.Fatal(err)
	}
	defer runner.Process.Kill()
	store := engine.NewDirStore(state)
	for deadline := time.Now().Add(30 * time.Second); ; {
		if j, err := store.Load(t.Context(), "c"); err == nil && j.Step("wait").Status == engine.StepRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run did not start its step")
		}
		time.Sleep(50 * time.Millisecond)
	}

	t.Setenv("PLANRUN_ACTOR", "bob")
	code, stdout, stderr := runCLI(t, "cancel", "c", "--state-dir", state)
	if code != exitOK || !strings.Contains(stdout, "run c stopped: Interrupted") || !strings.Contains(stdout, "planrun resume c") {
		t.Fatalf("cancel: exit %d\n%s%s", code, stdout, stderr)
	}
	var ee *exec.ExitError
	if err := runner.Wait(); !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Fatalf("the runner ended with %v, want exit %d", err, exitInterrupted)
	}

	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"not running", []string{"cancel", "c"}, exitRunFailed, "planrun cancel: run c is not running (status Interrupted): nothing to cancel\n"},
		{"unknown run", []string{"cancel", "nope"}, exitRunFailed, "planrun cancel: run not found: nope"},
		{"path as run id", []string{"cancel", "../x"}, exitUsage, "planrun cancel: "},
		{"no run id", []string{"cancel"}, exitUsage, "planrun cancel: cancel takes one run id\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, append(tc.args, "--state-dir", state)...)
			if code != tc.code || !strings.HasPrefix(stderr, tc.msg) || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want %d, %q", code, stderr, tc.code, tc.msg)
			}
		})
	}

	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PLANRUN_ACTOR", "carol")
	if code, _, stderr := runCLI(t, "resume", "c", "--state-dir", state); code != exitOK {
		t.Fatalf("resume: exit %d: %s", code, stderr)
	}
	if got, status := runActions(t, store, "c"); got != "apply:alice cancel:bob resume:carol" || status != engine.RunSucceeded {
		t.Fatalf("status %s, actions %q", status, got)
	}
	if _, out, _ := runCLI(t, "status", "c", "--state-dir", state); !strings.Contains(out, "Actions:") || !strings.Contains(out, "cancel by bob at") {
		t.Fatalf("status does not say who did what:\n%s", out)
	}
}
