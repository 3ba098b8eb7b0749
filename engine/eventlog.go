package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// A run's events (the ones -o json prints) are also appended to a log in the run's state, so
// that another process — planrun status -w, the console — can follow a run live, progress
// included, which the journal does not hold. The log is written line by line with O_APPEND and
// never rewritten: a reader keeps an offset and reads what was added; a crash can only leave a
// torn last line, which readers ignore until it is complete (it never will be: the next runner
// starts a new line after it). Progress is thinned out to one event per step per second and the
// log bounded, so that an hours-long run leaves a file of a few megabytes.

// EventLogger is implemented by stores that keep runs' events for other processes to follow.
type EventLogger interface {
	// OpenEventLog opens the run's event log for appending.
	OpenEventLog(runID string) (io.WriteCloser, error)
	// ReadEvents returns the complete events added to the run's log from offset on, and the
	// offset after the last of them.
	ReadEvents(runID string, offset int64) ([]Event, int64, error)
}

const (
	eventLogName = "events.jsonl"
	// maxEventLog bounds the log: past it, only events other than progress are added.
	maxEventLog = 64 << 20
	// progressEvery is how often a step's progress is logged at most.
	progressEvery = time.Second
	// maxEventRead bounds one ReadEvents.
	maxEventRead = 4 << 20
)

var _ EventLogger = (*DirStore)(nil)

// OpenEventLog implements EventLogger.
func (s *DirStore) OpenEventLog(runID string) (io.WriteCloser, error) {
	dir, err := s.existingRunDir(runID)
	if err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(dir, eventLogName), os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
}

// ReadEvents implements EventLogger.
func (s *DirStore) ReadEvents(runID string, offset int64) ([]Event, int64, error) {
	dir, err := s.existingRunDir(runID)
	if err != nil {
		return nil, offset, err
	}
	f, err := os.OpenFile(filepath.Join(dir, eventLogName), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, offset, nil
	}
	if err != nil {
		return nil, offset, err
	}
	defer f.Close()
	size := int64(maxEventRead)
	if st, err := f.Stat(); err == nil {
		if offset > st.Size() {
			offset = 0 // the log was replaced (by hand): read it from its start
		}
		// Followers poll every second: a read as large as what is there, not the most it may be.
		size = max(0, min(size, st.Size()-offset))
	}
	if size == 0 {
		return nil, offset, nil
	}
	buf := make([]byte, size)
	n, err := f.ReadAt(buf, offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, offset, err
	}
	buf = buf[:n]
	if n == maxEventRead && bytes.IndexByte(buf, '\n') < 0 {
		// One line longer than a read (the writer keeps lines under maxEventLine; this is
		// someone else's): skip it rather than stop here for good.
		return nil, skipLine(f, offset+int64(n)), nil
	}
	var out []Event
	for {
		end := bytes.IndexByte(buf, '\n')
		if end < 0 {
			return out, offset, nil // nothing more, or a line still being written (or torn)
		}
		var e Event
		if json.Unmarshal(buf[:end], &e) == nil {
			out = append(out, e)
		}
		// A line that does not decode (the torn end of a crashed runner's log, which the next
		// runner's first line follows) is skipped.
		offset += int64(end + 1)
		buf = buf[end+1:]
	}
}

// skipLine returns the offset after the next newline from offset on (offset itself when there
// is none yet).
func skipLine(f *os.File, offset int64) int64 {
	buf := make([]byte, 64<<10)
	for at := offset; ; {
		n, err := f.ReadAt(buf, at)
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return at + int64(i) + 1
		}
		at += int64(n)
		if err != nil {
			return offset
		}
	}
}

// maxEventLine bounds a line of the log: an event whose outputs or error are larger is logged
// without its outputs and with its texts cut (the journal has them whole).
const maxEventLine = 1 << 20

// eventLog appends an execution's events to its store's log.
type eventLog struct {
	mu           sync.Mutex
	w            io.WriteCloser
	size         int64
	lastProgress map[string]time.Time
	// pending is the newest progress of a step held back by the thinning, written when its
	// second is up: the last figures of a burst are the ones a follower must see.
	pending map[string]*Event
	broken  bool
	closed  bool
}

// openEventLog opens the store's log of the run, nil when the store keeps none.
func openEventLog(store Store, runID string) *eventLog {
	el, ok := store.(EventLogger)
	if !ok {
		return nil
	}
	w, err := el.OpenEventLog(runID)
	if err != nil {
		return nil // followers see the journal only; the run goes on
	}
	l := &eventLog{w: w, lastProgress: map[string]time.Time{}, pending: map[string]*Event{}}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil {
			l.size = st.Size()
		}
		// The line a crashed runner left torn must not swallow this runner's first event.
		if l.size > 0 {
			_, _ = w.Write([]byte("\n"))
			l.size++
		}
	}
	return l
}

func (l *eventLog) add(e Event) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken || l.closed {
		return
	}
	switch e.Type {
	case EventStepProgress:
		if l.size > maxEventLog {
			return
		}
		if wait := progressEvery - e.Time.Sub(l.lastProgress[e.StepID]); wait > 0 {
			if l.pending[e.StepID] == nil {
				step := e.StepID
				time.AfterFunc(wait, func() { l.flush(step) })
			}
			l.pending[e.StepID] = &e
			return
		}
		delete(l.pending, e.StepID)
		l.lastProgress[e.StepID] = e.Time
	case EventStepStarted, EventStepSucceeded, EventStepFailed, EventStepRetrying:
		delete(l.pending, e.StepID) // figures held back from before this are stale now
	case EventRunFinished:
		clear(l.pending)
	}
	l.write(e)
}

// flush writes the progress of step held back, if it still is.
func (l *eventLog) flush(step string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.pending[step]
	if e == nil || l.closed || l.broken {
		return
	}
	delete(l.pending, step)
	l.lastProgress[step] = time.Now()
	l.write(*e)
}

// write appends one event; the caller holds mu.
func (l *eventLog) write(e Event) {
	line, err := json.Marshal(e)
	if err != nil {
		return
	}
	if len(line) > maxEventLine {
		e.Outputs = nil
		e.Error, e.Message = cut(e.Error, 4096), cut(e.Message, 4096)
		if line, err = json.Marshal(e); err != nil {
			return
		}
	}
	line = append(line, '\n')
	n, err := l.w.Write(line) // one write: followers never see two events interleaved
	l.size += int64(n)
	if err != nil {
		l.broken = true // a full disk: the journal, which matters, reports its own errors
	}
}

func (l *eventLog) close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.w.Close()
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
