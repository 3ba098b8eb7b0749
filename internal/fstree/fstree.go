// Package fstree builds deterministic folder trees for tests and benchmarks of code that copies
// file systems (the volume mover), changes a share of them, and compares two trees on everything
// such a copy must keep: type, mode (setuid, setgid and sticky included), owner, mtime (in
// nanoseconds, folders and symlinks too), size, content, symlink target, hard-link grouping,
// sparseness and empty folders.
package fstree

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"planrun.dev/planrun/internal/filehash"
)

// Spec says what Generate writes.
type Spec struct {
	// Files is the number of small regular files, spread over nested folders (about 40 per
	// folder), with sizes between SmallMin and SmallMax bytes (log-uniform).
	Files              int
	SmallMin, SmallMax int64
	// Large are the sizes of a few large files, written in the root's "large" folder.
	Large []int64
	// Sparse are the apparent sizes of sparse files: 64 KiB of data at the start, in the
	// middle and at the end, holes elsewhere.
	Sparse []int64
	// Symlinks is the number of symbolic links: relative ones to files and folders, absolute
	// ones, dangling ones.
	Symlinks int
	// Hardlinks is the number of extra names given to existing small files (hard links), in
	// their folder or another one; every fifth one joins an earlier group.
	Hardlinks int
	// EmptyDirs is the number of empty folders.
	EmptyDirs int
	// Owners varies the files' and folders' uid and gid. It needs root (CAP_CHOWN); without it
	// Generate keeps the caller's.
	Owners bool
	// Compressible is the share (0 to 1) of 4 KiB blocks filled with text-like, compressible
	// bytes; the others are random. Zero: all random.
	Compressible float64
	// Seed makes the tree: the same Spec and Seed give the same tree (names, contents, modes,
	// owners, mtimes).
	Seed uint64
}

// Summary counts what Generate wrote.
type Summary struct {
	Files, Dirs, Symlinks, Hardlinks int
	// Bytes is the sum of the regular files' apparent sizes, each inode counted once.
	Bytes int64
}

// BaseTime is the mtime from which generated mtimes count; every generated entry's mtime has a
// non-zero nanosecond part, so that a copy that keeps only microseconds or seconds shows.
var BaseTime = time.Date(2024, 3, 4, 5, 6, 7, 123456789, time.UTC)

var (
	fileModes = []uint32{0o644, 0o600, 0o640, 0o755, 0o444, 0o660, 0o4755, 0o2755, 0o700}
	dirModes  = []uint32{0o755, 0o700, 0o2775, 0o1777, 0o750}
	owners    = []uint32{0, 1000, 1001, 2000, 65534}
)

// oddNames are folded into file names now and then: spaces, non-ASCII letters, bytes that are
// not UTF-8, a leading dash, dots.
var oddNames = []string{"with space %d.txt", "ünïcødé-%d", "latin1-\xe9t\xe9-%d", "-dash-%d", ".hidden-%d", "dots..%d.."}

type generator struct {
	root   string
	r      *rand.Rand
	spec   Spec
	dirs   []string // relative, "." first
	files  []string // small files, relative
	sum    Summary
	chowns bool
	n      int // mtime counter
}

// Generate writes the tree described by s into dir (created if absent; it should be empty).
func Generate(dir string, s Spec) (Summary, error) {
	if s.SmallMin <= 0 {
		s.SmallMin = 1
	}
	if s.SmallMax < s.SmallMin {
		s.SmallMax = max(s.SmallMin, 64<<10)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Summary{}, err
	}
	g := &generator{root: dir, r: rand.New(rand.NewPCG(s.Seed, 0x5eed)), spec: s, dirs: []string{"."},
		chowns: s.Owners && os.Geteuid() == 0}
	if err := g.run(); err != nil {
		return Summary{}, fmt.Errorf("fstree: generating in %s: %w", dir, err)
	}
	return g.sum, nil
}

func (g *generator) abs(rel string) string { return filepath.Join(g.root, filepath.FromSlash(rel)) }

func (g *generator) run() error {
	s := g.spec
	// Folders: about 40 files each, nested up to four levels under earlier folders.
	nd := max(1, s.Files/40)
	for i := range nd {
		parent := g.dirs[g.r.IntN(len(g.dirs))]
		if strings.Count(parent, "/") >= 3 {
			parent = "."
		}
		d := path.Join(parent, fmt.Sprintf("d%03d", i))
		if err := os.Mkdir(g.abs(d), 0o755); err != nil {
			return err
		}
		g.dirs = append(g.dirs, d)
	}
	g.sum.Dirs = len(g.dirs) - 1
	for i := range s.Files {
		d := g.dirs[g.r.IntN(len(g.dirs))]
		name := fmt.Sprintf("f%05d.dat", i)
		if i%97 == 13 {
			name = fmt.Sprintf(oddNames[(i/97)%len(oddNames)], i)
		}
		rel := path.Join(d, name)
		size := logUniform(g.r, s.SmallMin, s.SmallMax)
		if i%50 == 7 {
			size = 0
		}
		if err := g.writeFile(rel, size); err != nil {
			return err
		}
		g.files = append(g.files, rel)
	}
	if len(s.Large)+len(s.Sparse) > 0 {
		if err := os.Mkdir(g.abs("large"), 0o755); err != nil {
			return err
		}
		g.dirs = append(g.dirs, "large")
		g.sum.Dirs++
	}
	for i, size := range s.Large {
		if err := g.writeFile(fmt.Sprintf("large/big%02d.bin", i), size); err != nil {
			return err
		}
	}
	for i, size := range s.Sparse {
		if err := g.writeSparse(fmt.Sprintf("large/sparse%02d.img", i), size); err != nil {
			return err
		}
	}
	for i := range s.EmptyDirs {
		d := path.Join(g.dirs[g.r.IntN(len(g.dirs))], fmt.Sprintf("empty%02d", i))
		if err := os.Mkdir(g.abs(d), 0o755); err != nil {
			return err
		}
		g.dirs = append(g.dirs, d)
		g.sum.Dirs++
	}
	if err := g.hardlinks(); err != nil {
		return err
	}
	if err := g.symlinks(); err != nil {
		return err
	}
	return g.metadata()
}

// logUniform draws a size between lo and hi, log-uniformly: many small, some larger.
func logUniform(r *rand.Rand, lo, hi int64) int64 {
	if hi <= lo {
		return lo
	}
	l, h := math.Log(float64(lo)), math.Log(float64(hi))
	return min(hi, int64(math.Exp(l+r.Float64()*(h-l))))
}

// content writes size bytes to w: 4 KiB blocks, a share of them text-like (compressible), the
// others random.
func content(w io.Writer, r *rand.Rand, size int64, compressible float64) error {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], r.Uint64())
	binary.LittleEndian.PutUint64(seed[8:], r.Uint64())
	src := rand.NewChaCha8(seed)
	block := make([]byte, 4096)
	words := []string{"volume ", "stage ", "migrate ", "kopia ", "claim ", "data ", "0123 ", "\n"}
	for size > 0 {
		n := min(int64(len(block)), size)
		b := block[:n]
		if compressible > 0 && r.Float64() < compressible {
			i := 0
			for i < len(b) {
				i += copy(b[i:], words[r.IntN(len(words))])
			}
		} else {
			_, _ = src.Read(b)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
		size -= n
	}
	return nil
}

func (g *generator) writeFile(rel string, size int64) error {
	f, err := os.OpenFile(g.abs(rel), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if err := content(f, g.r, size, g.spec.Compressible); err != nil {
		f.Close()
		return err
	}
	g.sum.Files++
	g.sum.Bytes += size
	return f.Close()
}

// writeSparse writes 64 KiB of data at the start, the middle and the end of a file of the given
// apparent size, leaving holes between.
func (g *generator) writeSparse(rel string, size int64) error {
	f, err := os.OpenFile(g.abs(rel), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	const extent = 64 << 10
	for _, off := range []int64{0, size / 2 &^ 4095, size - extent} {
		if off < 0 || off+extent > size {
			continue
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return err
		}
		if err := content(f, g.r, extent, 0); err != nil {
			return err
		}
	}
	g.sum.Files++
	g.sum.Bytes += size
	return f.Close()
}

func (g *generator) hardlinks() error {
	if len(g.files) == 0 {
		return nil
	}
	var linked []string // files that have been given another name
	for i := range g.spec.Hardlinks {
		target := g.files[g.r.IntN(len(g.files))]
		if i%5 == 4 && len(linked) > 0 {
			target = linked[g.r.IntN(len(linked))] // a third (fourth…) name for a group
		}
		dir := path.Dir(target)
		if i%2 == 1 {
			dir = g.dirs[g.r.IntN(len(g.dirs))]
		}
		name := path.Join(dir, fmt.Sprintf("link%03d", i))
		if err := os.Link(g.abs(target), g.abs(name)); err != nil {
			return err
		}
		linked = append(linked, target)
		g.sum.Hardlinks++
	}
	return nil
}

func (g *generator) symlinks() error {
	for i := range g.spec.Symlinks {
		dir := g.dirs[g.r.IntN(len(g.dirs))]
		var target string
		switch i % 5 {
		case 0, 1: // relative, to a file
			if len(g.files) > 0 {
				f := g.files[g.r.IntN(len(g.files))]
				rel, err := filepath.Rel(g.abs(dir), g.abs(f))
				if err != nil {
					return err
				}
				target = filepath.ToSlash(rel)
			} else {
				target = "nothing"
			}
		case 2: // relative, to a folder
			rel, err := filepath.Rel(g.abs(dir), g.abs(g.dirs[g.r.IntN(len(g.dirs))]))
			if err != nil {
				return err
			}
			target = filepath.ToSlash(rel)
		case 3: // absolute, outside the tree
			target = fmt.Sprintf("/var/lib/app/file-%d", i)
		case 4: // dangling
			target = fmt.Sprintf("missing-%d/../nothing", i)
		}
		if err := os.Symlink(target, g.abs(path.Join(dir, fmt.Sprintf("sym%03d", i)))); err != nil {
			return err
		}
		g.sum.Symlinks++
	}
	return nil
}

// metadata sets owners, modes and mtimes, children before their folder (so that the folders'
// mtimes stay as set).
func (g *generator) metadata() error {
	return walkPostOrder(g.root, ".", func(rel string, st *unix.Stat_t) error {
		p := g.abs(rel)
		typ := st.Mode & unix.S_IFMT
		if g.chowns {
			uid, gid := owners[g.r.IntN(len(owners))], owners[g.r.IntN(len(owners))]
			if rel == "." {
				uid, gid = 0, 0
			}
			if err := unix.Lchown(p, int(uid), int(gid)); err != nil {
				return err
			}
		}
		switch typ {
		case unix.S_IFREG:
			if st.Nlink == 1 || g.r.IntN(2) == 0 { // linked files keep one mode, whichever name sets it
				if err := os.Chmod(p, goMode(fileModes[g.r.IntN(len(fileModes))])); err != nil {
					return err
				}
			}
		case unix.S_IFDIR:
			mode := dirModes[g.r.IntN(len(dirModes))]
			if rel == "." {
				mode = 0o755
			}
			if err := os.Chmod(p, goMode(mode)); err != nil {
				return err
			}
		}
		g.n++
		t := BaseTime.Add(time.Duration(g.n)*time.Second + time.Duration(g.n%1000)*time.Microsecond)
		ts := []unix.Timespec{unix.NsecToTimespec(t.UnixNano()), unix.NsecToTimespec(t.UnixNano())}
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// goMode converts unix permission bits (with setuid, setgid, sticky) to an os.FileMode.
func goMode(m uint32) iofs.FileMode {
	mode := iofs.FileMode(m & 0o777)
	if m&unix.S_ISUID != 0 {
		mode |= iofs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		mode |= iofs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		mode |= iofs.ModeSticky
	}
	return mode
}

// walkPostOrder calls fn for every entry under root (rel "." is root itself), children first,
// names in byte order, without following symlinks.
func walkPostOrder(root, rel string, fn func(rel string, st *unix.Stat_t) error) error {
	p := filepath.Join(root, filepath.FromSlash(rel))
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		names, err := readNames(p)
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := walkPostOrder(root, path.Join(rel, n), fn); err != nil {
				return err
			}
		}
	}
	return fn(rel, &st)
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

// MutationSummary says what Mutate changed.
type MutationSummary struct {
	Rewritten, Appended, Deleted, Added int
	// Renamed is the file renamed, and its new name ("" when none).
	Renamed, RenamedTo string
	// BytesWritten counts the new bytes: rewritten files whole, appended bytes, added files.
	BytesWritten int64
	// Changed lists the paths whose content changed or that were added (renamed excluded).
	Changed []string
}

// MutateTime is the mtime Mutate gives what it changes: later than every generated mtime.
var MutateTime = BaseTime.Add(1000 * time.Hour)

// Mutate changes about percent % of the regular files under dir, chosen by seed: a third are
// rewritten (same size, new bytes), a third get bytes appended, a sixth are deleted, and as many
// files as a sixth are added; one more file is renamed. Changed files get new mtimes.
func Mutate(dir string, percent float64, seed uint64) (MutationSummary, error) {
	var files []string
	err := walkPostOrder(dir, ".", func(rel string, st *unix.Stat_t) error {
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		return MutationSummary{}, err
	}
	sort.Strings(files)
	r := rand.New(rand.NewPCG(seed, 0x3a7e))
	r.Shuffle(len(files), func(i, j int) { files[i], files[j] = files[j], files[i] })
	n := max(1, int(math.Round(float64(len(files))*percent/100)))
	n = min(n, len(files))
	var m MutationSummary
	abs := func(rel string) string { return filepath.Join(dir, filepath.FromSlash(rel)) }
	touch := func(rel string, i int) error {
		t := MutateTime.Add(time.Duration(i) * time.Millisecond).UnixNano()
		return unix.UtimesNanoAt(unix.AT_FDCWD, abs(rel), []unix.Timespec{unix.NsecToTimespec(t), unix.NsecToTimespec(t)}, unix.AT_SYMLINK_NOFOLLOW)
	}
	for i, rel := range files[:n] {
		switch i % 6 {
		case 0, 1: // rewrite in place, same size
			f, err := os.OpenFile(abs(rel), os.O_WRONLY, 0)
			if err != nil {
				return m, err
			}
			fi, err := f.Stat()
			if err == nil {
				err = content(f, r, fi.Size(), 0)
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return m, err
			}
			m.Rewritten++
			m.BytesWritten += fi.Size()
		case 2, 3: // append
			f, err := os.OpenFile(abs(rel), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return m, err
			}
			size := 1 + r.Int64N(16<<10)
			err = content(f, r, size, 0)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return m, err
			}
			m.Appended++
			m.BytesWritten += size
		case 4: // delete
			if err := os.Remove(abs(rel)); err != nil {
				return m, err
			}
			m.Deleted++
			continue
		case 5: // add a file next to it
			nrel := path.Join(path.Dir(rel), fmt.Sprintf("new-%d-%05d.dat", seed, i))
			f, err := os.OpenFile(abs(nrel), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
			if err != nil {
				return m, err
			}
			size := 1 + r.Int64N(32<<10)
			err = content(f, r, size, 0)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return m, err
			}
			m.Added++
			m.BytesWritten += size
			rel = nrel
		}
		m.Changed = append(m.Changed, rel)
		if err := touch(rel, i); err != nil {
			return m, err
		}
	}
	if n < len(files) {
		from := files[n]
		to := path.Join(path.Dir(from), fmt.Sprintf("renamed-%d-%s", seed, path.Base(from)))
		if err := os.Rename(abs(from), abs(to)); err != nil {
			return m, err
		}
		m.Renamed, m.RenamedTo = from, to
	}
	sort.Strings(m.Changed)
	return m, nil
}

// Node describes one entry of a Tree.
type Node struct {
	// Type is "dir", "file", "symlink" or "other" (fifo, socket, device).
	Type string
	// Mode holds the permission bits with setuid (04000), setgid (02000) and sticky (01000).
	Mode     uint32
	UID, GID uint32
	// MTime is the modification time in nanoseconds since the epoch.
	MTime  int64
	Size   int64
	SHA256 string // regular files
	Target string // symlinks
	// Blocks is the allocated size in 512-byte blocks (regular files).
	Blocks int64
	// Link is, for a regular file with other names in the tree, the first of its names in byte
	// order; "" otherwise.
	Link string
}

// Tree maps slash-separated paths relative to the root ("." is the root) to their Node.
type Tree map[string]Node

// Snapshot describes every entry under dir, reading every regular file for its sha256.
func Snapshot(dir string) (Tree, error) {
	t := Tree{}
	type inode struct{ dev, ino uint64 }
	names := map[inode][]string{}
	err := walkPostOrder(dir, ".", func(rel string, st *unix.Stat_t) error {
		n := Node{
			Mode:  st.Mode & 0o7777,
			UID:   st.Uid,
			GID:   st.Gid,
			MTime: st.Mtim.Nano(),
		}
		p := filepath.Join(dir, filepath.FromSlash(rel))
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			n.Type = "dir"
		case unix.S_IFREG:
			n.Type, n.Size, n.Blocks = "file", st.Size, st.Blocks
			sum, err := filehash.SHA256(p)
			if err != nil {
				return err
			}
			n.SHA256 = sum
			if st.Nlink > 1 {
				k := inode{st.Dev, st.Ino}
				names[k] = append(names[k], rel)
			}
		case unix.S_IFLNK:
			n.Type, n.Size = "symlink", st.Size
			n.Mode = 0 // Linux has no symlink permissions
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			n.Target = target
		default:
			n.Type = "other"
		}
		t[rel] = n
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, group := range names {
		if len(group) < 2 {
			continue
		}
		slices.Sort(group)
		for _, rel := range group {
			n := t[rel]
			n.Link = group[0]
			t[rel] = n
		}
	}
	return t, nil
}

// SparseSlack is how much more space (bytes) a copied file may take than its source before Diff
// calls it not sparse: file systems round allocations differently.
const SparseSlack = 256 << 10

// Diff compares a copy (got) with its source (want) and describes every difference, one line
// each, in path order: entries missing or extra, and for entries on both sides their type, mode,
// owner, mtime, size, content, symlink target, hard-link grouping, and allocation (a copy may
// not take much more space than its source: sparse files stay sparse).
func Diff(want, got Tree) []string {
	var out []string
	paths := make([]string, 0, len(want))
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		w, inWant := want[p]
		g, inGot := got[p]
		switch {
		case !inGot:
			out = append(out, fmt.Sprintf("%s: missing (%s)", p, w.Type))
			continue
		case !inWant:
			out = append(out, fmt.Sprintf("%s: unexpected %s", p, g.Type))
			continue
		case w.Type != g.Type:
			out = append(out, fmt.Sprintf("%s: is a %s, want a %s", p, g.Type, w.Type))
			continue
		}
		if w.Mode != g.Mode {
			out = append(out, fmt.Sprintf("%s: mode %04o, want %04o", p, g.Mode, w.Mode))
		}
		if w.UID != g.UID || w.GID != g.GID {
			out = append(out, fmt.Sprintf("%s: owner %d:%d, want %d:%d", p, g.UID, g.GID, w.UID, w.GID))
		}
		if w.MTime != g.MTime {
			out = append(out, fmt.Sprintf("%s: mtime %s, want %s", p, fmtTime(g.MTime), fmtTime(w.MTime)))
		}
		if w.Size != g.Size {
			out = append(out, fmt.Sprintf("%s: size %d, want %d", p, g.Size, w.Size))
		}
		if w.SHA256 != g.SHA256 {
			out = append(out, fmt.Sprintf("%s: sha256 %.12s…, want %.12s…", p, g.SHA256, w.SHA256))
		}
		if w.Target != g.Target {
			out = append(out, fmt.Sprintf("%s: symlink to %q, want %q", p, g.Target, w.Target))
		}
		if w.Link != g.Link {
			out = append(out, fmt.Sprintf("%s: hard link of %q, want %q", p, g.Link, w.Link))
		}
		if w.Type == "file" && g.Blocks*512 > w.Blocks*512+SparseSlack {
			out = append(out, fmt.Sprintf("%s: %d bytes allocated, want at most %d (+%d slack): not sparse", p, g.Blocks*512, w.Blocks*512, SparseSlack))
		}
	}
	return out
}

func fmtTime(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

// Sparse reports whether the regular file at p takes less than half its size on disk, and so
// whether the file system keeps holes (tmpfs and most local file systems do).
func Sparse(p string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, errors.New("not a regular file")
	}
	return st.Blocks*512 < st.Size/2, nil
}
