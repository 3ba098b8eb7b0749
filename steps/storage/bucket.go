package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"strconv"
	"strings"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"planrun.dev/planrun/internal/parallel"
	"planrun.dev/planrun/internal/safepath"
)

// Metadata keys planrun writes on the objects it stores.
const (
	metaSHA256 = "sha256"
	metaMode   = "mode"
)

// defaultPartSize is the size of the parts of a multipart upload, and what one upload holds in
// memory: large enough for few requests per object, small enough that many uploads in parallel
// stay flat in memory.
const defaultPartSize = 8 << 20

// bucketLocation is a Location on an object store: a prefix in a bucket, through
// gocloud.dev/blob. Everything provider-specific (clients, credentials, server-side copies,
// error codes) comes in through the provider's hooks.
type bucketLocation struct {
	display string // the URL, redacted
	bucket  string
	prefix  string // "" or "a/b"
	b       *blob.Bucket
	// service identifies the endpoint and credentials: two locations with the same service
	// can copy objects server-side.
	service  string
	partSize int
	hooks    providerHooks
}

// providerHooks are what differs between providers.
type providerHooks struct {
	// readerSHA256 returns the sha256 metadata of an object being read, when the provider's
	// reader exposes it (an S3 GET returns the metadata with the body).
	readerSHA256 func(r *blob.Reader) string
	// copyAcross copies srcKey of bucket srcBucket to dstKey of this bucket on the same
	// service; nil when the provider cannot.
	copyAcross func(ctx context.Context, srcBucket, srcKey, dstKey string) error
	// putObject stores body at key in one request (PutWhole); nil when the provider has no
	// such shortcut.
	putObject func(ctx context.Context, key string, body []byte, metadata map[string]string) error
	// maxServerCopy is the largest object one server-side copy takes (0: no limit).
	maxServerCopy int64
	// detail classifies a provider error: its kind (ErrNoBucket, ErrAccessDenied...) and a
	// one-line reason (code and message).
	detail func(b *blob.Bucket, err error) (kind error, reason string)
}

var (
	_ Location     = (*bucketLocation)(nil)
	_ ServerCopier = (*bucketLocation)(nil)
)

func (l *bucketLocation) String() string { return l.display }

func (l *bucketLocation) Close() error { return l.b.Close() }

// key is the object key of path p.
func (l *bucketLocation) key(p string) (string, error) {
	if p == "" {
		return l.prefix, nil
	}
	if err := safepath.Rel("path", p); err != nil {
		return "", err
	}
	if l.prefix == "" {
		return p, nil
	}
	return l.prefix + "/" + p, nil
}

// fail turns a provider error into an *Error naming the location, the path and the reason.
func (l *bucketLocation) fail(op, p string, err error) error {
	if err == nil {
		return nil
	}
	var se *Error
	if errors.As(err, &se) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	e := &Error{URL: l.display, Op: op, Path: p, Err: err}
	var kind error
	reason := ""
	if l.hooks.detail != nil {
		kind, reason = l.hooks.detail(l.b, err)
	}
	switch {
	case kind != nil:
	case gcerrors.Code(err) == gcerrors.NotFound:
		kind = fs.ErrNotExist
	case gcerrors.Code(err) == gcerrors.PermissionDenied:
		kind = ErrAccessDenied
	}
	e.Kind, e.Detail = kind, reason
	switch gcerrors.Code(err) {
	case gcerrors.ResourceExhausted, gcerrors.Internal, gcerrors.Unknown, gcerrors.DeadlineExceeded:
		e.Retry = kind == nil || kind == ErrUnreachable
	}
	if kind == ErrUnreachable {
		e.Retry = true
	}
	if e.Detail == "" && e.Kind == nil {
		e.Detail = lastLine(err)
	}
	return e
}

// lastLine keeps the end of a long SDK error chain, which says what actually went wrong.
func lastLine(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ", "); i >= 0 && len(s)-i < 200 {
		return s[i+2:]
	}
	return s
}

func (l *bucketLocation) Stat(ctx context.Context, p string) (Entry, error) {
	k, err := l.key(p)
	if err != nil {
		return Entry{}, err
	}
	if k != "" {
		a, err := l.b.Attributes(ctx, k)
		if err == nil {
			e := l.entry(p, a.Size, a.Metadata)
			e.ModTime = a.ModTime
			return e, nil
		}
		if gcerrors.Code(err) != gcerrors.NotFound {
			return Entry{}, l.fail("stat", p, err)
		}
	}
	// Not an object: a folder if objects exist below it. This listing also tells a missing
	// bucket from a missing object.
	opts := &blob.ListOptions{}
	if k != "" {
		opts.Prefix = k + "/"
	}
	objs, _, err := l.b.ListPage(ctx, blob.FirstPageToken, 1, opts)
	if err != nil {
		return Entry{}, l.fail("stat", p, err)
	}
	if len(objs) == 0 && k != "" {
		return Entry{}, &Error{URL: l.display, Op: "stat", Path: p, Kind: fs.ErrNotExist}
	}
	return Entry{Path: p, Dir: true}, nil
}

func (l *bucketLocation) entry(p string, size int64, md map[string]string) Entry {
	e := Entry{Path: p, Size: size, SHA256: md[metaSHA256]}
	if m, err := strconv.ParseUint(md[metaMode], 8, 32); err == nil {
		e.Mode = fs.FileMode(m).Perm()
	}
	return e
}

func (l *bucketLocation) Walk(ctx context.Context, dir string, fn func(Entry) error) error {
	k, err := l.key(dir)
	if err != nil {
		return err
	}
	prefix := ""
	if k != "" {
		prefix = k + "/"
	}
	it := l.b.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return l.fail("list", dir, err)
		}
		// A key ending in "/" is a folder marker some consoles create, not content.
		if obj.IsDir || strings.HasSuffix(obj.Key, "/") {
			continue
		}
		rel := strings.TrimPrefix(obj.Key, prefix)
		if dir != "" {
			rel = dir + "/" + rel
		}
		if err := fn(Entry{Path: rel, Size: obj.Size, ModTime: obj.ModTime}); err != nil {
			return err
		}
	}
}

// objectReader is an object being read; it knows the object's sha256 when the object's
// metadata has it.
type objectReader struct {
	*blob.Reader
	sum string
}

// SHA256 implements KnownSHA256.
func (r *objectReader) SHA256() string { return r.sum }

// KnownSHA256 is implemented by readers that know the sha256 their content should have before
// it is read (an object planrun wrote): a copy records it on the destination before the bytes
// arrive, and checks the bytes against it.
type KnownSHA256 interface{ SHA256() string }

func (l *bucketLocation) Open(ctx context.Context, p string) (io.ReadCloser, error) {
	k, err := l.key(p)
	if err != nil {
		return nil, err
	}
	if k == "" {
		return nil, &Error{URL: l.display, Op: "read", Kind: ErrNotRegular, Detail: "the root of a bucket is not an object"}
	}
	r, err := l.b.NewReader(ctx, k, nil)
	if err != nil {
		return nil, l.fail("read", p, err)
	}
	or := &objectReader{Reader: r}
	if l.hooks.readerSHA256 != nil {
		or.sum = l.hooks.readerSHA256(r)
	}
	return &readErrors{ReadCloser: or, l: l, p: p}, nil
}

// readErrors names the location in errors that happen mid-stream (a connection dropped).
type readErrors struct {
	io.ReadCloser
	l *bucketLocation
	p string
}

func (r *readErrors) Read(b []byte) (int, error) {
	n, err := r.ReadCloser.Read(b)
	if err != nil && err != io.EOF {
		err = r.l.fail("read", r.p, err)
	}
	return n, err
}

func (r *readErrors) SHA256() string { return r.ReadCloser.(*objectReader).sum }

func (l *bucketLocation) Create(ctx context.Context, p string, opts CreateOptions) (Upload, error) {
	k, err := l.key(p)
	if err != nil {
		return nil, err
	}
	if k == "" {
		return nil, &Error{URL: l.display, Op: "write", Detail: "the root of a bucket is not an object: give a prefix"}
	}
	md := objectMetadata(opts)
	// Cancelling wctx before Close aborts the upload (a multipart upload is aborted, a single
	// PUT never sent): the object never appears half written.
	wctx, cancel := context.WithCancel(ctx)
	w, err := l.b.NewWriter(wctx, k, &blob.WriterOptions{
		BufferSize:                  l.partSize,
		ContentType:                 "application/octet-stream",
		DisableContentTypeDetection: true,
		Metadata:                    md,
	})
	if err != nil {
		cancel()
		return nil, l.fail("write", p, err)
	}
	return &objectUpload{l: l, p: p, w: w, cancel: cancel, h: sha256.New(), want: opts.SHA256}, nil
}

type objectUpload struct {
	l      *bucketLocation
	p      string
	w      *blob.Writer
	cancel context.CancelFunc
	h      hash.Hash
	want   string
	n      int64
	done   bool
}

func (u *objectUpload) Write(b []byte) (int, error) {
	n, err := u.w.Write(b)
	u.h.Write(b[:n])
	u.n += int64(n)
	if err != nil {
		return n, u.l.fail("write", u.p, err)
	}
	return n, nil
}

// Commit completes the upload only when what was sent has the sum the caller computed from its
// source (and the one announced in CreateOptions): otherwise the upload is aborted and no
// object appears.
func (u *objectUpload) Commit(_ context.Context, want string) error {
	if u.done {
		return nil
	}
	u.done = true
	got := hex.EncodeToString(u.h.Sum(nil))
	if got != want || (u.want != "" && u.want != want) {
		u.cancel()
		_ = u.w.Close()
		expected := want
		if u.want != "" && u.want != want {
			expected = u.want
		}
		return &Error{URL: u.l.display, Op: "write", Path: u.p, Kind: ErrChecksum, Detail: fmt.Sprintf("sent %d bytes with sha256 %s, expected %s", u.n, got, expected)}
	}
	err := u.w.Close()
	u.cancel()
	return u.l.fail("write", u.p, err)
}

func (u *objectUpload) Abort() error {
	if u.done {
		return nil
	}
	u.done = true
	u.cancel()
	_ = u.w.Close() // an error is expected: the upload was cancelled
	return nil
}

func (l *bucketLocation) MkdirAll(context.Context, string, fs.FileMode) error { return nil }

func (l *bucketLocation) Remove(ctx context.Context, p string) error {
	k, err := l.key(p)
	if err != nil {
		return err
	}
	if k == "" {
		return nil
	}
	if err := l.b.Delete(ctx, k); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return l.fail("remove", p, err)
	}
	return nil
}

// RemoveAll deletes every object under dir, in parallel: object stores delete one key per
// request.
func (l *bucketLocation) RemoveAll(ctx context.Context, dir string) error {
	var keys []string
	if err := l.Walk(ctx, dir, func(e Entry) error {
		keys = append(keys, e.Path)
		return nil
	}); err != nil {
		return err
	}
	if dir != "" {
		keys = append(keys, dir) // an object at the folder's own key
	}
	return parallel.Each(ctx, 16, keys, func(ctx context.Context, p string) error { return l.Remove(ctx, p) })
}

// CopyFrom implements ServerCopier: within one bucket, or across buckets of one service when
// the provider can, the service copies the object (metadata included) without the bytes
// passing through planrun.
func (l *bucketLocation) CopyFrom(ctx context.Context, src Location, srcPath, dstPath string, e Entry) (bool, error) {
	s, ok := src.(*bucketLocation)
	if !ok || s.service != l.service {
		return false, nil
	}
	if l.hooks.maxServerCopy > 0 && e.Size > l.hooks.maxServerCopy {
		return false, nil
	}
	sk, err := s.key(srcPath)
	if err != nil {
		return false, err
	}
	dk, err := l.key(dstPath)
	if err != nil {
		return false, err
	}
	switch {
	case s.bucket == l.bucket:
		err = l.b.Copy(ctx, dk, sk, nil)
	case l.hooks.copyAcross != nil:
		err = l.hooks.copyAcross(ctx, s.bucket, sk, dk)
	default:
		return false, nil
	}
	if err != nil {
		return false, l.fail("copy", dstPath, err)
	}
	return true, nil
}
