package archive

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Compression is how the object files of a backup are stored: none (plain JSON lines, .jsonl),
// gzip (.jsonl.gz) or zstd (.jsonl.zst). A backup has one compression, recorded in its manifest;
// the manifest's sizes and sums describe the stored bytes, so that a verify needs no
// decompression.
type Compression string

// The compressions a backup may use.
const (
	None Compression = ""
	Gzip Compression = "gzip"
	Zstd Compression = "zstd"
)

// ParseCompression reads a step's compression: setting ("" and "none" mean None).
func ParseCompression(s string) (Compression, error) {
	switch s {
	case "", "none":
		return None, nil
	case "gzip":
		return Gzip, nil
	case "zstd":
		return Zstd, nil
	}
	return None, fmt.Errorf("%q is not one of none, gzip, zstd", s)
}

// String is the name a plan uses: none, gzip or zstd.
func (c Compression) String() string {
	if c == None {
		return "none"
	}
	return string(c)
}

// Suffix is what the compression adds to a file name after .jsonl.
func (c Compression) Suffix() string {
	switch c {
	case Gzip:
		return ".gz"
	case Zstd:
		return ".zst"
	}
	return ""
}

// zstdWindow bounds the memory of one zstd encoder and decoder: a backup writes up to
// parallelLists files at once, and JSON objects repeat their structure within far less.
const zstdWindow = 4 << 20

// compressor wraps w so that what is written to it is stored compressed; Close flushes the
// compressed stream's end (it does not close w). For None it returns nil.
func (c Compression) compressor(w io.Writer) (io.WriteCloser, error) {
	switch c {
	case Gzip:
		return gzip.NewWriterLevel(w, gzip.DefaultCompression)
	case Zstd:
		// One goroutine per encoder: lists already run in parallel.
		return zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(zstdWindow))
	}
	return nil, nil
}

// decompressor reads the plain content of r, a stored file. For None it returns r itself.
func (c Compression) decompressor(r io.Reader) (io.ReadCloser, error) {
	switch c {
	case Gzip:
		return gzip.NewReader(r)
	case Zstd:
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(64<<20), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, err
		}
		return zstdReadCloser{d}, nil
	}
	return io.NopCloser(r), nil
}

// zstdReadCloser gives zstd.Decoder (whose Close returns nothing) the io.Closer method.
type zstdReadCloser struct{ *zstd.Decoder }

func (z zstdReadCloser) Close() error { z.Decoder.Close(); return nil }
