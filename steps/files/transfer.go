package files

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/storage"
)

// copier copies the items of one run of the step; its methods are called by many workers.
type copier struct {
	from, to     storage.Location
	serverCopier storage.ServerCopier // to, when it can copy server-side
	dst          map[string]storage.Entry
	dryRun       bool
	// small: read a file of at most maxSmall bytes whole before uploading it, so that the
	// upload knows its sha256 from the start and the object store records it in the object's
	// metadata (later comparisons and reads then need not hash it).
	small    bool
	progress *progress
	ck       *checkpoint
	bufs     *bufferPool
	streams  chan struct{} // a semaphore: files larger than maxSmall streamed at once
	rc       *engine.RunContext
}

// one brings one file to the destination: nothing when the checkpoint or a comparison says it
// is there and equal, a server-side copy when the destination's service can, a verified stream
// otherwise.
func (cp *copier) one(ctx context.Context, it *item) error {
	d, present := cp.dst[it.dst]
	if cp.ck.resume(it, d, present) {
		cp.progress.file(it.size)
		return nil
	}
	if present && d.Dir {
		return fmt.Errorf("the destination %q is a folder", it.dst)
	}
	if present && d.Size == it.size {
		same, err := cp.sameFile(ctx, it, d)
		if err != nil {
			return err
		}
		if same {
			it.outcome = outcomeEqual
			return cp.done(ctx, it, it.size)
		}
	}
	if cp.dryRun {
		it.outcome = outcomeCopied
		return cp.done(ctx, it, it.size)
	}
	if cp.serverCopier != nil {
		ok, err := cp.serverCopier.CopyFrom(ctx, cp.from, it.src, it.dst, storage.Entry{Path: it.src, Size: it.size, Mode: it.mode})
		if err != nil {
			return err
		}
		if ok {
			it.outcome = outcomeServerSide
			return cp.done(ctx, it, it.size)
		}
	}
	written, err := cp.stream(ctx, it)
	if err != nil {
		return err
	}
	it.outcome = outcomeCopied
	return cp.done(ctx, it, it.size-written)
}

// done counts a file done and checkpoints every so often.
func (cp *copier) done(ctx context.Context, it *item, rest int64) error {
	cp.progress.file(rest)
	cp.ck.add(it)
	return cp.ck.save(ctx, cp.rc, false)
}

// stream copies a file through planrun. Its sha256 is computed from the bytes read from the
// source; the destination checks what it received against it before the file appears under its
// name (Upload.Commit), so a corrupted transfer never leaves a file that looks complete. It
// returns the bytes reported to progress.
func (cp *copier) stream(ctx context.Context, it *item) (int64, error) {
	r, err := cp.from.Open(ctx, it.src)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	known := ""
	if k, ok := r.(storage.KnownSHA256); ok {
		known = k.SHA256()
	}
	if k, ok := r.(storage.KnownMode); ok && it.mode == 0 {
		it.mode = k.Mode() // a listing has no metadata: the object's comes with its body
	}
	if known == "" && cp.small && it.size <= maxSmall {
		return cp.whole(ctx, it, r)
	}
	if it.size > maxSmall {
		select {
		case cp.streams <- struct{}{}:
			defer func() { <-cp.streams }()
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	w, err := cp.to.Create(ctx, it.dst, storage.CreateOptions{Mode: it.mode, SHA256: known})
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	buf := cp.bufs.get(copyBuffer)
	defer cp.bufs.put(buf)
	n, err := io.CopyBuffer(io.MultiWriter(w, h, cp.progress), &ctxReader{ctx: ctx, r: r}, *buf)
	if err == nil && n != it.size {
		err = changed(it.size, n)
	}
	if err != nil {
		_ = w.Abort()
		return n, err
	}
	it.sum = hex.EncodeToString(h.Sum(nil))
	if err := w.Commit(ctx, it.sum); err != nil {
		_ = w.Abort()
		return n, err
	}
	return n, nil
}

// whole copies a small file read whole first: its sha256 is known before the upload starts.
func (cp *copier) whole(ctx context.Context, it *item, r io.Reader) (int64, error) {
	buf := cp.bufs.get(int(it.size))
	defer cp.bufs.put(buf)
	b := (*buf)[:it.size]
	if _, err := io.ReadFull(&ctxReader{ctx: ctx, r: r}, b); err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return 0, fmt.Errorf("source changed while being copied: listed %d bytes, read fewer", it.size)
		}
		return 0, err
	}
	var one [1]byte
	if n, _ := r.Read(one[:]); n > 0 {
		return 0, fmt.Errorf("source changed while being copied: listed %d bytes, read more", it.size)
	}
	sum := sha256.Sum256(b)
	it.sum = hex.EncodeToString(sum[:])
	opts := storage.CreateOptions{Mode: it.mode, SHA256: it.sum}
	if wp, ok := cp.to.(storage.WholePutter); ok {
		if done, err := wp.PutWhole(ctx, it.dst, b, opts); done || err != nil {
			return 0, err
		}
	}
	w, err := cp.to.Create(ctx, it.dst, opts)
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(b); err != nil {
		_ = w.Abort()
		return 0, err
	}
	if err := w.Commit(ctx, it.sum); err != nil {
		_ = w.Abort()
		return 0, err
	}
	return 0, nil
}

func changed(listed, read int64) error {
	return fmt.Errorf("source changed while being copied: listed %d bytes, read %d", listed, read)
}

// ctxReader stops a long copy when the run is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}
