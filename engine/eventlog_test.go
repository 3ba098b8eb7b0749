package engine_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// burst reports progress 1..N at once, then works on without reporting.
type burst struct {
	N     int64           `yaml:"n"`
	After engine.Duration `yaml:"after"`
}

func (b *burst) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	for i := int64(1); i <= b.N; i++ {
		rc.Progress(engine.Progress{Done: i, Total: b.N})
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Duration(b.After)):
	}
	return nil, nil
}

func init() {
	engine.Register(engine.StepType{Name: "test.burst", Doc: "test step", New: func() engine.Action { return new(burst) }})
}

// TestEventLogKeepsTheLastProgress: progress is thinned to one event a second per step, but the
// newest figures of a burst are written when their second is up, not lost: a follower must not
// see a step stuck at its first figures while it works on.
func TestEventLogKeepsTheLastProgress(t *testing.T) {
	f := newFixture(t)
	if _, err := f.apply("steps:\n  - {id: a, type: test.burst, with: {n: 50, after: 1500ms}}\n  - {id: b, type: test.burst, with: {n: 50, after: 0s}}\n", engine.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	events, _, err := f.store.ReadEvents("run-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range events {
		if e.Type == engine.EventStepProgress {
			got = append(got, fmt.Sprintf("%s:%d", e.StepID, e.Progress.Done))
		}
	}
	// b ended before its second was up: its held-back figures are stale, and not written.
	if want := "a:1 a:50 b:1"; strings.Join(got, " ") != want {
		t.Fatalf("progress in the log: %q, want %q", got, want)
	}
}
