package files

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"planrun.dev/planrun/steps/storage"
)

// sameFile reports whether the destination already holds the file, which its listing showed
// with the same size (d): same mode (when both ends have modes) and same sha256. A sum comes from
// the object's metadata when planrun wrote it, or from reading the file.
func (cp *copier) sameFile(ctx context.Context, it *item, d storage.Entry) (bool, error) {
	if d.Mode == 0 && d.SHA256 == "" {
		// An object store's listing says nothing of metadata: ask the object (one HEAD).
		e, err := cp.to.Stat(ctx, it.dst)
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if e.Dir {
			return false, fmt.Errorf("the destination %q is a folder", it.dst)
		}
		d = e
	}
	if d.Size != it.size || (d.Mode != 0 && it.mode != 0 && d.Mode != it.mode) {
		return false, nil
	}
	dstSum := d.SHA256
	if dstSum == "" {
		var err error
		if dstSum, err = cp.sum(ctx, cp.to, it.dst); err != nil {
			return false, fmt.Errorf("reading the destination: %w", err)
		}
	}
	srcSum, err := cp.sum(ctx, cp.from, it.src)
	if err != nil {
		return false, err
	}
	if srcSum != dstSum {
		return false, nil
	}
	it.sum = srcSum
	return true, nil
}

// sum is the sha256 of a file: from its metadata, which comes with the object's body (a reader
// that knows it is closed unread), or by reading it. One GET either way: a HEAD first would cost
// a round trip for every object that has no such metadata.
func (cp *copier) sum(ctx context.Context, l storage.Location, p string) (string, error) {
	r, err := l.Open(ctx, p)
	if err != nil {
		return "", err
	}
	defer r.Close()
	if k, ok := r.(storage.KnownSHA256); ok && k.SHA256() != "" {
		return k.SHA256(), nil
	}
	h := sha256.New()
	buf := cp.bufs.get(copyBuffer)
	defer cp.bufs.put(buf)
	if _, err := io.CopyBuffer(h, &ctxReader{ctx: ctx, r: r}, *buf); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
