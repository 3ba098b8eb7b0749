package engine_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/safepath"
)

// TestStoresRefuseHostileNames: no run id or step id names a path outside its folder, at any
// entry point of either store, and nothing is created outside the state folder.
func TestStoresRefuseHostileNames(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	root := filepath.Join(base, "state", "runs")
	stores := map[string]engine.Store{"dir": engine.NewDirStore(root), "mem": engine.NewMemStore()}
	for name, s := range stores {
		if err := s.Create(ctx, &engine.Journal{Version: engine.JournalVersion, RunID: "ok", Status: engine.RunRunning}, nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, bad := range []string{"../../x", "../x", "/abs", "a/b", `a\b`, "..", ".", "", "a\x00b"} {
			calls := map[string]error{
				"Create": s.Create(ctx, &engine.Journal{Version: engine.JournalVersion, RunID: bad, Status: engine.RunRunning}, nil),
			}
			_, calls["ArtifactDir run"] = s.ArtifactDir(bad, "step")
			_, calls["ArtifactDir step"] = s.ArtifactDir("ok", bad)
			if name == "dir" {
				_, calls["Load"] = s.Load(ctx, bad)
				_, calls["PlanSource"] = s.PlanSource(ctx, bad)
				_, calls["Lock"] = s.Lock(ctx, bad, engine.LockOptions{})
				_, calls["LockState"] = s.LockState(ctx, bad)
			}
			for call, err := range calls {
				if !errors.Is(err, safepath.ErrUnsafe) {
					t.Errorf("%s store: %s(%q) = %v, want ErrUnsafe", name, call, bad, err)
				}
			}
		}
	}
	for _, p := range []string{filepath.Join(base, "x"), filepath.Join(base, "state", "x"), filepath.Join(base, "state", "step")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was created", p)
		}
	}
}

// TestDirStoreRefusesSymlinks: a run folder or lock file planted as a symlink in the state
// folder does not send planrun's reads and writes elsewhere, and List does not show it.
func TestDirStoreRefusesSymlinks(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s := engine.NewDirStore(root)
	elsewhere := t.TempDir()
	target := filepath.Join(elsewhere, "victim")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(root, "linked")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(ctx, "linked", engine.LockOptions{}); err == nil {
		t.Error("Lock followed a symlinked run folder")
	}
	if _, err := s.ArtifactDir("linked", "a"); err == nil {
		t.Error("ArtifactDir followed a symlinked run folder")
	}
	if err := s.Create(ctx, &engine.Journal{Version: engine.JournalVersion, RunID: "r", Status: engine.RunRunning}, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(root, "r", "lock")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(ctx, "r", engine.LockOptions{BreakStale: true}); err == nil {
		t.Error("Lock opened a symlinked lock file")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	runs, err := s.List(ctx)
	if err != nil || len(runs) != 1 || runs[0].RunID != "r" {
		t.Fatalf("List = %v, %v; want only r", runs, err)
	}
}

// TestLockStateReadsWithoutTaking: LockState tells a held lock from a free one and never takes it.
func TestLockStateReadsWithoutTaking(t *testing.T) {
	ctx := context.Background()
	s := engine.NewDirStore(t.TempDir())
	if err := s.Create(ctx, &engine.Journal{Version: engine.JournalVersion, RunID: "r", Status: engine.RunRunning}, nil); err != nil {
		t.Fatal(err)
	}
	want := func(status engine.LockStatus) {
		t.Helper()
		st, err := s.LockState(ctx, "r")
		if err != nil || st.Status != status {
			t.Fatalf("LockState = %+v, %v; want %s", st, err, status)
		}
	}
	want(engine.LockFree)
	l, err := s.Lock(ctx, "r", engine.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want(engine.LockHeld)
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	want(engine.LockFree)
	if l, err = s.Lock(ctx, "r", engine.LockOptions{}); err != nil {
		t.Fatalf("LockState left the lock taken: %v", err)
	}
	l.Release()
}
