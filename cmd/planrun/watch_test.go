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

// TestWatchForwardsLiveEvents: a follower gets the progress, warnings and retries that the run's
// runner appends to its event log from the moment it attached on (what came before is in the
// journal), and none of the events the journal already tells.
func TestWatchForwardsLiveEvents(t *testing.T) {
	dir := t.TempDir()
	store := engine.NewDirStore(filepath.Join(dir, "runs"))
	plan := writePlan(t, dir, "plan.yaml", "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: live}\nsteps:\n  - {id: copy, type: assert, with: {that: 'true'}}\n")
	p, err := engine.Load(plan, engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&engine.Runner{Store: store}).Submit(t.Context(), p, engine.ApplyOptions{RunID: "live"}); err != nil {
		t.Fatal(err)
	}
	log, err := store.OpenEventLog("live")
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	write := func(e engine.Event) {
		b, _ := json.Marshal(e)
		log.Write(append(b, '\n'))
	}
	write(engine.Event{Type: engine.EventStepProgress, StepID: "copy", Progress: &engine.Progress{Done: 1}})
	live := newLiveEvents(store, "live")
	for _, e := range []engine.Event{
		{Type: engine.EventStepStarted, StepID: "copy"},
		{Type: engine.EventStepProgress, StepID: "copy", Progress: &engine.Progress{Done: 5, Total: 10, Unit: "files"}},
		{Type: engine.EventStepWarning, StepID: "copy", Message: "a file was skipped"},
		{Type: engine.EventStepSucceeded, StepID: "copy"},
	} {
		write(e)
	}
	var got []string
	live.forward(engine.ObserverFunc(func(e engine.Event) {
		got = append(got, string(e.Type))
		if e.Type == engine.EventStepProgress && e.Progress.Done != 5 {
			t.Errorf("progress %+v, want the one after attaching", e.Progress)
		}
	}))
	if strings.Join(got, " ") != "step.progress step.warning" {
		t.Errorf("forwarded %v, want the progress and the warning after attaching", got)
	}
}
