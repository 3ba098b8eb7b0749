package files

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// partSuffix marks the temporary file a copy writes before renaming it into place. The name is
// fixed (not random) so that a copy interrupted and run again reuses it instead of leaving
// leftovers; such files are never listed as content.
const partSuffix = ".planrun-part"

// localFolder is a Location on the local file system. Its root may also be a single file
// (from: /backups/snapshot.db): the root entry is then that file.
type localFolder struct{ root string }

func newLocalFolder(root string) *localFolder { return &localFolder{root: filepath.Clean(root)} }

func (l *localFolder) String() string { return l.root }

func (l *localFolder) abs(p string) string {
	if p == "" {
		return l.root
	}
	return filepath.Join(l.root, filepath.FromSlash(p))
}

func entryOf(p string, fi fs.FileInfo) Entry {
	e := Entry{Path: p, Mode: fi.Mode().Perm(), Dir: fi.IsDir()}
	if !e.Dir {
		e.Size = fi.Size()
	}
	return e
}

func (l *localFolder) Stat(_ context.Context, p string) (Entry, error) {
	fi, err := os.Stat(l.abs(p))
	if err != nil {
		return Entry{}, err
	}
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		return Entry{}, fmt.Errorf("%s is not a regular file or folder", l.abs(p))
	}
	return entryOf(p, fi), nil
}

func (l *localFolder) List(ctx context.Context, dir string) ([]Entry, error) {
	var out []Entry
	base := l.abs(dir)
	// WalkDir visits in lexical order, folders before their contents.
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == base {
			return nil
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), partSuffix) {
			return nil
		}
		fi, err := os.Stat(p) // follows symlinks: a linked file is copied as a file
		if err != nil {
			return err
		}
		if !fi.IsDir() && !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file or folder", p)
		}
		rel, err := filepath.Rel(base, p)
		if err != nil {
			return err
		}
		out = append(out, entryOf(path.Join(dir, filepath.ToSlash(rel)), fi))
		return nil
	})
	return out, err
}

func (l *localFolder) Open(_ context.Context, p string) (io.ReadCloser, error) {
	return os.Open(l.abs(p))
}

func (l *localFolder) MkdirAll(_ context.Context, p string, mode fs.FileMode) error {
	return os.MkdirAll(l.abs(p), mode)
}

// SHA256 implements Summer by reading the file.
func (l *localFolder) SHA256(_ context.Context, p string) (string, error) {
	return fileSHA256(l.abs(p))
}

func fileSHA256(name string) (string, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func (l *localFolder) Create(_ context.Context, p string, mode fs.FileMode) (Upload, error) {
	final := l.abs(p)
	if p == "" {
		return nil, errors.New("cannot write the root of a folder location")
	}
	dir := filepath.Dir(final)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	part := filepath.Join(dir, "."+filepath.Base(final)+partSuffix)
	// 0600 while writing, whatever the final mode: a secret is never readable by others, even
	// half written.
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if mode == 0 {
		mode = 0o644
	}
	return &localUpload{f: f, part: part, final: final, mode: mode}, nil
}

type localUpload struct {
	f           *os.File
	part, final string
	mode        fs.FileMode
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
	err := u.f.Chmod(u.mode)
	if err == nil {
		err = u.f.Sync()
	}
	if cerr := u.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(u.part)
		return err
	}
	got, err := fileSHA256(u.part)
	if err != nil {
		_ = os.Remove(u.part)
		return err
	}
	if got != want {
		_ = os.Remove(u.part)
		return fmt.Errorf("written file has sha256 %s, source has %s", got, want)
	}
	if err := os.Rename(u.part, u.final); err != nil {
		_ = os.Remove(u.part)
		return err
	}
	u.done = true
	return syncDir(filepath.Dir(u.final))
}

func (u *localUpload) Abort() error {
	if u.done {
		return nil
	}
	u.done = true
	_ = u.f.Close()
	if err := os.Remove(u.part); err != nil && !errors.Is(err, fs.ErrNotExist) {
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
