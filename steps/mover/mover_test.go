package mover

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"planrun.dev/planrun/internal/fstree"
	"planrun.dev/planrun/steps/storage"
)

func TestRoundTrip(t *testing.T) {
	ctx := context.Background()
	r, _ := testRepo(t)
	src := generate(t, testSpec)
	want := snapshotTree(t, src)

	var ev events
	res, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "uid/ns/claim", Stage: true, Events: ev.sink})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("backup: %s", mustJSON(res))
	var files, bytes int64
	for _, n := range want {
		if n.Type == "file" {
			files++
			bytes += n.Size
		}
	}
	if res.Files != files || res.Bytes != bytes || res.HashedBytes != bytes || res.CachedFiles != 0 || res.Snapshot == "" {
		t.Errorf("backup result %s: want %d files, %d bytes, all read", mustJSON(res), files, bytes)
	}
	if w := ev.warnings(); len(w) > 0 {
		t.Errorf("warnings: %s", mustJSON(w))
	}

	dst := filepath.Join(t.TempDir(), "dst")
	rres, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: res.Snapshot, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restore: %s", mustJSON(rres))
	if !rres.Verified || rres.Files != files || rres.Deleted != 0 || rres.SkippedFiles != 0 {
		t.Errorf("restore result %s", mustJSON(rres))
	}
	assertSame(t, want, dst)
	if sparse, err := fstree.Sparse(filepath.Join(dst, "large", "sparse00.img")); err != nil || !sparse {
		t.Errorf("restored sparse file: sparse=%v, %v", sparse, err)
	}

	// Restoring again writes nothing.
	again, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: res.Snapshot})
	if err != nil {
		t.Fatal(err)
	}
	if again.WrittenFiles != 0 || again.Deleted != 0 {
		t.Errorf("second restore wrote %d files, deleted %d entries; want none", again.WrittenFiles, again.Deleted)
	}
	assertSame(t, want, dst)

	// A backup of an unchanged folder reads nothing.
	res2, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "uid/ns/claim", Stage: true})
	if err != nil {
		t.Fatal(err)
	}
	if res2.HashedBytes != 0 || res2.Files != files {
		t.Errorf("backup of an unchanged folder: %s", mustJSON(res2))
	}
	if _, err := Verify(ctx, r, VerifyOptions{Dir: dst, Snapshot: res2.Snapshot}); err != nil {
		t.Errorf("verify against the second snapshot: %v", err)
	}
}

func TestVerifyFindsDifferences(t *testing.T) {
	ctx := context.Background()
	r, _ := testRepo(t)
	spec := testSpec
	spec.Files, spec.Large, spec.Sparse = 100, nil, nil
	src := generate(t, spec)
	res, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "s", Stage: true})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: res.Snapshot}); err != nil {
		t.Fatal(err)
	}
	tree := snapshotTree(t, dst)
	var victim string
	for p, n := range tree {
		if n.Type == "file" && n.Size > 10 && n.Link == "" && (victim == "" || p < victim) {
			victim = p
		}
	}
	// One byte changed, size and mtime kept: only the sha256 tells.
	p := filepath.Join(dst, victim)
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(p, b, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(ctx, r, VerifyOptions{Dir: dst, Snapshot: res.Snapshot})
	var ve *VerifyError
	if !errors.As(err, &ve) || ve.Count != 1 || ve.First[0].Path != victim || ve.First[0].Problem != "sha256 differs" {
		t.Fatalf("Verify after corrupting %s = %v, want a VerifyError naming it", victim, err)
	}
	t.Logf("%v", err)
	if !strings.Contains(err.Error(), victim+" (sha256 differs)") || !strings.HasPrefix(err.Error(), "verify: 1 of ") {
		t.Errorf("message %q", err)
	}

	// More differences: an extra file and a missing one (which change the root's mtime too), a
	// mode.
	if err := os.WriteFile(filepath.Join(dst, "extra"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var gone string
	for p, n := range tree {
		if n.Type == "file" && n.Link == "" && !strings.Contains(p, "/") && p != victim && (gone == "" || p < gone) {
			gone = p
		}
	}
	if err := os.Remove(filepath.Join(dst, gone)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(ctx, r, VerifyOptions{Dir: dst, Snapshot: res.Snapshot})
	// Four entries differ; the root's two problems are one entry's, said together.
	if !errors.As(err, &ve) || ve.Count != 4 {
		t.Fatalf("Verify = %v, want 4 entries that differ", err)
	}
	for _, want := range []string{". (mode 0700, snapshot has 0755; mtime ", "extra (unexpected file)", gone + " (missing)", victim + " (sha256 differs)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
}

func TestStageCopiesOnlyTheChange(t *testing.T) {
	ctx := context.Background()
	r, _ := testRepo(t)
	src := generate(t, testSpec)
	stage1, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "c/ns/pvc", Stage: true})
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	if _, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: stage1.Snapshot}); err != nil {
		t.Fatal(err)
	}

	m, err := fstree.Mutate(src, 1, 42)
	if err != nil {
		t.Fatal(err)
	}
	want := snapshotTree(t, src)
	// What kopia has to read again: the changed and added files, whole, and the renamed one
	// (a new name is a new entry for kopia; its content is deduplicated, not uploaded).
	var changedBytes int64
	for _, p := range append(m.Changed, m.RenamedTo) {
		changedBytes += want[p].Size
	}
	stage2, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "c/ns/pvc", Stage: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mutation: %d rewritten, %d appended, %d deleted, %d added, %s renamed; %d bytes written, %d bytes in changed files",
		m.Rewritten, m.Appended, m.Deleted, m.Added, m.Renamed, m.BytesWritten, changedBytes)
	t.Logf("stage 1: %s", mustJSON(stage1))
	t.Logf("stage 2: %s", mustJSON(stage2))
	if stage2.HashedBytes != changedBytes {
		t.Errorf("stage 2 read %d bytes, want %d (the changed files)", stage2.HashedBytes, changedBytes)
	}
	if stage2.HashedBytes > stage1.Bytes/20 || stage2.UploadedBytes > stage1.UploadedBytes/10 {
		t.Errorf("stage 2 read %d and uploaded %d bytes, stage 1 %d and %d: want a small fraction",
			stage2.HashedBytes, stage2.UploadedBytes, stage1.HashedBytes, stage1.UploadedBytes)
	}
	if wantCached := stage2.Files - int64(len(m.Changed)) - 1; stage2.CachedFiles != wantCached {
		t.Errorf("stage 2 found %d files unchanged, want %d", stage2.CachedFiles, wantCached)
	}

	rres, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: stage2.Snapshot, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restore 2: %s", mustJSON(rres))
	if rres.WrittenFiles != int64(len(m.Changed))+1 {
		t.Errorf("restore 2 wrote %d files, want %d (changed, added, renamed)", rres.WrittenFiles, len(m.Changed)+1)
	}
	if rres.Deleted < int64(m.Deleted)+1 {
		t.Errorf("restore 2 deleted %d entries, want at least %d (deleted, renamed)", rres.Deleted, m.Deleted+1)
	}
	assertSame(t, want, dst)
}

func TestStageWarnsFinalFails(t *testing.T) {
	for _, stage := range []bool{true, false} {
		t.Run(map[bool]string{true: "stage", false: "final"}[stage], func(t *testing.T) {
			ctx := context.Background()
			r, _ := testRepo(t)
			src := t.TempDir()
			for _, name := range []string{"a", "vanishing", "growing", "z"} {
				if err := os.WriteFile(filepath.Join(src, name), []byte(strings.Repeat(name, 100000)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			hooks := &testHooks{
				// Deleted between the listing of its folder and its opening.
				beforeOpen: func(rel string) {
					if rel == "vanishing" {
						os.Remove(filepath.Join(src, rel))
					}
				},
				// Appended to while kopia reads it.
				duringRead: func(rel string) {
					if rel == "growing" {
						f, _ := os.OpenFile(filepath.Join(src, rel), os.O_WRONLY|os.O_APPEND, 0)
						f.WriteString("more")
						f.Close()
					}
				},
			}
			var ev events
			res, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "s", Stage: stage, Events: ev.sink, hooks: hooks})
			warnings := map[string]string{}
			for _, w := range ev.warnings() {
				warnings[w.Path] = w.Message
			}
			if len(warnings) != 2 || !strings.Contains(warnings["vanishing"], "vanished") || !strings.Contains(warnings["growing"], "changed while read") {
				t.Errorf("warnings %v: want vanishing and growing", warnings)
			}
			if stage {
				if err != nil {
					t.Fatal(err)
				}
				if res.Warnings != 2 || res.Files != 3 {
					t.Errorf("result %s: want 2 warnings, 3 files", mustJSON(res))
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "2 files changed or vanished while the final copy read them") ||
				!strings.Contains(err.Error(), "growing (size changed while read") || !strings.Contains(err.Error(), "vanishing (vanished") {
				t.Fatalf("final copy: %v, want an error naming both files", err)
			}
			t.Log(err)
			// Run again once quiet: only the changed file is read.
			res, err = Backup(ctx, r, BackupOptions{Dir: src, SourceID: "s"})
			if err != nil {
				t.Fatal(err)
			}
			if res.HashedBytes != int64(100000*len("growing")+4) {
				t.Errorf("retry read %d bytes, want only the changed file's", res.HashedBytes)
			}
		})
	}
}

func TestEmptyFolder(t *testing.T) {
	ctx := context.Background()
	r, _ := testRepo(t)
	src := t.TempDir()
	if err := os.Chmod(src, 0o2770); err != nil {
		t.Fatal(err)
	}
	want := snapshotTree(t, src)
	res, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "empty"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 0 || res.Dirs != 1 {
		t.Errorf("backup of an empty folder: %s", mustJSON(res))
	}
	dst := t.TempDir()
	if err := os.WriteFile(filepath.Join(dst, "old"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	rres, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: res.Snapshot, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if rres.Deleted != 1 {
		t.Errorf("restore deleted %d entries, want 1", rres.Deleted)
	}
	assertSame(t, want, dst)
	if _, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: "nope"}); err == nil {
		t.Error("restore of an unknown snapshot succeeded")
	}
}

// TestRestorePrefetch restores through a read-only ConnectRepository, which fetches files
// ahead batch by batch (small batches here): the first stage fetches every small file, the
// second only the files that changed, and both copies are exact.
func TestRestorePrefetch(t *testing.T) {
	defer func(b int64, f int) { prefetchBatchBytes, prefetchBatchFiles = b, f }(prefetchBatchBytes, prefetchBatchFiles)
	prefetchBatchBytes, prefetchBatchFiles = 256<<10, 50
	ctx := context.Background()
	loc := storage.OpenLocal(filepath.Join(t.TempDir(), "repo"))
	connect := func(readOnly bool) *Repository {
		r, err := ConnectRepository(ctx, loc, RepositoryOptions{WorkDir: t.TempDir(), ReadOnly: readOnly})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(ctx) })
		return r
	}
	spec := testSpec
	spec.Files = 300
	src := generate(t, spec)
	dst := filepath.Join(t.TempDir(), "dst")
	restore := func(snapshot string) (res RestoreResult, batches, files, packs int) {
		t.Helper()
		var mu sync.Mutex
		res, err := Restore(ctx, connect(true), RestoreOptions{Dir: dst, Snapshot: snapshot, Parallel: 3, hooks: &testHooks{prefetch: func(f, p int) {
			mu.Lock()
			defer mu.Unlock()
			batches++
			files += f
			packs += p
		}}})
		if err != nil {
			t.Fatal(err)
		}
		assertSame(t, snapshotTree(t, src), dst)
		return res, batches, files, packs
	}

	b1, err := Backup(ctx, connect(false), BackupOptions{Dir: src, SourceID: "prefetch"})
	if err != nil {
		t.Fatal(err)
	}
	res, batches, fetched, packs := restore(b1.Snapshot)
	small := 0
	for _, n := range snapshotTree(t, src) {
		if n.Type == "file" && n.Size < prefetchBelow && n.Link == "" {
			small++
		}
	}
	// Hard-link names but the first are linked, not fetched; a batch of one file is not fetched.
	if batches < 3 || fetched < small-5 || fetched > small+12 || packs < batches {
		t.Errorf("stage 1: %d small files in %d batches, %d packs read whole for them; want about the %d small files in several batches, a pack or more each", fetched, batches, packs, small)
	}
	t.Logf("stage 1: %s; %d small files in %d batches, %d packs read whole for them", mustJSON(res), fetched, batches, packs)

	m, err := fstree.Mutate(src, 5, 1)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := Backup(ctx, connect(false), BackupOptions{Dir: src, SourceID: "prefetch"})
	if err != nil {
		t.Fatal(err)
	}
	// Stage 2: the files changed are all in the packs the second backup wrote.
	res, _, fetched, packs = restore(b2.Snapshot)
	if fetched > len(m.Changed)+1 || res.WrittenFiles > int64(len(m.Changed)+1) || packs > 1 {
		t.Errorf("stage 2 after %d files changed: %d small files, %d packs read whole, %s", len(m.Changed), fetched, packs, mustJSON(res))
	}
	t.Logf("stage 2: %s; %d small files, %d packs read whole", mustJSON(res), fetched, packs)
}
