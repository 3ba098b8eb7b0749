package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
)

// WriteFile writes a small file (a manifest, a marker) whole: it appears under path complete or
// not at all, with its sha256 checked by the location (and recorded in an object's metadata). An
// object store that takes a file whole (WholePutter) gets it in one request.
func WriteFile(ctx context.Context, l Location, path string, data []byte, mode fs.FileMode) error {
	s := sha256.Sum256(data)
	sum := hex.EncodeToString(s[:])
	opts := CreateOptions{Mode: mode, SHA256: sum}
	if wp, ok := l.(WholePutter); ok {
		if sent, err := wp.PutWhole(ctx, path, data, opts); sent || err != nil {
			return err
		}
	}
	u, err := l.Create(ctx, path, opts)
	if err != nil {
		return err
	}
	if _, err := u.Write(data); err != nil {
		u.Abort()
		return err
	}
	return u.Commit(ctx, sum)
}
