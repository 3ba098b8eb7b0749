package controlplane

import (
	"fmt"
	"io"
	"sync"
)

// tailSize bounds the process output kept for error messages: enough for the fatal lines of
// kube-apiserver or etcd, small enough to print in a test failure.
const tailSize = 4 << 10

// tail keeps the last tailSize bytes written to it. envtest drops process output by default,
// which turns a bad flag into a bare "timeout waiting for process"; the tail says why.
type tail struct {
	mu  sync.Mutex // the process's stdout and stderr are copied by separate goroutines
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - tailSize; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// processOutput returns the writer for a process's output: the tail, plus extra when set.
func processOutput(t *tail, extra io.Writer) io.Writer {
	if extra == nil {
		return t
	}
	return io.MultiWriter(t, extra)
}

// withTail appends the process output tail, if any, to a start failure.
func withTail(err error, name string, t *tail) error {
	out := t.String()
	if out == "" {
		return err
	}
	return fmt.Errorf("%w\n--- last output of %s ---\n%s", err, name, out)
}
