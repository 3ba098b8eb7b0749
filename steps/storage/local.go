package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"planrun.dev/planrun/internal/filehash"
	"planrun.dev/planrun/internal/safepath"
)

// PartSuffix marks the temporary file a write goes to before it is renamed into place. The name
// is fixed (not random) so that a write interrupted and run again reuses it instead of leaving
// leftovers; such files are never listed as content.
const PartSuffix = ".planrun-part"

// localFolder is a Location on the local file system. Its root may also be a single file
// (from: /backups/snapshot.db): the root entry is then that file.
type localFolder struct{ root string }

var (
	_ Location  = (*localFolder)(nil)
	_ LocalFile = (*localFolder)(nil)
)

// OpenLocal is the Location of a local folder (or file).
func OpenLocal(root string) Location { return &localFolder{root: filepath.Clean(root)} }

func (l *localFolder) String() string { return l.root }

func (l *localFolder) Close() error { return nil }

// abs is the file system path of p, which must be "" (the root) or pass safepath.Rel: a name
// read from a manifest or a bucket listing never leads outside the folder.
func (l *localFolder) abs(p string) (string, error) {
	if p == "" {
		return l.root, nil
	}
	return safepath.JoinRel(l.root, "path", p)
}

// LocalPath implements LocalFile.
func (l *localFolder) LocalPath(p string) string {
	if p == "" {
		return l.root
	}
	return filepath.Join(l.root, filepath.FromSlash(p))
}

func entryOf(p string, fi fs.FileInfo) Entry {
	e := Entry{Path: p, Mode: fi.Mode().Perm(), Dir: fi.IsDir(), ModTime: fi.ModTime()}
	if !e.Dir {
		e.Size = fi.Size()
	}
	return e
}

func (l *localFolder) Stat(_ context.Context, p string) (Entry, error) {
	name, err := l.abs(p)
	if err != nil {
		return Entry{}, err
	}
	fi, err := os.Stat(name)
	if err != nil {
		return Entry{}, err
	}
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		return Entry{}, fmt.Errorf("%s: %w (%s)", name, ErrNotRegular, fi.Mode().Type())
	}
	return entryOf(p, fi), nil
}

func (l *localFolder) Walk(ctx context.Context, dir string, fn func(Entry) error) error {
	base, err := l.abs(dir)
	if err != nil {
		return err
	}
	// WalkDir visits in lexical order, folders before their contents.
	return filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		// What another writer removes while the folder is listed is left out, as an object
		// store's listing would; only a missing dir itself is an error.
		gone := func(err error) bool { return p != base && errors.Is(err, fs.ErrNotExist) }
		if err != nil {
			if gone(err) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == base {
			return nil
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), PartSuffix) {
			return nil
		}
		fi, err := os.Stat(p) // follows symlinks: a linked file is copied as a file
		if err != nil {
			// Removed, not a dangling symlink (which stays an error).
			if _, lerr := os.Lstat(p); gone(lerr) {
				return nil
			}
			return err
		}
		if !fi.IsDir() && !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: %w (%s)", p, ErrNotRegular, fi.Mode().Type())
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		return fn(entryOf(path.Join(dir, filepath.ToSlash(rel)), fi))
	})
}

func (l *localFolder) Open(_ context.Context, p string) (io.ReadCloser, error) {
	name, err := l.abs(p)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(name) // follows symlinks, as Walk does
	if err != nil {
		return nil, err
	}
	// Never read a FIFO or a device as if it were a file (it would block or never end).
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s: %w (%s)", name, ErrNotRegular, fi.Mode().Type())
		}
		return nil, err
	}
	return f, nil
}

func (l *localFolder) MkdirAll(_ context.Context, p string, mode fs.FileMode) error {
	name, err := l.abs(p)
	if err != nil {
		return err
	}
	return os.MkdirAll(name, mode)
}

func (l *localFolder) Remove(_ context.Context, p string) error {
	name, err := l.abs(p)
	if err != nil {
		return err
	}
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (l *localFolder) RemoveAll(_ context.Context, p string) error {
	name, err := l.abs(p)
	if err != nil {
		return err
	}
	return os.RemoveAll(name)
}

func (l *localFolder) Create(_ context.Context, p string, opts CreateOptions) (Upload, error) {
	if p == "" && l.root == "/" {
		return nil, errors.New("cannot write the root folder")
	}
	final, err := l.abs(p)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(final); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%s is a folder, want a file path", final)
	}
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	part := filepath.Join(dir, "."+filepath.Base(final)+PartSuffix)
	f, err := openPart(part)
	if err != nil {
		return nil, err
	}
	mode := opts.Mode
	if mode == 0 {
		mode = 0o644
	}
	return &localUpload{f: f, part: part, final: final, mode: mode, want: opts.SHA256}, nil
}

// openPart opens the temporary file of a write, empty and locked (flock) against the other
// writers of the same path, in this process or another: two writers of one fixed part file
// would otherwise truncate and interleave each other's bytes, and one could truncate the file
// the other has just renamed into place. The lock is held until the part is renamed or removed
// (Commit, Abort); a writer that waited for it finds the part it opened gone or renamed, and
// opens the new one. The kernel drops the lock of a process that dies, so a leftover part never
// blocks anyone.
func openPart(part string) (*os.File, error) {
	for {
		// 0600 while writing, whatever the final mode: a secret is never readable by others,
		// even half written. O_NOFOLLOW: a part planted as a symlink is never written through.
		f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: lock: %w", part, err)
		}
		held, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		now, err := os.Lstat(part)
		if err == nil && os.SameFile(held, now) {
			if err := f.Truncate(0); err != nil {
				f.Close()
				return nil, err
			}
			return f, nil
		}
		f.Close()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
}

type localUpload struct {
	f           *os.File
	part, final string
	mode        fs.FileMode
	want        string // known before writing, or ""
	done        bool
}

func (u *localUpload) Write(b []byte) (int, error) { return u.f.Write(b) }

// Commit syncs the temporary file, reads it back to check its sha256 — what is on the
// destination, not only what was sent, so that a short or corrupted write on a network or FUSE
// file system is caught before the file takes its final name — then renames it into place and
// syncs the folder so that the rename survives a crash.
func (u *localUpload) Commit(_ context.Context, want string) error {
	if u.done {
		return nil
	}
	u.done = true
	// The part is removed (or renamed) before it is closed: closing drops the lock that keeps
	// other writers of this path out (openPart).
	fail := func(err error) error {
		_ = os.Remove(u.part)
		_ = u.f.Close()
		return err
	}
	if u.want != "" && u.want != want {
		return fail(fmt.Errorf("%w: written content has sha256 %s, expected %s", ErrChecksum, want, u.want))
	}
	if err := u.f.Chmod(u.mode); err != nil {
		return fail(err)
	}
	if err := u.f.Sync(); err != nil {
		return fail(err)
	}
	got, err := filehash.SHA256(u.part)
	if err != nil {
		return fail(err)
	}
	if got != want {
		return fail(fmt.Errorf("%w: written file has sha256 %s, source has %s", ErrChecksum, got, want))
	}
	if err := os.Rename(u.part, u.final); err != nil {
		return fail(err)
	}
	if err := u.f.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(u.final))
}

func (u *localUpload) Abort() error {
	if u.done {
		return nil
	}
	u.done = true
	err := os.Remove(u.part)
	_ = u.f.Close()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
