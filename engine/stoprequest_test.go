package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
)

// TestStopRequestStopsAtASafePoint: another process asks a running run to stop; it ends
// Interrupted as on SIGINT, the journal says who asked, and resume finishes it.
func TestStopRequestStopsAtASafePoint(t *testing.T) {
	f := newFixture(t)
	f.runner.Actor = "alice@shift-1"
	body := `
steps:
  - {id: a, type: test.op}
  - {id: b, type: test.op, with: {sleep: 1m}}
  - {id: c, type: test.op}
`
	p := load(t, writePlan(t, f.dir, body), engine.ParamValues{})
	f.runner.Observer = engine.ObserverFunc(func(e engine.Event) {
		if e.Type == engine.EventStepStarted && e.StepID == "b" {
			if err := engine.CancelRun(context.Background(), f.store, "run-1", "bob@console"); err != nil {
				t.Error(err)
			}
		}
	})
	j, err := f.runner.Apply(context.Background(), p, engine.ApplyOptions{RunID: "run-1"})
	if !errors.Is(err, engine.ErrInterrupted) {
		t.Fatalf("want interrupted, got %v", err)
	}
	if j.Status != engine.RunInterrupted || j.Step("b").Status != engine.StepRunning {
		t.Fatalf("status %s, b %s", j.Status, j.Step("b").Status)
	}
	if req, err := f.store.StopRequest(context.Background(), "run-1"); err != nil || req != nil {
		t.Fatalf("the request outlived the run it stopped: %v %v", req, err)
	}

	// A request meant for a runner that is gone is dropped by the next runner.
	if err := f.store.RequestStop(context.Background(), "run-1", engine.OperatorAction{Action: "cancel", By: "carol@late", Target: "pid 1 on gone since 2026-11-30T00:00:00Z"}); err != nil {
		t.Fatal(err)
	}
	f.runner.Observer = nil
	f.runner.Actor = "dave@shift-2"
	j, err = f.runner.Resume(context.Background(), "run-1", f.reload(`
steps:
  - {id: a, type: test.op}
  - {id: b, type: test.op}
  - {id: c, type: test.op}
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range j.Actions {
		got = append(got, a.Action+" by "+a.By)
		if a.At.IsZero() {
			t.Errorf("%s has no time", a.Action)
		}
	}
	want := []string{"apply by alice@shift-1", "cancel by bob@console", "resume by dave@shift-2"}
	if !equal(got, want) {
		t.Fatalf("actions %q, want %q", got, want)
	}
}

func TestStopRequestRefusesUnsafeRunIDs(t *testing.T) {
	s := engine.NewDirStore(t.TempDir())
	for _, id := range []string{"../x", "", "a/b"} {
		if err := s.RequestStop(context.Background(), id, engine.OperatorAction{By: "x"}); err == nil {
			t.Errorf("RequestStop(%q) succeeded", id)
		}
	}
	if err := s.RequestStop(context.Background(), "missing", engine.OperatorAction{By: "x"}); !errors.Is(err, engine.ErrRunNotFound) {
		t.Errorf("missing run: %v", err)
	}
}

// TestRollbackStoppedStaysRollingBack: a rollback stopped half-way is not a run to resume: its
// status stays RollingBack, resume refuses it, and rollback finishes it.
func TestRollbackStoppedStaysRollingBack(t *testing.T) {
	f := newFixture(t)
	body := `
steps:
  - {id: a, type: test.op, rollback: [{id: undo-a, type: test.op}]}
  - {id: b, type: test.op, rollback: [{id: undo-b, type: test.op, with: {sleep: 1m}}]}
  - {id: boom, type: test.op, with: {always: true}}
`
	p := load(t, writePlan(t, f.dir, body), engine.ParamValues{})
	ctx, cancel := context.WithCancel(context.Background())
	f.runner.Observer = engine.ObserverFunc(func(e engine.Event) {
		if e.Type == engine.EventStepStarted && e.StepID == "undo-b" {
			cancel()
		}
	})
	j, err := f.runner.Apply(ctx, p, engine.ApplyOptions{RunID: "run-1"})
	if !errors.Is(err, engine.ErrInterrupted) || j.Status != engine.RunRollingBack || j.Finished != nil {
		t.Fatalf("stopped rollback: %v, status %s", err, j.Status)
	}
	f.runner.Observer = nil
	if _, err := f.runner.Resume(context.Background(), "run-1", f.reload(body)); err == nil || !strings.Contains(err.Error(), "finish it with planrun rollback run-1") {
		t.Fatalf("resume of a stopped rollback: %v", err)
	}
	j, err = f.runner.Rollback(context.Background(), "run-1", f.reload(strings.ReplaceAll(body, "with: {sleep: 1m}", "")))
	if err != nil || j.Status != engine.RunRolledBack {
		t.Fatalf("rollback: %v, %s", err, j.Status)
	}
}

// TestNoRollbackIsKeptByResume: a run started to stay as it is on failure stays so when resumed
// by a runner that was not told (another terminal, the console).
func TestNoRollbackIsKeptByResume(t *testing.T) {
	f := newFixture(t)
	f.runner.NoRollback = true
	body := "steps:\n  - {id: a, type: test.op}\n  - {id: boom, type: test.op, with: {always: true}}\n"
	if j, err := f.apply(body, engine.ApplyOptions{}); err == nil || j.Status != engine.RunFailed {
		t.Fatalf("apply: %v", err)
	}
	f.runner.NoRollback = false
	j, err := f.runner.Resume(context.Background(), "run-1", f.reload(body))
	if err == nil || j.Status != engine.RunFailed || j.Step("a").Status != engine.StepSucceeded {
		t.Fatalf("resume: %v, status %s, a %s", err, j.Status, j.Step("a").Status)
	}
}
