package mover

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/kopia/kopia/repo/blob"

	"planrun.dev/planrun/steps/storage"
)

// The kopia repository's blobs live in a storage.Location (a local folder, a bucket prefix),
// under paths sharded by the first two characters of their ids:
//
//	<root>/p/3/p3a9f…        a pack of file data ("p"), of metadata ("q")
//	<root>/x/n/xn0_5d1…      an index blob of epoch 0 (the epoch manager lists "xn0_")
//	<root>/k/o/kopia.repository
//
// Kopia lists blobs by id prefix ("p", "q", "xn0_", "xe", "s", "_log_", "kopia.repository");
// with this layout a listing walks one folder — "x/n" for "xn0_", never the thousands of
// packs — and every blob sits exactly two folders deep, so that no blob path is ever the folder
// of another (an S3 server that stores objects as files, versitygw, cannot hold an object "p"
// and objects "p/…" at once). A character that cannot name a folder on every store ('.') is
// written %2E; an id of one character goes in the folder "-".

// storageType is the type kopia records in its configuration file for this storage.
const storageType = "planrun"

// StorageConfig is what kopia's configuration file holds for a repository in a
// storage.Location: its URL, without credentials (storage.Display), and a handle to the
// Location this process has open.
//
// Kopia re-creates the storage of a repository it opens from that file, through its registry
// (blob.AddSupportedStorage), and its own providers write their whole configuration there:
// access keys included. Ours writes none: credentials stay inside steps/storage, whose Location
// is already open when a repository is connected (ConnectRepository). The handle names that
// Location in this process's registry of open locations; a configuration file is therefore
// only usable by the process that wrote it, which suits the mover (its work folder is an
// emptyDir, its configuration rewritten on every start).
type StorageConfig struct {
	URL    string `json:"url"`
	Handle string `json:"handle"`
}

// openLocations are the Locations whose repositories kopia may re-open, by handle.
var openLocations sync.Map // handle → storage.Location

func init() {
	blob.AddSupportedStorage(storageType, StorageConfig{}, func(_ context.Context, c *StorageConfig, _ bool) (blob.Storage, error) {
		loc, ok := openLocations.Load(c.Handle)
		if !ok {
			return nil, fmt.Errorf("kopia storage %s (handle %q) is not open in this process: open the repository through mover.ConnectRepository", c.URL, c.Handle)
		}
		return &blobStore{loc: loc.(storage.Location), handle: c.Handle}, nil
	})
}

// blobStore is kopia's blob.Storage over a storage.Location.
//
// Errors: an absent blob matches blob.ErrBlobNotFound and a range outside a blob
// blob.ErrInvalidRange (errors.Is), as kopia expects; every error keeps the location's own
// (*storage.Error), so that its kind (storage.ErrUnreachable, ErrAccessDenied, ErrNoBucket) and
// whether it is worth a retry are still seen through kopia's wrapping.
type blobStore struct {
	blob.DefaultProviderImplementation // GetCapacity (ErrNotAVolume), IsReadOnly (false), FlushCaches (nothing)
	loc                                storage.Location

	// handle is this Location's key in openLocations once ConnectionInfo registered it.
	mu     sync.Mutex
	handle string
	// owner: this store registered the handle, and Close unregisters it. The stores kopia
	// makes from its configuration share it.
	owner bool
}

var _ blob.Storage = (*blobStore)(nil)

// NewBlobStorage is kopia's blob.Storage over loc. Closing it does not close loc, which stays
// the caller's.
func NewBlobStorage(loc storage.Location) blob.Storage { return &blobStore{loc: loc} }

// wholePutMax is the largest blob sent in one request (storage.WholePutter: a PutObject)
// rather than through an upload; kopia's packs are at most 20 MiB by default (maxPackSize).
const wholePutMax = 64 << 20

// blobPath is where the blob id is stored; ids are checked by validID first.
func blobPath(id blob.ID) string {
	s := string(id)
	second := "-"
	if len(s) > 1 {
		second = shard(s[1])
	}
	return shard(s[0]) + "/" + second + "/" + s
}

func shard(c byte) string {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
		return string(c)
	}
	return fmt.Sprintf("%%%02X", c)
}

// validID reports whether id is an id kopia makes: letters, digits, '_', '-', '.' (not first),
// at most 255 bytes, and not the name of the temporary file of a local write.
func validID(id blob.ID) bool {
	s := string(id)
	if s == "" || len(s) > 255 || s[0] == '.' || strings.HasSuffix(s, storage.PartSuffix) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; shard(c) != string(c) && c != '.' {
			return false
		}
	}
	return true
}

func (s *blobStore) checkID(op string, id blob.ID) error {
	if !validID(id) {
		return fmt.Errorf("%s: %s blob %q: not a kopia blob id (letters, digits, '_', '-', '.')", s.loc, op, id)
	}
	return nil
}

// kopiaError maps the location's errors to kopia's: an absent file to blob.ErrBlobNotFound, a
// range outside it to blob.ErrInvalidRange, keeping the original in the chain.
func kopiaError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w (%w)", err, blob.ErrBlobNotFound)
	case errors.Is(err, storage.ErrRange):
		return fmt.Errorf("%w (%w)", err, blob.ErrInvalidRange)
	}
	return err
}

// GetBlob implements blob.Reader: length < 0 reads the whole blob (offset is then ignored, as
// by kopia's own providers), length 0 only checks that the blob exists and holds offset,
// otherwise exactly [offset, offset+length) or blob.ErrInvalidRange.
func (s *blobStore) GetBlob(ctx context.Context, id blob.ID, offset, length int64, output blob.OutputBuffer) error {
	output.Reset()
	if err := s.checkID("read", id); err != nil {
		return err
	}
	return retry(ctx, func() error { return s.getBlob(ctx, blobPath(id), offset, length, output) })
}

func (s *blobStore) getBlob(ctx context.Context, p string, offset, length int64, output blob.OutputBuffer) error {
	output.Reset()
	if length == 0 {
		e, err := storage.StatFile(ctx, s.loc, p)
		if err != nil {
			return kopiaError(err)
		}
		if offset < 0 || offset > e.Size {
			return fmt.Errorf("%s: %s: %w: offset %d of a %d-byte blob", s.loc, p, blob.ErrInvalidRange, offset, e.Size)
		}
		return nil
	}
	var r io.ReadCloser
	var err error
	if length < 0 {
		r, err = s.loc.Open(ctx, p)
	} else {
		r, err = storage.OpenRange(ctx, s.loc, p, offset, length)
	}
	if err != nil {
		return kopiaError(err)
	}
	defer r.Close()
	if _, err := io.Copy(output, r); err != nil {
		output.Reset()
		return midStream{kopiaError(err)}
	}
	if err := blob.EnsureLengthExactly(output.Length(), length); err != nil {
		output.Reset()
		return fmt.Errorf("%s: %s: %w", s.loc, p, err)
	}
	return nil
}

// GetMetadata implements blob.Reader with one request (storage.StatFile).
func (s *blobStore) GetMetadata(ctx context.Context, id blob.ID) (blob.Metadata, error) {
	if err := s.checkID("stat", id); err != nil {
		return blob.Metadata{}, err
	}
	var e storage.Entry
	err := retry(ctx, func() (err error) {
		e, err = storage.StatFile(ctx, s.loc, blobPath(id))
		return kopiaError(err)
	})
	if err != nil {
		return blob.Metadata{}, err
	}
	return blob.Metadata{BlobID: id, Length: e.Size, Timestamp: e.ModTime}, nil
}

// listError marks the callback's own error, so that it is returned as it is and never taken
// for the location's.
type listError struct{ err error }

func (e listError) Error() string { return e.err.Error() }

// ListBlobs implements blob.Lister: it walks the one folder that holds the ids with prefix (the
// whole repository for ""). Files that are not blobs of this layout are skipped.
func (s *blobStore) ListBlobs(ctx context.Context, prefix blob.ID, cb func(blob.Metadata) error) error {
	dir := ""
	for i := 0; i < len(prefix) && i < 2; i++ {
		c := prefix[i]
		if shard(c) != string(c) && (c != '.' || i == 0) {
			return nil // no id has this prefix
		}
		dir = path.Join(dir, shard(c))
	}
	called := false
	walk := func() error {
		return s.loc.Walk(ctx, dir, func(e storage.Entry) error {
			if e.Dir {
				return nil
			}
			id := blob.ID(path.Base(e.Path))
			if !strings.HasPrefix(string(id), string(prefix)) || !validID(id) || blobPath(id) != e.Path {
				return nil
			}
			called = true
			if err := cb(blob.Metadata{BlobID: id, Length: e.Size, Timestamp: e.ModTime}); err != nil {
				return listError{err}
			}
			return nil
		})
	}
	// Again after a transient failure only while the callback has seen nothing: it would
	// see blobs twice.
	err := retry(ctx, func() error {
		if called {
			if err := walk(); err != nil {
				return permanent{err}
			}
			return nil
		}
		return walk()
	})
	var pe permanent
	if errors.As(err, &pe) {
		err = pe.err
	}
	var le listError
	switch {
	case errors.As(err, &le):
		return le.err
	case errors.Is(err, fs.ErrNotExist):
		return nil // no folder: no blob (a local folder; object stores list nothing)
	}
	return err
}

// PutBlob implements blob.Storage. The blob appears whole or not at all: a small blob goes in
// one request (storage.WholePutter), a larger one through Create and Commit, both with its
// sha256, which the location checks (and records on an object).
//
// PutOptions: retention (object lock) is not supported (blob.ErrUnsupportedPutBlobOption), nor
// SetModTime (blob.ErrSetTimeUnsupported); GetModTime is the stored blob's time (one more
// request). DoNotRecreate is honoured by looking before writing: a blob already present is
// refused with blob.ErrBlobAlreadyExists, but two writers racing on an absent blob both
// write it (last one wins). A storage.Location has no conditional write; kopia itself never
// asks for DoNotRecreate (only its tests do), and ConnectRepository does not rely on it (see
// newRepositoryOptions).
func (s *blobStore) PutBlob(ctx context.Context, id blob.ID, data blob.Bytes, opts blob.PutOptions) error {
	if err := s.checkID("write", id); err != nil {
		return err
	}
	switch {
	case opts.HasRetentionOptions():
		return fmt.Errorf("%s: blob retention: %w", s.loc, blob.ErrUnsupportedPutBlobOption)
	case !opts.SetModTime.IsZero():
		return blob.ErrSetTimeUnsupported
	}
	p := blobPath(id)
	if opts.DoNotRecreate {
		err := retry(ctx, func() error {
			_, err := storage.StatFile(ctx, s.loc, p)
			return err
		})
		if err == nil {
			return fmt.Errorf("%s: %s: %w", s.loc, p, blob.ErrBlobAlreadyExists)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := retry(ctx, func() error { return s.put(ctx, p, data) }); err != nil {
		return err
	}
	if opts.GetModTime != nil {
		return retry(ctx, func() error {
			e, err := storage.StatFile(ctx, s.loc, p)
			*opts.GetModTime = e.ModTime
			return kopiaError(err)
		})
	}
	return nil
}

func (s *blobStore) put(ctx context.Context, p string, data blob.Bytes) error {
	// 0600: a local repository is readable by its owner only, as kopia's own.
	opts := storage.CreateOptions{Mode: 0o600}
	if wp, ok := s.loc.(storage.WholePutter); ok && data.Length() <= wholePutMax {
		// One pass over kopia's buffers: copied and hashed while in the CPU's cache.
		var buf bytes.Buffer
		buf.Grow(data.Length())
		h := sha256.New()
		if _, err := data.WriteTo(io.MultiWriter(&buf, h)); err != nil {
			return err
		}
		opts.SHA256 = hex.EncodeToString(h.Sum(nil))
		if sent, err := wp.PutWhole(ctx, p, buf.Bytes(), opts); sent || err != nil {
			return err
		}
	}
	if opts.SHA256 == "" {
		h := sha256.New()
		if _, err := data.WriteTo(h); err != nil {
			return err
		}
		opts.SHA256 = hex.EncodeToString(h.Sum(nil))
	}
	u, err := s.loc.Create(ctx, p, opts)
	if err != nil {
		return err
	}
	if _, err := data.WriteTo(u); err != nil {
		u.Abort()
		return err
	}
	return u.Commit(ctx, opts.SHA256)
}

// DeleteBlob implements blob.Storage: an absent blob is deleted already.
func (s *blobStore) DeleteBlob(ctx context.Context, id blob.ID) error {
	if err := s.checkID("remove", id); err != nil {
		return err
	}
	return retry(ctx, func() error { return s.loc.Remove(ctx, blobPath(id)) })
}

// retryAttempts and retryDelay bound the attempts of an operation that failed in a way
// another attempt may mend, as kopia's own providers retry theirs (repo/blob/retrying): a body
// that broke off or failed its checksum half read, which the SDKs do not retry (they retry a
// request until its answer starts), and the location's other transient errors. Never a
// failure that another attempt cannot mend (not found, access denied, no bucket), nor an
// endpoint that cannot be reached: the SDK has retried the connection already, and the error
// should come without more delay.
var (
	retryAttempts = 4
	retryDelay    = 100 * time.Millisecond
)

// midStream is a failure while a body was read.
type midStream struct{ err error }

func (e midStream) Error() string { return e.err.Error() }
func (e midStream) Unwrap() error { return e.err }

func retryable(err error) bool {
	if errors.As(err, new(midStream)) {
		return true
	}
	var t interface{ Transient() bool }
	return errors.As(err, &t) && t.Transient() && !errors.Is(err, storage.ErrUnreachable)
}

func retry(ctx context.Context, f func() error) error {
	delay := retryDelay
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil || attempt == retryAttempts || !retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// permanent is an error not to retry.
type permanent struct{ err error }

func (e permanent) Error() string   { return e.err.Error() }
func (e permanent) Transient() bool { return false }

// ConnectionInfo implements blob.Reader: the location's URL and this process's handle to it
// (see StorageConfig), never a credential.
func (s *blobStore) ConnectionInfo() blob.ConnectionInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handle == "" {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		s.handle = hex.EncodeToString(b)
		s.owner = true
		openLocations.Store(s.handle, s.loc)
	}
	return blob.ConnectionInfo{Type: storageType, Config: &StorageConfig{URL: storage.Display(s.loc.String()), Handle: s.handle}}
}

// DisplayName implements blob.Reader.
func (s *blobStore) DisplayName() string { return storage.Display(s.loc.String()) }

// Close implements blob.Storage. It leaves the Location open (it is the caller's), and forgets
// the handle this store registered.
func (s *blobStore) Close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.owner {
		openLocations.Delete(s.handle)
		s.owner = false
	}
	return nil
}
