package s3test

import (
	"fmt"
	"io"
	"os"
	"sync"
)

// tailSize bounds the server output quoted in errors and failed tests: enough for versitygw's
// start-up banner and fatal line, or its last few dozen request lines.
const tailSize = 4 << 10

// tail keeps the last tailSize bytes written to it, so that a start failure says why without
// sending the reader to a log file first.
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

// withTail appends out, when not empty, to err.
func withTail(err error, out string) error {
	if out == "" {
		return err
	}
	return fmt.Errorf("%w\n--- last output of versitygw ---\n%s", err, out)
}

// fileTail returns the last tailSize bytes of the file at path, or why it cannot.
func fileTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if info, err := f.Stat(); err == nil && info.Size() > tailSize {
		if _, err := f.Seek(-tailSize, io.SeekEnd); err != nil {
			return err.Error()
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return err.Error()
	}
	return string(b)
}
