package files

import "math/bits"

const (
	// maxSmall is the largest file read whole before it is uploaded (copier.whole): the part
	// size of an object store's upload, which would buffer as much anyway.
	maxSmall = 8 << 20
	// copyBuffer is the buffer of a streamed copy or a hash: large reads cut the per-call
	// overhead of the readers and writers in the chain (hashing, progress, HTTP).
	copyBuffer = 1 << 20
	// maxStreams bounds the files larger than maxSmall streamed at once: each holds an
	// upload's part buffers (up to six parts of 8 MiB, S3's transfer manager), so memory stays
	// flat when a bucket holds many large files.
	maxStreams = 4
)

// bufferPool holds one buffer per worker, grown to the largest file the worker read whole: a
// copy of thousands of files allocates a few buffers, not one per file, and its buffers never
// hold more than workers × maxSmall.
type bufferPool struct{ free chan *[]byte }

func newBufferPool(workers int) *bufferPool {
	return &bufferPool{free: make(chan *[]byte, workers)}
}

// get returns a buffer of len n.
func (p *bufferPool) get(n int) *[]byte {
	var b *[]byte
	select {
	case b = <-p.free:
	default:
		b = new([]byte)
	}
	if cap(*b) < n {
		*b = make([]byte, n, 1<<bits.Len(uint(n-1))) // rounded up: the next file may be a bit larger
	}
	*b = (*b)[:n]
	return b
}

func (p *bufferPool) put(b *[]byte) {
	select {
	case p.free <- b:
	default: // more buffers than workers: let this one go
	}
}
