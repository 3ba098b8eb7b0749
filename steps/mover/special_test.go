package mover

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Fifos, sockets and device files are never opened (a fifo would block the reader): each is a
// warning, and the snapshot does not have it.
func TestSpecialFilesSkipped(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, _ := testRepo(t)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "plain"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(src, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(src, "socket"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Logf("no device file (%v): not root?", err)
	}
	var ev events
	for _, stage := range []bool{true, false} {
		ev.list = nil
		res, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "s", Stage: stage, Events: ev.sink})
		if err != nil {
			t.Fatalf("stage=%v: %v", stage, err)
		}
		got := map[string]string{}
		for _, w := range ev.warnings() {
			got[w.Path] = w.Message
		}
		if !strings.Contains(got["fifo"], "fifo") || !strings.Contains(got["socket"], "socket") || res.Files != 1 {
			t.Errorf("stage=%v: warnings %v, %d files: want the fifo and the socket skipped with a warning", stage, got, res.Files)
		}
		if _, err := os.Lstat(filepath.Join(src, "null")); err == nil && !strings.Contains(got["null"], "device") {
			t.Errorf("stage=%v: no warning for the device file: %v", stage, got)
		}
		dst := t.TempDir()
		if _, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: res.Snapshot, Verify: true}); err != nil {
			t.Fatal(err)
		}
		if entries, _ := os.ReadDir(dst); len(entries) != 1 || entries[0].Name() != "plain" {
			t.Errorf("restored %v, want plain only", entries)
		}
	}
}

// A symlink on the target where the snapshot has a folder is removed, not followed: the restore
// never writes outside its folder.
func TestRestoreDoesNotFollowSymlinks(t *testing.T) {
	ctx := context.Background()
	r, _ := testRepo(t)
	src := t.TempDir()
	for _, p := range []string{"a/passwd", "b/c/d/file"} {
		if err := os.MkdirAll(filepath.Join(src, filepath.Dir(p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte("from the snapshot"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := snapshotTree(t, src)
	res, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "s", Stage: true})
	if err != nil {
		t.Fatal(err)
	}
	// Outside stands for /etc: a folder the target's symlinks point to.
	outside := t.TempDir()
	sentinel := filepath.Join(outside, "passwd")
	if err := os.WriteFile(sentinel, []byte("root:x:0:0"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(outside, "c", "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dst, "a")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dst, "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "c"), filepath.Join(dst, "b", "c")); err != nil {
		t.Fatal(err)
	}
	rres, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: res.Snapshot, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(sentinel); string(b) != "root:x:0:0" {
		t.Errorf("the restore wrote through the symlink: %s holds %q", sentinel, b)
	}
	if _, err := os.Stat(filepath.Join(outside, "c", "d", "file")); err == nil {
		t.Errorf("the restore wrote through the nested symlink")
	}
	if rres.Deleted != 2 {
		t.Errorf("deleted %d entries, want the 2 symlinks", rres.Deleted)
	}
	assertSame(t, want, dst)
}

// Hard links on the target that the snapshot does not have (or has otherwise) are undone, and
// those it has are made, whether or not the names' size and mtime already match.
func TestRestoreHardLinks(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name     string
		src, dst [][]string // groups of names that are one file; the first name's content is "<name>!"
		written  int64      // files the restore writes
	}{
		{"linked on the target, apart in the snapshot", [][]string{{"a"}, {"b"}}, [][]string{{"a", "b"}}, 2},
		{"linked in both", [][]string{{"a", "b"}}, [][]string{{"a", "b"}}, 0},
		{"apart on the target, linked in the snapshot", [][]string{{"a", "b"}}, [][]string{{"a"}, {"b"}}, 0},
		{"three on the target, two in the snapshot", [][]string{{"a", "b"}, {"c"}}, [][]string{{"a", "b", "c"}}, 2},
		{"linked on the target to a name the snapshot lacks", [][]string{{"a"}}, [][]string{{"a", "z"}}, 0},
	}
	mtime := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	layout := func(t *testing.T, dir string, groups [][]string) {
		t.Helper()
		for _, g := range groups {
			first := filepath.Join(dir, g[0])
			if err := os.WriteFile(first, []byte(g[0]+"!"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(first, mtime, mtime); err != nil {
				t.Fatal(err)
			}
			for _, n := range g[1:] {
				if err := os.Link(first, filepath.Join(dir, n)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := testRepo(t)
			src, dst := t.TempDir(), t.TempDir()
			layout(t, src, tc.src)
			layout(t, dst, tc.dst)
			want := snapshotTree(t, src)
			b, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "s", Stage: true})
			if err != nil {
				t.Fatal(err)
			}
			res, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: b.Snapshot, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			assertSame(t, want, dst)
			if res.WrittenFiles != tc.written {
				t.Errorf("wrote %d files, want %d", res.WrittenFiles, tc.written)
			}
		})
	}
}
