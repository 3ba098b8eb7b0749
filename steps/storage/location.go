// Package storage is where planrun reads and writes data outside the Kubernetes API: backup
// folders, etcd snapshots, copied buckets. A location is a URL — a plain path or file:///… (a
// local folder), s3://bucket/prefix, gs://bucket/prefix, azblob://container/prefix — opened
// through one door, Open, into a Location. Steps only ever talk to Location; the providers
// (gocloud.dev/blob over the official SDKs) stay inside this package.
package storage

import (
	"context"
	"io"
	"io/fs"
	"time"
)

// Entry is a file of a Location (an object of a bucket), or a folder of a local one, named by
// its slash-separated path relative to the location's root ("" is the root itself).
type Entry struct {
	Path string
	Size int64
	// Mode holds the permission bits: a local file's, or those recorded when planrun wrote an
	// object; 0 when unknown.
	Mode fs.FileMode
	Dir  bool
	// SHA256 is the object's sha256 (hex) when the location knows it without reading the
	// object (recorded in its metadata when planrun wrote it); "" otherwise.
	SHA256 string
	// ModTime is when the file was last written: a local file's modification time, an
	// object's Last-Modified (the service's clock, at the precision it keeps). Zero for the
	// folders of object stores.
	ModTime time.Time
}

// Location is a local folder or a bucket prefix. Paths given to its methods are relative,
// slash-separated, and must pass safepath.Rel; "" is the root.
//
// The root may also be a single file (to: /backups/snapshot.db, s3://b/snap.db): Stat("") then
// describes that file, and Open("") reads it.
type Location interface {
	// String names the location in messages and outputs. It never holds a credential.
	String() string
	// Stat describes path; an absent path gives an error matching fs.ErrNotExist. A bucket
	// prefix under which objects exist is a folder.
	Stat(ctx context.Context, path string) (Entry, error)
	// Walk calls fn for every entry under the folder dir, recursively, in path order (folders
	// before their contents; object stores have no folders). Listings are paged: memory does
	// not grow with the number of entries. Leftovers of interrupted writes are not listed.
	Walk(ctx context.Context, dir string, fn func(Entry) error) error
	// Open reads the file at path.
	Open(ctx context.Context, path string) (io.ReadCloser, error)
	// Create starts writing the file at path. Nothing is visible under path until Commit
	// succeeds, so an interrupted write never leaves a partial file that looks complete.
	Create(ctx context.Context, path string, opts CreateOptions) (Upload, error)
	// MkdirAll makes folder path and its parents (a no-op for object stores).
	MkdirAll(ctx context.Context, path string, mode fs.FileMode) error
	// Remove removes the file at path; an absent file is not an error.
	Remove(ctx context.Context, path string) error
	// RemoveAll removes everything under the folder dir (dir itself too, where folders exist).
	RemoveAll(ctx context.Context, dir string) error
	// Close releases the location's clients.
	Close() error
}

// CreateOptions say how a file is written.
type CreateOptions struct {
	// Mode is the file's permission bits (0: 0644). Object stores record it in the object's
	// metadata, so that a backup of Secrets copied through a bucket is 0600 again when it lands
	// in a folder.
	Mode fs.FileMode
	// SHA256 is the sha256 (hex) of the content when the writer knows it before writing (a copy
	// from a source that has it): an object store records it in the object's metadata, and
	// Commit refuses content with another sum. "" when the sum is only known at the end.
	SHA256 string
}

// Upload is a file being written to a Location.
type Upload interface {
	io.Writer
	// Commit makes the file durable and visible under its final path, after checking that
	// what was written has the sha256 (hex) the caller computed from its source. On error the
	// upload is discarded.
	Commit(ctx context.Context, sha256Hex string) error
	// Abort discards the upload; after Commit it does nothing.
	Abort() error
}

// ServerCopier is implemented by locations that can copy a file from another location of the
// same service without the bytes passing through planrun (S3 CopyObject). CopyFrom reports
// false, with no error, when it cannot copy from src (another service, an object too large for
// one server-side copy): the caller streams the file instead.
type ServerCopier interface {
	CopyFrom(ctx context.Context, src Location, srcPath, dstPath string, e Entry) (bool, error)
}

// LocalFile is implemented by local folders: the file system path of path, for code that needs
// a real file (bbolt reading an etcd snapshot).
type LocalFile interface {
	LocalPath(path string) string
}
