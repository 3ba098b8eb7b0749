package files

import (
	"math/bits"
	"sync"
)

const (
	// maxSmall is the largest file read whole before it is uploaded (copier.whole): the part
	// size of an object store's upload, which buffers as much anyway.
	maxSmall = 8 << 20
	// copyBuffer is the buffer of a streamed copy: large reads cut the per-call overhead of
	// the readers and writers in the chain (hashing, progress, HTTP).
	copyBuffer = 1 << 20
)

// bufferPool reuses buffers by power-of-two size class, so that copying thousands of small
// files allocates a few buffers per worker, not one per file, and memory stays bounded by
// workers × the largest class.
type bufferPool struct {
	classes [bits.UintSize]sync.Pool
}

func newBufferPool() *bufferPool { return &bufferPool{} }

// minClass: smaller buffers are cheaper to allocate than to pool.
const minClass = 12 // 4 KiB

func class(n int) int {
	if n <= 1<<minClass {
		return minClass
	}
	return bits.Len(uint(n - 1))
}

// get returns a buffer of at least n bytes (len n).
func (p *bufferPool) get(n int) *[]byte {
	c := class(n)
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<c)
	return &b
}

func (p *bufferPool) put(b *[]byte) {
	p.classes[class(cap(*b))].Put(b)
}
