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
// any, into an upload of the location, hashing the stored bytes as they go. Nothing is held
// but a buffer; the file appears under its name only when Close commits it, with the sum
// computed on the way (an object store checks that it received exactly those bytes).
type Writer struct {
	rel   string
	ns    string
	up    storage.Upload
	sink  *hashCounter   // the stored bytes: what the manifest describes
	comp  io.WriteCloser // nil without compression
	bw    *bufio.Writer
	count int64
	raw   int64
	done  bool
}

// writeBuffer is the buffer in front of the compressor or the upload: few, large writes.
const writeBuffer = 256 << 10

// Create starts the file of a resource's objects of one namespace ("" for cluster-scoped) in the
// backup at loc, stored with compression c. Files of Secrets are 0600.
func Create(ctx context.Context, loc storage.Location, c Compression, group, resource, namespace string) (*Writer, error) {
	rel := FilePath(group, resource, namespace, c)
	mode := fs.FileMode(0o644)
	if Sensitive(group, resource) {
		mode = 0o600
	}
	up, err := loc.Create(ctx, rel, storage.CreateOptions{Mode: mode})
	if err != nil {
		return nil, err
	}
	w := &Writer{rel: rel, ns: namespace, up: up, sink: &hashCounter{w: up, h: sha256.New()}}
	var next io.Writer = w.sink
	if w.comp, err = c.compressor(w.sink); err != nil {
		up.Abort()
		return nil, err
	}
	if w.comp != nil {
		next = w.comp
	}
	w.bw = bufio.NewWriterSize(next, writeBuffer)
	return w, nil
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
	w.raw += int64(len(objectJSON)) + 1
	return nil
}

// RawBytes is the size of the objects written so far, before compression.
func (w *Writer) RawBytes() int64 { return w.raw }

// Close completes the file (flushes, ends the compressed stream, commits the upload with the
// sum of the stored bytes) and returns its manifest entry. On error nothing is left under the
// file's name.
func (w *Writer) Close(ctx context.Context) (File, error) {
	w.done = true
	err := w.bw.Flush()
	if err == nil && w.comp != nil {
		err = w.comp.Close()
	}
	sum := hex.EncodeToString(w.sink.h.Sum(nil))
	if err == nil {
		err = w.up.Commit(ctx, sum)
	} else {
		w.up.Abort()
	}
	return File{Path: w.rel, Namespace: w.ns, Count: w.count, Bytes: w.sink.n, SHA256: sum}, err
}

// Abort discards the file (a failed backup): nothing appears under its name.
func (w *Writer) Abort() {
	if !w.done {
		w.done = true
		w.up.Abort()
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
