package mover

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"planrun.dev/planrun/steps/storage"
)

// TestHandoff: a restore connected before the backup finished waits for the backup's named
// snapshot and gets exactly it, not an earlier complete snapshot of the same source nor one of
// another name; a wait whose deadline passes says so.
func TestHandoff(t *testing.T) {
	ctx := context.Background()
	src := generate(t, testSpec)
	w, blobs := testRepo(t)
	earlier, err := Backup(ctx, w, BackupOptions{Dir: src, SourceID: "c/ns/data", Stage: true, Handoff: "stage-1"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := connectRepo(ctx, blobs, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)

	type waited struct {
		id  string
		err error
	}
	got := make(chan waited, 1)
	go func() {
		id, err := WaitForSnapshot(ctx, r, "c/ns/data", "stage-2")
		got <- waited{id, err}
	}()
	time.Sleep(3 * handoffMinPoll) // the waiter has looked at least once and found only stage-1
	select {
	case g := <-got:
		t.Fatalf("WaitForSnapshot returned before the backup: %+v", g)
	default:
	}
	other, err := Backup(ctx, w, BackupOptions{Dir: src, SourceID: "c/ns/other", Stage: true, Handoff: "stage-2"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Backup(ctx, w, BackupOptions{Dir: src, SourceID: "c/ns/data", Stage: true, Handoff: "stage-2"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g.err != nil || g.id != b.Snapshot {
			t.Fatalf("WaitForSnapshot = %q, %v; want the stage-2 backup's %q (not stage 1's %q nor the other source's %q)", g.id, g.err, b.Snapshot, earlier.Snapshot, other.Snapshot)
		}
	case <-time.After(time.Minute):
		t.Fatal("WaitForSnapshot did not see the backup's snapshot within a minute")
	}

	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: b.Snapshot}); err != nil {
		t.Fatal(err)
	}

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if id, err := WaitForSnapshot(short, r, "c/ns/data", "stage-3"); !errors.Is(err, ErrNoHandoff) {
		t.Fatalf("WaitForSnapshot with nothing to wait for = %q, %v; want ErrNoHandoff", id, err)
	}
}

// TestConnectWaiting: a restore started with a repository's first backup waits for the backup
// to create the repository; with nothing coming, its deadline ends the wait with ErrNoRepository.
func TestConnectWaiting(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	loc := storage.OpenLocal(dir)

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := ConnectWaiting(short, loc, RepositoryOptions{}); !errors.Is(err, ErrNoRepository) || !strings.Contains(err.Error(), "waiting") {
		t.Fatalf("ConnectWaiting with no repository coming: %v; want ErrNoRepository after waiting", err)
	}

	type connected struct {
		r   *Repository
		err error
	}
	got := make(chan connected, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		r, err := ConnectWaiting(wctx, loc, RepositoryOptions{})
		got <- connected{r, err}
	}()
	time.Sleep(3 * handoffMinPoll)
	w, err := ConnectRepository(ctx, loc, RepositoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close(ctx)
	c := <-got
	if c.err != nil {
		t.Fatalf("ConnectWaiting once the repository was created: %v", c.err)
	}
	defer c.r.Close(ctx)
	if !c.r.ClientOptions().ReadOnly {
		t.Fatal("ConnectWaiting connected read-write")
	}
}
