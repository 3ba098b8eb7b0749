package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"sort"
	"strings"
	"sync"
)

// Entry is a file or folder of a Location, named by its slash-separated path relative to the
// location's root ("" is the root itself).
type Entry struct {
	Path string
	Size int64
	// Mode holds the permission bits, or 0 when the location has none (an object store).
	Mode fs.FileMode
	Dir  bool
}

// Location is one end of a copy: a local folder now, an object store (bucket + prefix) later.
// The copy logic only talks to this interface, so adding a store means implementing it and
// registering its URL scheme with RegisterScheme; nothing else changes.
type Location interface {
	// String names the location in messages and outputs.
	String() string
	// Stat describes path; an absent path gives an error matching fs.ErrNotExist.
	Stat(ctx context.Context, path string) (Entry, error)
	// List lists every entry under the folder path, recursively, sorted by path, folders
	// before their contents. Leftover temporary files of interrupted copies are not listed.
	List(ctx context.Context, path string) ([]Entry, error)
	// Open reads the file at path.
	Open(ctx context.Context, path string) (io.ReadCloser, error)
	// MkdirAll makes folder path and its parents (a no-op for stores without folders).
	MkdirAll(ctx context.Context, path string, mode fs.FileMode) error
	// Create starts writing the file at path. Nothing is visible under path until Commit
	// succeeds, so an interrupted copy never leaves a partial file that looks complete.
	Create(ctx context.Context, path string, mode fs.FileMode) (Upload, error)
}

// Upload is a file being written to a Location.
type Upload interface {
	io.Writer
	// Commit makes the file durable and visible under its final path, after checking that
	// what the location stored has the sha256 (hex) the caller computed from the source.
	Commit(ctx context.Context, sha256Hex string) error
	// Abort discards the upload; after Commit it does nothing.
	Abort() error
}

// Summer is implemented by locations that can give a file's sha256 (hex) more cheaply than
// reading it back (an object store keeping it in the object's metadata). The copy reads the
// file otherwise.
type Summer interface {
	SHA256(ctx context.Context, path string) (string, error)
}

// Opener makes a Location from a parsed URL of its scheme.
type Opener func(u *url.URL) (Location, error)

var schemes = struct {
	sync.RWMutex
	m map[string]Opener
}{m: map[string]Opener{"file": openFileURL}}

// RegisterScheme makes a URL scheme (s3, gs...) usable in from: and to:. Registering a scheme
// twice panics.
func RegisterScheme(scheme string, open Opener) {
	schemes.Lock()
	defer schemes.Unlock()
	if _, dup := schemes.m[scheme]; dup {
		panic(fmt.Sprintf("files.RegisterScheme: scheme %q registered twice", scheme))
	}
	schemes.m[scheme] = open
}

func schemeNames() string {
	schemes.RLock()
	defer schemes.RUnlock()
	names := make([]string, 0, len(schemes.m))
	for n := range schemes.m {
		names = append(names, n+"://")
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// errUnsupported is returned for a URL whose scheme has no implementation.
var errUnsupported = errors.New("not supported yet")

// OpenLocation parses s, a plain path or a URL (file:///backups), into a Location.
func OpenLocation(s string) (Location, error) {
	if s == "" {
		return nil, errors.New("empty location")
	}
	i := strings.Index(s, "://")
	if i < 0 {
		return newLocalFolder(s), nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a valid URL: %v", s, err)
	}
	scheme := strings.ToLower(u.Scheme)
	schemes.RLock()
	open, ok := schemes.m[scheme]
	schemes.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%q: scheme %s:// is %w (supported: a plain path, %s)", s, scheme, errUnsupported, schemeNames())
	}
	return open(u)
}

func openFileURL(u *url.URL) (Location, error) {
	if u.Host != "" && u.Host != "localhost" {
		return nil, fmt.Errorf("%q: a file:// URL names a local path (file:///path), not host %q", u.String(), u.Host)
	}
	if u.Path == "" {
		return nil, fmt.Errorf("%q: no path", u.String())
	}
	return newLocalFolder(u.Path), nil
}
