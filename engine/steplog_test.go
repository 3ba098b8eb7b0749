package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func stepLogJournal() *Journal {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return &Journal{Version: JournalVersion, RunID: "r1", Status: RunRunning, Started: now, Updated: now,
		Plan:  PlanRecord{Name: "t", File: "plan.yaml"},
		Steps: []*StepRecord{{ID: "a", Status: StepPending}, {ID: "b", Status: StepPending}}}
}

// TestStepLog: a step checkpoint survives a new process (a fresh store reading the folder), a
// line cut short by a crash is ignored, and the log of an older journal is not applied over a
// newer journal.
func TestStepLog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := NewDirStore(dir)
	j := stepLogJournal()
	if err := s.Create(ctx, j, []byte("plan")); err != nil {
		t.Fatal(err)
	}
	j.Steps[0].Status, j.Steps[0].Outputs = StepSucceeded, Outputs{"n": 1}
	if err := s.saveStep(ctx, j, j.Steps[0]); err != nil {
		t.Fatal(err)
	}
	rb := &StepRecord{ID: "a-undo", RollbackOf: "a", Status: StepRunning}
	j.Steps = append(j.Steps, rb)
	if err := s.saveStep(ctx, j, rb); err != nil {
		t.Fatal(err)
	}
	check := func(what string, want map[string]StepStatus) {
		t.Helper()
		got, err := NewDirStore(dir).Load(ctx, "r1")
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if len(got.Steps) != len(want) {
			t.Fatalf("%s: %d records, want %d", what, len(got.Steps), len(want))
		}
		for _, r := range got.Steps {
			if r.Status != want[r.ID] {
				t.Errorf("%s: %s is %s, want %s", what, r.ID, r.Status, want[r.ID])
			}
		}
		if n := got.Step("a").Outputs["n"]; n != 1 {
			t.Errorf("%s: outputs.n = %#v, want int 1", what, n)
		}
	}
	check("after step checkpoints", map[string]StepStatus{"a": StepSucceeded, "b": StepPending, "a-undo": StepRunning})

	// A crash in the middle of the next line: that checkpoint never happened.
	f, err := os.OpenFile(filepath.Join(s.Root, "r1", stepLogFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"updated":"2026-01-02T03:04:06Z","step":{"id":"b","sta`)
	f.Close()
	check("after a torn line", map[string]StepStatus{"a": StepSucceeded, "b": StepPending, "a-undo": StepRunning})

	// The journal written whole; the old log is left behind, as by a crash before its removal.
	stale, err := os.ReadFile(filepath.Join(s.Root, "r1", stepLogFile))
	if err != nil {
		t.Fatal(err)
	}
	j.Steps[2].Status = StepSucceeded
	if err := s.Save(ctx, j); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Root, "r1", stepLogFile), stale, 0o644); err != nil {
		t.Fatal(err)
	}
	check("with a stale log", map[string]StepStatus{"a": StepSucceeded, "b": StepPending, "a-undo": StepSucceeded})

	// A new process does not append to a log it did not start: it writes the journal whole.
	s2 := NewDirStore(dir)
	j2, err := s2.Load(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	j2.Steps[1].Status = StepSucceeded
	if err := s2.saveStep(ctx, j2, j2.Steps[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Root, "r1", stepLogFile)); !os.IsNotExist(err) {
		t.Errorf("step log still there after the journal was written whole: %v", err)
	}
	check("after a new process", map[string]StepStatus{"a": StepSucceeded, "b": StepSucceeded, "a-undo": StepSucceeded})
}

func TestMemStoreStepLog(t *testing.T) {
	ctx := context.Background()
	m := NewMemStore()
	j := stepLogJournal()
	if err := m.Create(ctx, j, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < maxStepLines(j)+3; i++ { // past the limit: the journal is written whole
		j.Steps[1].Attempts = i + 1
		if err := m.saveStep(ctx, j, j.Steps[1]); err != nil {
			t.Fatal(err)
		}
	}
	got, err := m.Load(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if a := got.Step("b").Attempts; a != maxStepLines(j)+3 {
		t.Errorf("attempts = %d, want %d", a, maxStepLines(j)+3)
	}
	if n := len(m.steplogs["r1"]); n > maxStepLines(j) {
		t.Errorf("%d lines in the log, more than %d", n, maxStepLines(j))
	}
}

// benchStepCheckpoint measures one step checkpoint in a DirStore for a journal of n records: it
// should not grow with n (a whole-journal write did), except for the rewrite every n lines.
func benchStepCheckpoint(b *testing.B, n int) {
	ctx := context.Background()
	s := NewDirStore(b.TempDir())
	j := stepLogJournal()
	for i := len(j.Steps); i < n; i++ {
		j.Steps = append(j.Steps, &StepRecord{ID: "s" + strconv.Itoa(i), Status: StepPending})
	}
	if err := s.Create(ctx, j, nil); err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		rec := j.Steps[i%n]
		rec.Attempts++
		if err := s.saveStep(ctx, j, rec); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkStepCheckpoint100(b *testing.B)   { benchStepCheckpoint(b, 100) }
func BenchmarkStepCheckpoint10000(b *testing.B) { benchStepCheckpoint(b, 10_000) }

// startStepLog creates run r1 in a fresh DirStore and checkpoints its step a as Running through
// the step log.
func startStepLog(t *testing.T) (context.Context, string, *DirStore, *Journal) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	s := NewDirStore(dir)
	j := stepLogJournal()
	if err := s.Create(ctx, j, []byte("plan")); err != nil {
		t.Fatal(err)
	}
	j.Steps[0].Status = StepRunning
	if err := s.saveStep(ctx, j, j.Steps[0]); err != nil {
		t.Fatal(err)
	}
	return ctx, dir, s, j
}

// TestStepLogFailedAppend: an append that fails (here: a symlink planted where the log is, which
// is not followed) fails the checkpoint, and the store forgets the log, so the next checkpoint
// writes the journal whole instead of appending after what may be a piece of a line.
func TestStepLogFailedAppend(t *testing.T) {
	ctx, dir, s, j := startStepLog(t)
	logPath := filepath.Join(dir, "r1", stepLogFile)
	target := filepath.Join(dir, "elsewhere")
	if err := os.Remove(logPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, logPath); err != nil {
		t.Fatal(err)
	}
	j.Steps[0].Status = StepSucceeded
	if err := s.saveStep(ctx, j, j.Steps[0]); err == nil {
		t.Fatal("a checkpoint through a planted symlink succeeded")
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Fatalf("the symlink was followed: %v", err)
	}
	if err := os.Remove(logPath); err != nil {
		t.Fatal(err)
	}
	j.Steps[1].Status = StepRunning
	if err := s.saveStep(ctx, j, j.Steps[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(logPath); !os.IsNotExist(err) {
		t.Errorf("the checkpoint after a failed append appended again (want the journal written whole): %v", err)
	}
	got, err := NewDirStore(dir).Load(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Step("a").Status != StepSucceeded || got.Step("b").Status != StepRunning {
		t.Errorf("journal: a %s, b %s; want Succeeded, Running", got.Step("a").Status, got.Step("b").Status)
	}
}

// TestStepLogForgedLine: a step log line is checked like the journal it applies to.
func TestStepLogForgedLine(t *testing.T) {
	ctx, dir, _, _ := startStepLog(t)
	f, err := os.OpenFile(filepath.Join(dir, "r1", stepLogFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"updated":"2026-01-02T03:04:06Z","step":{"id":"a","status":"Done"}}` + "\n")
	f.Close()
	if _, err := NewDirStore(dir).Load(ctx, "r1"); !errors.Is(err, ErrCorruptJournal) {
		t.Fatalf("Load = %v, want ErrCorruptJournal", err)
	}
}
