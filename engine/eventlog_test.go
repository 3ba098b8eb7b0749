package engine_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"planrun.dev/planrun/engine"
)

// TestEventLog: a run's events are appended to its event log as they happen, for followers; a
// follower reads from an offset what was added since; a line torn by a crash is skipped, and
// the next runner's events follow it.
func TestEventLog(t *testing.T) {
	f := newFixture(t)
	body := "steps:\n  - {id: a, type: test.op}\n  - {id: b, type: test.op, with: {failIf: " + filepath.Join(f.dir, "flag") + "}}\n"
	if err := os.WriteFile(filepath.Join(f.dir, "flag"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f.runner.NoRollback = true
	if _, err := f.apply(body, engine.ApplyOptions{}); err == nil {
		t.Fatal("the run did not fail")
	}
	events, offset, err := f.store.ReadEvents("run-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []engine.EventType
	for _, e := range events {
		types = append(types, e.Type)
	}
	want := []engine.EventType{engine.EventRunStarted, engine.EventStepStarted, engine.EventStepSucceeded, engine.EventStepStarted, engine.EventStepFailed, engine.EventRunFinished}
	if len(types) != len(want) {
		t.Fatalf("events %v, want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] || events[i].RunID != "run-1" {
			t.Fatalf("events %v, want %v", types, want)
		}
	}
	if again, next, _ := f.store.ReadEvents("run-1", offset); len(again) != 0 || next != offset {
		t.Errorf("read again from the end: %d events, offset %d → %d", len(again), offset, next)
	}

	// A runner killed in the middle of a line.
	dir, _ := f.store.RunDir("run-1")
	log, err := os.OpenFile(filepath.Join(dir, "events.jsonl"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	log.WriteString(`{"time":"2026-11-30T00:00:00Z","type":"step.prog`)
	log.Close()
	if torn, next, _ := f.store.ReadEvents("run-1", offset); len(torn) != 0 || next != offset {
		t.Errorf("a torn line was read: %v (offset %d → %d)", torn, offset, next)
	}
	os.Remove(filepath.Join(f.dir, "flag"))
	if _, err := f.runner.Resume(context.Background(), "run-1", f.reload(body)); err != nil {
		t.Fatal(err)
	}
	resumed, _, err := f.store.ReadEvents("run-1", offset)
	if err != nil || len(resumed) == 0 || resumed[0].Type != engine.EventRunStarted || resumed[len(resumed)-1].Type != engine.EventRunFinished {
		t.Errorf("events of the resumed run after the torn line: %v, %v", resumed, err)
	}

	// A line longer than a read (not one planrun writes) is skipped, not stuck on.
	_, end, _ := f.store.ReadEvents("run-1", 0)
	log, err = os.OpenFile(filepath.Join(dir, "events.jsonl"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	log.Write(append(bytes.Repeat([]byte("x"), 5<<20), '\n'))
	log.WriteString(`{"time":"2026-11-30T00:00:00Z","type":"step.warning","runID":"run-1","message":"after"}` + "\n")
	log.Close()
	var after []engine.Event
	for range 3 {
		events, next, err := f.store.ReadEvents("run-1", end)
		if err != nil {
			t.Fatal(err)
		}
		after, end = append(after, events...), next
	}
	if len(after) != 1 || after[0].Message != "after" {
		t.Errorf("events after a 5 MiB line: %v", after)
	}
}
