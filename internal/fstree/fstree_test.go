package fstree

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var testSpec = Spec{
	Files: 300, SmallMin: 10, SmallMax: 8 << 10,
	Large:    []int64{1 << 20},
	Sparse:   []int64{8 << 20},
	Symlinks: 12, Hardlinks: 10, EmptyDirs: 3,
	Owners: true, Compressible: 0.5, Seed: 7,
}

func TestGenerateIsDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	sa, err := Generate(a, testSpec)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := Generate(b, testSpec)
	if err != nil {
		t.Fatal(err)
	}
	if sa != sb {
		t.Errorf("summaries differ: %+v and %+v", sa, sb)
	}
	if sa.Files != 300+2 || sa.Symlinks != 12 || sa.Hardlinks != 10 || sa.Dirs < 8 {
		t.Errorf("summary %+v, want 302 files, 12 symlinks, 10 hard links, some folders", sa)
	}
	ta, err := Snapshot(a)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := Snapshot(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(ta, tb); len(d) > 0 {
		t.Errorf("two trees of one spec differ:\n%s", strings.Join(d, "\n"))
	}

	// The tree has what the spec promises.
	var links, syms, empty, odd, setgid, owners int
	for p, n := range ta {
		switch {
		case n.Link != "":
			links++
		case n.Type == "symlink":
			syms++
		case n.Type == "dir" && strings.Contains(p, "empty"):
			empty++
		}
		if strings.Contains(p, "\xe9") || strings.Contains(p, " ") {
			odd++
		}
		if n.Mode&0o2000 != 0 {
			setgid++
		}
		if n.UID != 0 {
			owners++
		}
	}
	if links < 10 || syms != 12 || empty != 3 || odd < 2 || setgid == 0 || (os.Geteuid() == 0 && owners == 0) {
		t.Errorf("tree has %d linked names, %d symlinks, %d empty folders, %d odd names, %d setgid entries, %d not owned by root", links, syms, empty, odd, setgid, owners)
	}
	if sparse, err := Sparse(filepath.Join(a, "large", "sparse00.img")); err != nil || !sparse {
		t.Errorf("sparse file: sparse=%v, %v", sparse, err)
	}
	if n := ta["large/sparse00.img"]; n.Size != 8<<20 {
		t.Errorf("sparse file size %d", n.Size)
	}
	if n := ta["."]; n.MTime != ta["."].MTime || n.MTime == 0 || n.MTime%1000 == 0 {
		t.Errorf("root mtime %d: want the generated one, with nanoseconds", n.MTime)
	}
}

func TestMutate(t *testing.T) {
	dir := t.TempDir()
	if _, err := Generate(dir, testSpec); err != nil {
		t.Fatal(err)
	}
	before, err := Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Mutate(dir, 5, 1)
	if err != nil {
		t.Fatal(err)
	}
	after, err := Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Rewritten == 0 || m.Appended == 0 || m.Deleted == 0 || m.Added == 0 || m.Renamed == "" || m.BytesWritten == 0 {
		t.Errorf("mutation %+v: want some of each kind", m)
	}
	total := m.Rewritten + m.Appended + m.Deleted + m.Added
	if total < 12 || total > 20 { // 5 % of ~320 files
		t.Errorf("changed %d files, want about 16", total)
	}
	for _, p := range m.Changed {
		if after[p].SHA256 == before[p].SHA256 {
			t.Errorf("%s: reported changed, content the same", p)
		}
		if after[p].MTime <= before[p].MTime {
			t.Errorf("%s: mtime not moved on", p)
		}
	}
	if _, ok := after[m.Renamed]; ok {
		t.Errorf("%s still there after rename", m.Renamed)
	}
	if after[m.RenamedTo].SHA256 != before[m.Renamed].SHA256 {
		t.Errorf("renamed file's content changed")
	}
	again, err := Mutate(t.TempDir(), 5, 1) // empty folder: nothing to change, no error
	if err != nil || again.Rewritten+again.Deleted != 0 {
		t.Errorf("Mutate(empty) = %+v, %v", again, err)
	}
}

func TestDiffFindsEachDifference(t *testing.T) {
	base := Tree{
		".":        {Type: "dir", Mode: 0o755, MTime: 1},
		"d":        {Type: "dir", Mode: 0o2775, UID: 1000, GID: 1000, MTime: 2},
		"d/f":      {Type: "file", Mode: 0o644, MTime: 3, Size: 5, SHA256: "aaaa", Blocks: 8, Link: "d/f"},
		"d/g":      {Type: "file", Mode: 0o644, MTime: 3, Size: 5, SHA256: "aaaa", Blocks: 8, Link: "d/f"},
		"s":        {Type: "symlink", MTime: 4, Size: 3, Target: "d/f"},
		"sparse":   {Type: "file", Mode: 0o600, MTime: 5, Size: 1 << 30, SHA256: "bbbb", Blocks: 2048},
		"empty":    {Type: "dir", Mode: 0o1777, MTime: 6},
		"empty/.x": {Type: "file", Mode: 0o644, MTime: 7, SHA256: "e3b0"},
	}
	for _, tc := range []struct {
		name   string
		change func(Tree)
		want   string
	}{
		{"missing entry", func(t Tree) { delete(t, "empty/.x") }, "empty/.x: missing (file)"},
		{"missing empty folder", func(t Tree) { delete(t, "empty"); delete(t, "empty/.x") }, "empty: missing (dir)"},
		{"extra entry", func(t Tree) { t["extra"] = Node{Type: "file"} }, "extra: unexpected file"},
		{"type", func(t Tree) { t["s"] = Node{Type: "file", MTime: 4, Size: 3} }, "s: is a file, want a symlink"},
		{"mode", func(t Tree) { n := t["d/f"]; n.Mode = 0o600; t["d/f"] = n }, "d/f: mode 0600, want 0644"},
		{"setgid bit", func(t Tree) { n := t["d"]; n.Mode = 0o775; t["d"] = n }, "d: mode 0775, want 2775"},
		{"sticky bit", func(t Tree) { n := t["empty"]; n.Mode = 0o777; t["empty"] = n }, "empty: mode 0777, want 1777"},
		{"owner", func(t Tree) { n := t["d"]; n.GID = 0; t["d"] = n }, "d: owner 1000:0, want 1000:1000"},
		{"file mtime", func(t Tree) { n := t["d/f"]; n.MTime = 3000; t["d/f"] = n }, "d/f: mtime"},
		{"folder mtime", func(t Tree) { n := t["."]; n.MTime = 9; t["."] = n }, ".: mtime"},
		{"symlink mtime", func(t Tree) { n := t["s"]; n.MTime = 9; t["s"] = n }, "s: mtime"},
		{"size", func(t Tree) { n := t["d/f"]; n.Size = 6; t["d/f"] = n }, "d/f: size 6, want 5"},
		{"content", func(t Tree) { n := t["d/g"]; n.SHA256 = "cccc"; t["d/g"] = n }, "d/g: sha256 cccc…, want aaaa…"},
		{"symlink target", func(t Tree) { n := t["s"]; n.Target = "/etc"; t["s"] = n }, `s: symlink to "/etc", want "d/f"`},
		{"hard link lost", func(t Tree) {
			for _, p := range []string{"d/f", "d/g"} {
				n := t[p]
				n.Link = ""
				t[p] = n
			}
		}, `d/f: hard link of "", want "d/f"`},
		{"sparse file filled", func(t Tree) { n := t["sparse"]; n.Blocks = 1 << 21; t["sparse"] = n }, "sparse: 1073741824 bytes allocated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Tree{}
			for k, v := range base {
				got[k] = v
			}
			tc.change(got)
			d := Diff(base, got)
			if len(d) == 0 || !strings.HasPrefix(d[0], tc.want) {
				t.Errorf("Diff = %q, want a first line starting %q", d, tc.want)
			}
		})
	}
	if d := Diff(base, base); len(d) != 0 {
		t.Errorf("Diff of a tree with itself = %q", d)
	}
	// A copy that takes less space than its source (holes where the source had zeros) is fine.
	less := Tree{}
	for k, v := range base {
		less[k] = v
	}
	n := less["d/f"]
	n.Blocks = 0
	less["d/f"] = n
	if d := Diff(base, less); len(d) != 0 {
		t.Errorf("Diff with a sparser copy = %q", d)
	}
}
