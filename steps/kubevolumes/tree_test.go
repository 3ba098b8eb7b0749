package kubevolumes_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
)

// entry is what a copy must keep of a file, as the test reads it on this machine (the volumes'
// folders are ours to read, as root).
type entry struct {
	kind     string // "file", "dir", "symlink", "other"
	mode     fs.FileMode
	uid, gid uint32
	mtime    int64 // nanoseconds; for folders, seconds (the copy writes into them after)
	size     int64
	sha      string // files
	target   string // symlinks
	link     string // files: the first path (in walk order) of its hard-link group, "" when alone
	sparse   bool   // files: fewer blocks allocated than the size needs
}

func (e entry) String() string {
	s := fmt.Sprintf("%s %v %d:%d mtime=%d", e.kind, e.mode, e.uid, e.gid, e.mtime)
	switch e.kind {
	case "file":
		s += fmt.Sprintf(" size=%d sha=%.12s", e.size, e.sha)
		if e.link != "" {
			s += " linked-to=" + e.link
		}
		if e.sparse {
			s += " sparse"
		}
	case "symlink":
		s += " -> " + e.target
	}
	return s
}

// tree reads every entry under root, by slash path ("." is root itself).
func tree(t testing.TB, root string) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		e := entry{mode: fi.Mode(), uid: st.Uid, gid: st.Gid, mtime: fi.ModTime().UnixNano()}
		switch {
		case fi.Mode().IsRegular():
			e.kind, e.size = "file", fi.Size()
			e.sha = fileSHA(t, path)
			e.sparse = st.Blocks*512 < fi.Size()
			if st.Nlink > 1 {
				if first, ok := inodes[st.Ino]; ok {
					e.link = first
				} else {
					inodes[st.Ino] = rel
				}
			}
		case fi.IsDir():
			e.kind, e.mtime = "dir", fi.ModTime().Unix()
		case fi.Mode()&fs.ModeSymlink != 0:
			e.kind, e.mtime = "symlink", 0
			e.target, _ = os.Readlink(path)
		default:
			e.kind = "other"
		}
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func fileSHA(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// sameTree fails the test, listing every difference, unless the trees at a and b are the same
// in what a copy keeps.
func sameTree(t testing.TB, a, b string) {
	t.Helper()
	ta, tb := tree(t, a), tree(t, b)
	var diffs []string
	for p, ea := range ta {
		eb, ok := tb[p]
		switch {
		case !ok:
			diffs = append(diffs, "missing on the target: "+p)
		case ea != eb:
			diffs = append(diffs, fmt.Sprintf("%s: source %s, target %s", p, ea, eb))
		}
	}
	for p := range tb {
		if _, ok := ta[p]; !ok {
			diffs = append(diffs, "only on the target: "+p)
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Errorf("the target differs from the source:\n%s", strings.Join(diffs, "\n"))
	}
}

// TestTreeComparison checks the comparison the end-to-end tests rely on: a tree equals its copy
// by `cp -a` and differs from it in each way a copy could go wrong.
func TestTreeComparison(t *testing.T) {
	a := filepath.Join(t.TempDir(), "a")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(a, "dir/empty"), 0o755))
	must(os.WriteFile(filepath.Join(a, "dir/f"), []byte("hello"), 0o640))
	must(os.Link(filepath.Join(a, "dir/f"), filepath.Join(a, "hard")))
	must(os.Symlink("dir/f", filepath.Join(a, "link")))
	f, err := os.Create(filepath.Join(a, "sparse"))
	must(err)
	_, err = f.WriteAt([]byte("end"), 10<<20)
	must(err)
	must(f.Close())
	b := filepath.Join(t.TempDir(), "b")
	if out, err := exec.Command("cp", "-a", "--sparse=always", a, b).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	sameTree(t, a, b)
	if e := tree(t, a); !e["sparse"].sparse || e["hard"].link != "dir/f" && e["dir/f"].link != "hard" {
		t.Errorf("tree: %v", e)
	}

	must(os.Chmod(filepath.Join(b, "dir/f"), 0o600))
	must(os.Remove(filepath.Join(b, "link")))
	must(os.Symlink("elsewhere", filepath.Join(b, "link")))
	must(os.WriteFile(filepath.Join(b, "extra"), nil, 0o644))
	ft := &fakeT{}
	sameTree(ft, a, b)
	for _, want := range []string{"dir/f: source file -rw-r-----", "link: source symlink", "only on the target: extra"} {
		if !strings.Contains(ft.msg, want) {
			t.Errorf("differences %q lack %q", ft.msg, want)
		}
	}
}

// fakeT collects what sameTree reports.
type fakeT struct {
	testing.TB
	msg string
}

func (f *fakeT) Helper()                           {}
func (f *fakeT) Errorf(format string, args ...any) { f.msg += fmt.Sprintf(format, args...) }
func (f *fakeT) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
