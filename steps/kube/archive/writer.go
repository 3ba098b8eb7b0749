package archive

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"io/fs"

	"planrun.dev/planrun/steps/storage"
)

// Writer writes one object file of a backup as the objects come: through the compressor, if
// any, to the location, hashing the stored bytes as they go. The file appears under its name only
// when Close commits it, with the sum computed on the way (the location checks that it received
// exactly those bytes).
//
// To an object store that takes a small file whole (storage.WholePutter), the stored bytes go to
// a buffer of wholeLimit bytes first: a file that fits is sent in one request when it is complete,
// its sha256 recorded in the object's metadata, without passing through the SDK's upload
// machinery (which would copy it again into buffers that grow with the file). A file that
// outgrows the buffer is streamed from then on. Memory is one buffer per file being written,
// whatever the object count.
type Writer struct {
	loc   storage.Location
	ctx   context.Context
	rel   string
	ns    string
	mode  fs.FileMode
	up    storage.Upload      // nil while the file is still in buf
	whole storage.WholePutter // nil for locations that stream every file
	buf   []byte              // the stored bytes so far, while they fit in wholeLimit
	sink  *hashCounter        // the stored bytes: what the manifest describes
	comp  io.WriteCloser      // nil without compression
	bw    *bufio.Writer
	count int64
	done  bool
}

// writeBuffer is the buffer in front of the compressor or the location: few, large writes.
const writeBuffer = 256 << 10

// wholeLimit is the largest file sent whole: the default part size of a multipart upload, so
// that what is sent whole would have been one part anyway.
const wholeLimit = 8 << 20

// wholeBuffers keeps the buffers of files sent whole for the next files: a backup writes a few
// files at a time (kube.backup runs 4 lists), one after the other. A bounded list rather than a
// sync.Pool, which the collector empties: each new buffer is 8 MiB to allocate and fault in.
var wholeBuffers = make(chan []byte, 4)

func getWholeBuffer() []byte {
	select {
	case b := <-wholeBuffers:
		return b[:0]
	default:
		return make([]byte, 0, wholeLimit)
	}
}

func putWholeBuffer(b []byte) {
	if cap(b) != wholeLimit {
		return
	}
	select {
	case wholeBuffers <- b:
	default:
	}
}

// Create starts the file of a resource's objects of one namespace ("" for cluster-scoped) in the
// backup at loc, stored with compression c. Files of Secrets are 0600.
func Create(ctx context.Context, loc storage.Location, c Compression, group, resource, namespace string) (*Writer, error) {
	w := &Writer{loc: loc, ctx: ctx, rel: FilePath(group, resource, namespace, c), ns: namespace, mode: 0o644}
	if Sensitive(group, resource) {
		w.mode = 0o600
	}
	if wp, ok := loc.(storage.WholePutter); ok {
		w.whole, w.buf = wp, getWholeBuffer()
	} else if err := w.stream(); err != nil {
		return nil, err
	}
	w.sink = &hashCounter{w: (*writerSink)(w), h: sha256.New()}
	var next io.Writer = w.sink
	var err error
	if w.comp, err = c.compressor(w.sink); err != nil {
		w.Abort()
		return nil, err
	}
	if w.comp != nil {
		next = w.comp
	}
	w.bw = bufio.NewWriterSize(next, writeBuffer)
	return w, nil
}

// stream starts the upload of the file, with what the buffer holds so far.
func (w *Writer) stream() error {
	up, err := w.loc.Create(w.ctx, w.rel, storage.CreateOptions{Mode: w.mode})
	if err != nil {
		return err
	}
	w.up = up
	if w.whole != nil {
		_, err := up.Write(w.buf)
		putWholeBuffer(w.buf)
		w.buf = nil
		return err
	}
	return nil
}

// writerSink receives the stored bytes: into the buffer while they fit, else into the upload.
type writerSink Writer

func (s *writerSink) Write(p []byte) (int, error) {
	w := (*Writer)(s)
	if w.up == nil && len(w.buf)+len(p) > wholeLimit {
		if err := w.stream(); err != nil {
			return 0, err
		}
	}
	if w.up == nil {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	return w.up.Write(p)
}

// Path is the file's path in the backup.
func (w *Writer) Path() string { return w.rel }

// Write adds one object, given as its JSON encoding (without a newline).
func (w *Writer) Write(objectJSON []byte) error {
	if _, err := w.bw.Write(objectJSON); err != nil {
		return err
	}
	if err := w.bw.WriteByte('\n'); err != nil {
		return err
	}
	w.count++
	return nil
}

// Close completes the file (flushes, ends the compressed stream, commits the upload with the
// sum of the stored bytes, or sends the file whole) and returns its manifest entry. On error
// nothing is left under the file's name.
func (w *Writer) Close(ctx context.Context) (File, error) {
	err := w.bw.Flush()
	if err == nil && w.comp != nil {
		err = w.comp.Close()
	}
	sum := hex.EncodeToString(w.sink.h.Sum(nil))
	f := File{Path: w.rel, Namespace: w.ns, Count: w.count, Bytes: w.sink.n, SHA256: sum}
	if err != nil {
		w.Abort()
		return f, err
	}
	w.done = true
	if w.up == nil {
		defer func() { putWholeBuffer(w.buf); w.buf = nil }()
		sent, err := w.whole.PutWhole(ctx, w.rel, w.buf, storage.CreateOptions{Mode: w.mode, SHA256: sum})
		if sent || err != nil {
			return f, err
		}
		if err := w.stream(); err != nil { // the location cannot take this file whole
			return f, err
		}
	}
	return f, w.up.Commit(ctx, sum)
}

// Abort discards the file (a failed backup): nothing appears under its name.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	if w.up != nil {
		w.up.Abort()
	}
	if w.buf != nil {
		putWholeBuffer(w.buf)
		w.buf = nil
	}
}

// hashCounter passes writes on to w, hashing and counting them.
type hashCounter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *hashCounter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}
