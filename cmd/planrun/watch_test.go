package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
)

// TestStatusWatch: status -w follows a run that another process runs, step by step in order, and
// exits as the run does; on a finished run it reports the steps and the end at once.
func TestStatusWatch(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "runs")
	plan := filepath.Join(dir, "plan.yaml")
	body := "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: watched}\nsteps:\n" +
		"  - {id: first, type: exec, with: {command: [sleep, '1']}}\n" +
		"  - {id: skipped, type: exec, when: 'false', with: {command: ['true']}}\n" +
		"  - {id: second, type: exec, with: {command: [sleep, '1']}}\n" +
		"  - {id: broken, type: exec, with: {command: [sh, -c, 'sleep 1; exit 3']}}\n"
	if err := os.WriteFile(plan, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	runner := exec.Command(planrunBin, "apply", plan, "--run-id", "w", "--no-rollback", "--state-dir", state)
	if err := runner.Start(); err != nil {
		t.Fatal(err)
	}
	defer runner.Process.Kill()
	// The run exists once its journal does.
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := engine.NewDirStore(state).Load(t.Context(), "w"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	code, stdout, stderr := runCLI(t, "status", "w", "-w", "-o", "json", "--state-dir", state)
	if code != exitRunFailed {
		t.Fatalf("status -w of a run that fails: exit %d, %s", code, stderr)
	}
	var got []string
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		var e engine.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("not an event: %q", sc.Text())
		}
		got = append(got, strings.Join(strings.Fields(string(e.Type)+" "+e.StepID+" "+e.Status), " "))
	}
	want := []string{"run.started", "step.started first", "step.succeeded first", "step.skipped skipped",
		"step.started second", "step.succeeded second", "step.started broken", "step.failed broken", "run.finished Failed"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("events\n got %q\nwant %q", got, want)
	}
	if err := runner.Wait(); err == nil {
		t.Fatal("the run succeeded")
	}

	// A finished run: everything at once, and the end.
	code, stdout, _ = runCLI(t, "status", "w", "-w", "--state-dir", state)
	if code != exitRunFailed || !strings.Contains(stdout, "first") || !strings.Contains(stdout, "broken") {
		t.Fatalf("status -w of a finished run: exit %d\n%s", code, stdout)
	}
}
