package mover

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kopia/kopia/snapshot"
)

// A backup killed (SIGKILL) halfway, run again, reads and uploads only what its checkpoints do
// not hold; the snapshot it makes restores to an identical tree.
func TestBackupResumesAfterKill(t *testing.T) {
	ctx := context.Background()
	r, blobs := testRepo(t)
	spec := testSpec
	spec.Large, spec.Sparse = nil, nil // bytes in proportion to files
	src := generate(t, spec)
	want := snapshotTree(t, src)
	killHalfway(t, "backup", []string{"MOVER_BLOBS=" + blobs, "MOVER_DIR=" + src, "MOVER_SOURCE=c/ns/pvc", "MOVER_SLOW_MS=5"},
		func(p *Progress) bool { return p.FilesTotal > 0 && p.Files > p.FilesTotal/2 })

	if err := r.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	ms, err := snapshot.ListSnapshots(ctx, r, sourceInfo("c/ns/pvc"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("the killed backup left no checkpoint")
	}
	for _, m := range ms {
		if m.IncompleteReason == "" || m.Tags[tagIndex] == "" {
			t.Errorf("left %q (incomplete: %q, index: %q), want checkpoints with an index", m.ID, m.IncompleteReason, m.Tags[tagIndex])
		}
	}

	rehashed := -1
	res, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "c/ns/pvc", Stage: true,
		hooks: &testHooks{indexed: func(n int) { rehashed = n }}})
	if err != nil {
		t.Fatal(err)
	}
	if rehashed != 0 {
		t.Errorf("%d sums read back from the repository: want all from this run or the checkpoint's index", rehashed)
	}
	t.Logf("%d checkpoints left; resumed backup: %s", len(ms), mustJSON(res))
	if res.HashedBytes > res.Bytes*3/4 || res.CachedFiles < res.Files/3 {
		t.Errorf("the resumed backup read %d of %d bytes and found %d of %d files done: want the checkpoint's files not read again",
			res.HashedBytes, res.Bytes, res.CachedFiles, res.Files)
	}
	// The data is random: a full upload is about as large as the tree.
	if res.UploadedBytes > res.Bytes*3/4 {
		t.Errorf("the resumed backup uploaded %d bytes of %d: want what the checkpoints hold not uploaded again", res.UploadedBytes, res.Bytes)
	}
	if ms, _ := snapshot.ListSnapshots(ctx, r, sourceInfo("c/ns/pvc")); len(ms) != 1 {
		t.Errorf("%d snapshots after the resumed backup, want the complete one only (checkpoints forgotten)", len(ms))
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: res.Snapshot, Verify: true}); err != nil {
		t.Fatal(err)
	}
	assertSame(t, want, dst)
}

// A restore killed halfway, run again, writes only what is not there yet, and leaves an
// identical tree (no temporary file behind).
func TestRestoreResumesAfterKill(t *testing.T) {
	ctx := context.Background()
	r, blobs := testRepo(t)
	src := generate(t, testSpec)
	want := snapshotTree(t, src)
	res, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "c/ns/pvc", Stage: true})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	killHalfway(t, "restore", []string{"MOVER_BLOBS=" + blobs, "MOVER_DIR=" + dst, "MOVER_SNAPSHOT=" + res.Snapshot, "MOVER_SLOW_MS=5"},
		func(p *Progress) bool { return p.FilesTotal > 0 && p.Files > p.FilesTotal/2 })

	rres, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: res.Snapshot, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("resumed restore: %s", mustJSON(rres))
	if rres.WrittenFiles > rres.Files*3/4 || rres.SkippedFiles < rres.Files/3 {
		t.Errorf("the resumed restore wrote %d and skipped %d of %d files: want what the killed one wrote skipped",
			rres.WrittenFiles, rres.SkippedFiles, rres.Files)
	}
	assertSame(t, want, dst)
}
