package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// FileStater is implemented by locations that describe a file in one request: Stat also
// answers for folders, which an object store only knows by listing, so that asking about an
// absent object costs a HEAD and a LIST. Code that only ever stores files (a repository of
// blobs) asks this instead.
type FileStater interface {
	// StatFile describes the file at path. An absent path, or a folder, gives an error
	// matching fs.ErrNotExist. (On S3 a missing bucket does too: a HEAD answer has no body
	// to tell them apart. Open says which.)
	StatFile(ctx context.Context, path string) (Entry, error)
}

var (
	_ FileStater = (*localFolder)(nil)
	_ FileStater = (*bucketLocation)(nil)
)

// StatFile describes the file at path through l's FileStater, or through Stat (a folder is
// then reported as absent).
func StatFile(ctx context.Context, l Location, path string) (Entry, error) {
	if fsr, ok := l.(FileStater); ok {
		return fsr.StatFile(ctx, path)
	}
	e, err := l.Stat(ctx, path)
	if err == nil && e.Dir {
		return Entry{}, &Error{URL: l.String(), Op: "stat", Path: path, Kind: fs.ErrNotExist, Detail: "a folder, not a file"}
	}
	return e, err
}

// StatFile implements FileStater. A path below a file (a/file/x) is absent too.
func (l *localFolder) StatFile(ctx context.Context, p string) (Entry, error) {
	e, err := l.Stat(ctx, p)
	switch {
	case err == nil && e.Dir:
		return Entry{}, &os.PathError{Op: "stat", Path: l.LocalPath(p), Err: fmt.Errorf("%w: a folder, not a file", fs.ErrNotExist)}
	case errors.Is(err, syscall.ENOTDIR):
		return Entry{}, &os.PathError{Op: "stat", Path: l.LocalPath(p), Err: fmt.Errorf("%w: below a file", fs.ErrNotExist)}
	}
	return e, err
}

// StatFile implements FileStater with one HEAD request.
func (l *bucketLocation) StatFile(ctx context.Context, p string) (Entry, error) {
	k, err := l.key(p)
	if err != nil {
		return Entry{}, err
	}
	if k == "" {
		return Entry{}, &Error{URL: l.display, Op: "stat", Kind: fs.ErrNotExist, Detail: "the root of a bucket is not an object"}
	}
	a, err := l.b.Attributes(ctx, k)
	if err != nil {
		return Entry{}, l.fail("stat", p, err)
	}
	e := l.entry(p, a.Size, a.Metadata)
	e.ModTime = a.ModTime
	return e, nil
}
