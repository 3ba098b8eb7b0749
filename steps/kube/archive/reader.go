package archive

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"planrun.dev/planrun/steps/storage"
)

// ErrDamaged is matched (errors.Is) by the error for a file of a backup whose stored bytes are
// not those its manifest describes (size, sha256, object count, or a compressed stream that does
// not decode).
var ErrDamaged = errors.New("damaged backup file")

// DamagedError is a file of a backup that is not what its manifest says.
type DamagedError struct {
	Backup string // the location, without credentials
	Path   string
	Reason string // "sha256 …, the manifest says …"
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("backup %s: %s: %s", e.Backup, e.Path, e.Reason)
}

// Is makes a DamagedError match ErrDamaged.
func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

// MaxObjectSize bounds one line of a backup file (the API server's own limit is 1.5 MiB per
// object in etcd; this leaves room for large CRs).
const MaxObjectSize = 32 << 20

// Reader streams the objects of one backup file, decompressing them, and checks the file
// against its manifest entry as it goes: its stored bytes are hashed on the way, and the end of
// the file is only reported (io.EOF) once their size, sha256 and object count match. A reader
// that gets to the end therefore never returns objects of a damaged file without failing.
type Reader struct {
	loc  storage.Location
	f    File
	raw  io.ReadCloser
	in   *checkedReader
	dec  io.ReadCloser
	sc   *bufio.Scanner
	objs int64
}

// Open opens a file of the backup at loc, stored with compression c (the manifest's), for
// reading. Its path must pass checkEntry. When the location knows the stored file's sha256
// without reading it (an object planrun uploaded with its sum) and it is not the manifest's,
// Open fails at once.
func Open(ctx context.Context, loc storage.Location, c Compression, f File) (*Reader, error) {
	if err := checkEntry(f.Path); err != nil {
		return nil, fmt.Errorf("backup %s: %w", loc, err)
	}
	raw, err := openFile(ctx, loc, f.Path)
	if err != nil {
		return nil, located(loc, f.Path, err)
	}
	r := &Reader{loc: loc, f: f, raw: raw, in: newCheckedReader(raw, f.Bytes)}
	if k, ok := raw.(storage.KnownSHA256); ok && k.SHA256() != "" && k.SHA256() != f.SHA256 {
		raw.Close()
		return nil, r.damaged("sha256 %s (in its metadata), the manifest says %s", k.SHA256(), f.SHA256)
	}
	if r.dec, err = c.decompressor(r.in); err != nil {
		raw.Close()
		return nil, r.readError(err)
	}
	r.sc = bufio.NewScanner(r.dec)
	r.sc.Buffer(make([]byte, 256<<10), MaxObjectSize)
	return r, nil
}

// Next returns the JSON of the next object, or io.EOF after the last one of an intact file. The
// slice is valid until the next call.
func (r *Reader) Next() ([]byte, error) {
	for r.sc.Scan() {
		if line := r.sc.Bytes(); len(line) > 0 {
			r.objs++
			return line, nil
		}
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, located(r.loc, r.f.Path, fmt.Errorf("an object is larger than %d bytes", MaxObjectSize))
		}
		return nil, r.readError(err)
	}
	// The decompressor may stop at the end of its stream: what follows is part of the file too.
	if _, err := io.Copy(io.Discard, r.in); err != nil {
		return nil, r.readError(err)
	}
	if err := r.in.check(r.f); err != "" {
		return nil, r.damaged("%s", err)
	}
	if r.objs != r.f.Count {
		return nil, r.damaged("%d objects, the manifest says %d", r.objs, r.f.Count)
	}
	return nil, io.EOF
}

// Close closes the file.
func (r *Reader) Close() error {
	r.dec.Close()
	return r.raw.Close()
}

func (r *Reader) damaged(format string, args ...any) error {
	return &DamagedError{Backup: r.loc.String(), Path: r.f.Path, Reason: fmt.Sprintf(format, args...)}
}

// readError is a failure while reading: the location's (a dropped connection: worth another
// attempt), more bytes than the manifest says, or content that does not decompress (damage).
func (r *Reader) readError(err error) error {
	if r.in.err != nil {
		return located(r.loc, r.f.Path, r.in.err)
	}
	if r.in.n > r.in.limit {
		return r.damaged("more than the %d bytes the manifest says", r.in.limit)
	}
	return r.damaged("%v", err)
}

// checkedReader hashes and counts the stored bytes of a file, and stops at the first byte past
// the size its manifest entry gives: a file that grew is not read to its end.
type checkedReader struct {
	r     io.Reader
	h     hash.Hash
	n     int64
	limit int64
	err   error // the location's own read error, if any
}

var errTooLarge = errors.New("larger than the manifest says")

func newCheckedReader(r io.Reader, limit int64) *checkedReader {
	return &checkedReader{r: r, h: sha256.New(), limit: limit}
}

func (c *checkedReader) Read(p []byte) (int, error) {
	if c.n > c.limit {
		return 0, errTooLarge
	}
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.err = err
	}
	if err == nil && c.n > c.limit {
		err = errTooLarge
	}
	return n, err
}

// check compares what was read, to its end, with the manifest entry f; "" when they agree.
func (c *checkedReader) check(f File) string {
	if c.n != f.Bytes {
		return fmt.Sprintf("%d bytes, the manifest says %d", c.n, f.Bytes)
	}
	if sum := hex.EncodeToString(c.h.Sum(nil)); sum != f.SHA256 {
		return fmt.Sprintf("sha256 %s, the manifest says %s", sum, f.SHA256)
	}
	return ""
}
