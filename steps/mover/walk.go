package mover

import (
	"context"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// localPath is the path of index path rel under root.
func localPath(root, rel string) string {
	if rel == "." || rel == "" {
		return root
	}
	return filepath.Join(root, filepath.FromSlash(rel))
}

// mergeFunc is called by mergeWalk for each path found in the folder, the index, or both: st is
// nil when the folder has nothing there, rec when the index has nothing. For a folder present on
// disk, descend says whether to walk into it.
type mergeFunc func(rel string, st *unix.Stat_t, rec *record) (descend bool, err error)

// mergeWalk walks the folder root and an index together, in index order (names in byte order,
// a folder before its contents), never following a symlink. Memory holds one folder's names per
// level, not the tree.
func mergeWalk(ctx context.Context, root string, ir *indexReader, fn mergeFunc) error {
	m := &merger{ctx: ctx, root: root, ir: ir, fn: fn}
	if err := m.advance(); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: root, Err: err}
	}
	descend, err := m.visit(".", &st)
	if err != nil {
		return err
	}
	if descend {
		if err := m.dir("."); err != nil {
			return err
		}
	}
	return m.drainBefore("") // whatever the index still holds is missing
}

type merger struct {
	ctx  context.Context
	root string
	ir   *indexReader
	fn   mergeFunc
	rec  record
	ok   bool
}

func (m *merger) advance() error {
	var err error
	m.rec, m.ok, err = m.ir.next()
	return err
}

// drainBefore reports the index's records before p (all of them when p is "") as missing.
func (m *merger) drainBefore(p string) error {
	for m.ok && (p == "" || comparePaths(m.rec.Path, p) < 0) {
		rec := m.rec
		if _, err := m.fn(rec.Path, nil, &rec); err != nil {
			return err
		}
		if err := m.advance(); err != nil {
			return err
		}
	}
	return nil
}

// visit reports p (on disk, stat st) with its index record if the index has one.
func (m *merger) visit(p string, st *unix.Stat_t) (bool, error) {
	if err := m.drainBefore(p); err != nil {
		return false, err
	}
	if m.ok && m.rec.Path == p {
		rec := m.rec
		if err := m.advance(); err != nil {
			return false, err
		}
		return m.fn(p, st, &rec)
	}
	return m.fn(p, st, nil)
}

func (m *merger) dir(rel string) error {
	if err := m.ctx.Err(); err != nil {
		return err
	}
	f, err := os.OpenFile(localPath(m.root, rel), os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		f.Close()
		return err
	}
	slices.Sort(names)
	defer f.Close()
	for _, name := range names {
		p := joinPath(rel, name)
		var st unix.Stat_t
		if err := unix.Fstatat(int(f.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if err == unix.ENOENT {
				continue
			}
			return &os.PathError{Op: "lstat", Path: localPath(m.root, p), Err: err}
		}
		descend, err := m.visit(p, &st)
		if err != nil {
			return err
		}
		if descend && st.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := m.dir(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// localType is the index type of a stat, or 0 for what the index cannot hold (fifo, socket,
// device).
func localType(st *unix.Stat_t) byte {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return typeDir
	case unix.S_IFREG:
		return typeFile
	case unix.S_IFLNK:
		return typeSymlink
	}
	return 0
}

func statTypeName(st *unix.Stat_t) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "folder"
	case unix.S_IFREG:
		return "file"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device file"
	}
	return "file of unknown type"
}

// sameTime says whether a file's mtime on disk (ns) is the recorded one, allowing for a file
// system that keeps only microseconds or seconds.
func sameTime(disk, want int64) bool {
	return disk == want || disk == want/1e3*1e3 || disk == want/1e9*1e9
}
