package engine_test

import (
	"context"
	"errors"
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
			if err := f.store.RequestStop(context.Background(), "run-1", "bob@console"); err != nil {
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

	// A stale request made while nothing runs is dropped by the next runner.
	if err := f.store.RequestStop(context.Background(), "run-1", "carol@late"); err != nil {
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
		if err := s.RequestStop(context.Background(), id, "x"); err == nil {
			t.Errorf("RequestStop(%q) succeeded", id)
		}
	}
	if err := s.RequestStop(context.Background(), "missing", "x"); !errors.Is(err, engine.ErrRunNotFound) {
		t.Errorf("missing run: %v", err)
	}
}
