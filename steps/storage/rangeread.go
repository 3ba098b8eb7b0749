package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"gocloud.dev/gcerrors"
)

// ErrRange: a ranged read of bytes that the file does not have (an offset past its end, a
// length that runs over it, a negative offset).
var ErrRange = errors.New("range outside the file")

// RangeReader is implemented by locations that read part of a file without reading what comes
// before it (a local file's seek, an HTTP Range request): a repository reads one blob out of a
// large pack this way.
type RangeReader interface {
	// OpenRange reads length bytes of the file at path from offset; a negative length reads
	// to the end. A range that the file does not hold whole gives an error matching ErrRange,
	// never fewer bytes; an absent file one matching fs.ErrNotExist.
	OpenRange(ctx context.Context, path string, offset, length int64) (io.ReadCloser, error)
}

var (
	_ RangeReader = (*localFolder)(nil)
	_ RangeReader = (*bucketLocation)(nil)
)

// OpenRange reads part of the file at path through l's RangeReader, or, for a location
// without one, by reading and dropping the bytes before offset.
func OpenRange(ctx context.Context, l Location, path string, offset, length int64) (io.ReadCloser, error) {
	if rr, ok := l.(RangeReader); ok {
		return rr.OpenRange(ctx, path, offset, length)
	}
	if offset < 0 {
		return nil, rangeError(l.String(), path, offset, length, -1)
	}
	e, err := StatFile(ctx, l, path)
	if err != nil {
		return nil, err
	}
	if !inRange(offset, length, e.Size) {
		return nil, rangeError(l.String(), path, offset, length, e.Size)
	}
	r, err := l.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, r, offset); err != nil {
		r.Close()
		return nil, err
	}
	if length < 0 {
		return r, nil
	}
	return readCloser{io.LimitReader(r, length), r}, nil
}

// inRange reports whether a file of size bytes holds the range.
func inRange(offset, length, size int64) bool {
	if offset < 0 || offset > size {
		return false
	}
	return length < 0 || length <= size-offset
}

func rangeError(url, path string, offset, length, size int64) error {
	want := fmt.Sprintf("bytes %d to the end", offset)
	if length >= 0 {
		want = fmt.Sprintf("%d bytes at offset %d", length, offset)
	}
	detail := want
	if size >= 0 {
		detail += fmt.Sprintf(" of a %d-byte file", size)
	}
	return &Error{URL: url, Op: "read", Path: path, Kind: ErrRange, Detail: detail}
}

type readCloser struct {
	io.Reader
	io.Closer
}

// OpenRange implements RangeReader with a section of the file.
func (l *localFolder) OpenRange(ctx context.Context, p string, offset, length int64) (io.ReadCloser, error) {
	r, err := l.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	f := r.(*os.File)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !inRange(offset, length, fi.Size()) {
		f.Close()
		return nil, rangeError(l.root, p, offset, length, fi.Size())
	}
	if length < 0 {
		length = fi.Size() - offset
	}
	return readCloser{io.NewSectionReader(f, offset, length), f}, nil
}

// OpenRange implements RangeReader with a ranged GET. The service answers a range that runs
// past the end with the bytes it has: the object's size, which comes with the answer, tells
// that case apart. A range that starts at or past the end is refused by the service; the
// object's size is then asked for, to say why.
func (l *bucketLocation) OpenRange(ctx context.Context, p string, offset, length int64) (io.ReadCloser, error) {
	k, err := l.key(p)
	if err != nil {
		return nil, err
	}
	if k == "" {
		return nil, &Error{URL: l.display, Op: "read", Kind: ErrNotRegular, Detail: "the root of a bucket is not an object"}
	}
	if offset < 0 {
		return nil, rangeError(l.display, p, offset, length, -1)
	}
	if length == 0 {
		// S3 has no empty range: the object's existence and size say all.
		a, err := l.b.Attributes(ctx, k)
		if err != nil {
			return nil, l.fail("read", p, err)
		}
		if offset > a.Size {
			return nil, rangeError(l.display, p, offset, length, a.Size)
		}
		return io.NopCloser(eofReader{}), nil
	}
	r, err := l.b.NewRangeReader(ctx, k, offset, length, nil)
	if err != nil {
		if gcerrors.Code(err) != gcerrors.NotFound {
			// A refused range (416): the size says whether it was outside the object, or
			// empty at its very end (which S3 cannot express as a range).
			if a, aerr := l.b.Attributes(ctx, k); aerr == nil {
				if !inRange(offset, length, a.Size) {
					return nil, rangeError(l.display, p, offset, length, a.Size)
				}
				if offset == a.Size {
					return io.NopCloser(eofReader{}), nil
				}
			}
		}
		return nil, l.fail("read", p, err)
	}
	if !inRange(offset, length, r.Size()) {
		r.Close()
		return nil, rangeError(l.display, p, offset, length, r.Size())
	}
	return &readErrors{ReadCloser: &objectReader{Reader: r}, l: l, p: p}, nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
