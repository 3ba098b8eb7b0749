package storage

import (
	"context"
	"fmt"
	"strings"
)

// WholePutter is implemented by locations that store a small file given whole in one request
// (S3 PutObject). A caller that already holds a file's bytes and their sha256 (files.copy reads
// files up to a part's size whole, to know their sum before the upload starts) then skips the
// upload machinery, which would copy the bytes again into buffers of its own. PutWhole reports
// false, with no error, when it cannot store this file so (the caller uses Create).
//
// opts.SHA256 must be the caller's sha256 of body: it is recorded in the object's metadata, as
// with Create. The bytes sent are the bytes hashed; the request's own signature or checksum
// covers their way to the service.
type WholePutter interface {
	PutWhole(ctx context.Context, path string, body []byte, opts CreateOptions) (bool, error)
}

var _ WholePutter = (*bucketLocation)(nil)

// objectMetadata is the metadata planrun writes on an object: its mode (0644 unless given) and,
// when known, its sha256.
func objectMetadata(opts CreateOptions) map[string]string {
	mode := opts.Mode
	if mode == 0 {
		mode = 0o644
	}
	md := map[string]string{metaMode: fmt.Sprintf("%04o", mode.Perm())}
	if opts.SHA256 != "" {
		md[metaSHA256] = opts.SHA256
	}
	return md
}

// PutWhole implements WholePutter.
func (l *bucketLocation) PutWhole(ctx context.Context, p string, body []byte, opts CreateOptions) (bool, error) {
	if l.hooks.putObject == nil || opts.SHA256 == "" {
		return false, nil
	}
	k, err := l.key(p)
	if err != nil {
		return false, err
	}
	if k == "" {
		return false, &Error{URL: l.display, Op: "write", Detail: "the root of a bucket is not an object: give a prefix"}
	}
	if !plainKey(k) {
		return false, nil
	}
	return true, l.fail("write", p, l.hooks.putObject(ctx, k, body, objectMetadata(opts)))
}

// plainKey reports whether gocloud.dev/blob stores key as it is: it escapes control characters,
// "../" and its own escape sequence, and a key written around it must be the key it reads.
func plainKey(k string) bool {
	if strings.Contains(k, "../") || strings.Contains(k, "__0x") {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 32 {
			return false
		}
	}
	return true
}
