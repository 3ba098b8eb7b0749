package childproc

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// TailSize bounds the output kept for error messages: enough for the fatal lines of
// kube-apiserver or etcd, or versitygw's start-up banner and a few dozen of its request lines,
// small enough to print in a test failure.
const TailSize = 4 << 10

// Tail keeps the last TailSize bytes written to it, so that a start failure says why without
// sending the reader to a log file first. The zero value is ready to use.
type Tail struct {
	// mu: written by the goroutines that copy output (envtest copies stdout and stderr apart),
	// read by others.
	mu  sync.Mutex
	buf []byte
}

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - TailSize; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// WithTail appends what t holds, when not empty, to err, under a line naming the program.
func WithTail(err error, name string, t *Tail) error {
	out := t.String()
	if out == "" {
		return err
	}
	return fmt.Errorf("%w\n--- last output of %s ---\n%s", err, name, out)
}

// FileTail returns the last TailSize bytes of the file at path, or why it cannot.
func FileTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.Size() > TailSize {
		if _, err := f.Seek(-TailSize, io.SeekEnd); err != nil {
			return err.Error()
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
