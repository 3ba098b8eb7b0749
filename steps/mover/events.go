// Package mover moves volume data through a kopia repository: Backup snapshots a folder (a
// mounted claim) into it, incrementally from the previous snapshot of the same source, with a
// sha256 of every file computed in the same read; Restore makes a folder an exact mirror of a
// snapshot (deletions, hard links, owners, modes, mtimes, sparse files), resumably; Verify reads
// a folder back and compares it with the snapshot's per-file index. `planrun mover` runs these in
// mover pods and prints their Events as JSON lines.
package mover

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The mover's phases: its actions (`planrun mover backup|restore|verify`), the Phase of their
// Progress, and the "phase" of their results.
const (
	PhaseBackup  = "backup"
	PhaseRestore = "restore"
	PhaseVerify  = "verify"
)

// Event is one line of the mover's output: *Progress, *Warning, *Failure, or a result
// (*BackupResult, *RestoreResult, *VerifyResult).
type Event interface {
	// kind is the value of the "event" field (and the phase, for results).
	kind() (event, phase string)
}

// Progress is reported about once a second while a phase runs.
type Progress struct {
	Phase string `json:"phase"`
	// Files and Bytes are done so far: read (backup: hashed or found unchanged), written or
	// skipped (restore), checked (verify).
	Files int64 `json:"files"`
	Bytes int64 `json:"bytes"`
	// FilesTotal and BytesTotal are what the phase has to do: 0 until known (a backup counts
	// its folder while it reads it).
	FilesTotal int64 `json:"filesTotal"`
	BytesTotal int64 `json:"bytesTotal"`
	// UploadedBytes is what a backup sent to the repository's storage (after dedup and
	// compression); DownloadedBytes what a restore read from the snapshot.
	UploadedBytes   int64 `json:"uploadedBytes"`
	DownloadedBytes int64 `json:"downloadedBytes"`
}

// Warning is a problem that did not stop the phase: a file that changed or vanished while a
// stage backup read it, a special file skipped.
type Warning struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// Failure is the last line of a mover that failed ("event":"error").
type Failure struct {
	Message string `json:"message"`
}

func (*Progress) kind() (string, string)      { return "progress", "" }
func (*Warning) kind() (string, string)       { return "warning", "" }
func (*Failure) kind() (string, string)       { return "error", "" }
func (*BackupResult) kind() (string, string)  { return "result", PhaseBackup }
func (*RestoreResult) kind() (string, string) { return "result", PhaseRestore }
func (*VerifyResult) kind() (string, string)  { return "result", PhaseVerify }

// MarshalEvent encodes e as one JSON object (no newline), with its "event" field (and "phase"
// for results).
func MarshalEvent(e Event) ([]byte, error) {
	ev, phase := e.kind()
	head := struct {
		Event string `json:"event"`
		Phase string `json:"phase,omitempty"`
	}{ev, phase}
	h, err := json.Marshal(head)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	if len(body) <= 2 { // {}
		return h, nil
	}
	// Splice: {"event":…,"phase":…, + the body's fields.
	out := make([]byte, 0, len(h)+len(body))
	out = append(out, h[:len(h)-1]...)
	out = append(out, ',')
	return append(out, body[1:]...), nil
}

// ParseEvent decodes one line written by MarshalEvent.
func ParseEvent(line []byte) (Event, error) {
	var head struct {
		Event string `json:"event"`
		Phase string `json:"phase"`
	}
	if err := json.Unmarshal(line, &head); err != nil {
		return nil, fmt.Errorf("mover event: %w", err)
	}
	var e Event
	switch head.Event {
	case "progress":
		e = new(Progress)
	case "warning":
		e = new(Warning)
	case "error":
		e = new(Failure)
	case "result":
		switch head.Phase {
		case PhaseBackup:
			e = new(BackupResult)
		case PhaseRestore:
			e = new(RestoreResult)
		case PhaseVerify:
			e = new(VerifyResult)
		default:
			return nil, fmt.Errorf("mover event: result of unknown phase %q", head.Phase)
		}
	default:
		return nil, fmt.Errorf("mover event: unknown event %q", head.Event)
	}
	if err := json.Unmarshal(line, e); err != nil {
		return nil, fmt.Errorf("mover event %s: %w", head.Event, err)
	}
	return e, nil
}

// JSONLines returns an event sink that writes each event to w as one JSON line; it may be called
// from several goroutines. Write errors are dropped (stdout gone: nobody to tell).
func JSONLines(w io.Writer) func(Event) {
	var mu sync.Mutex
	return func(e Event) {
		b, err := MarshalEvent(e)
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		_, _ = w.Write(append(b, '\n'))
	}
}

// maxWarningEvents bounds the warning lines of one run (a stage of a busy volume may see
// thousands of files come and go); the result still counts them all.
const maxWarningEvents = 1000

// progressInterval is how often a reporter emits Progress; tests shorten it.
var progressInterval = time.Second

// reporter counts a phase's work and emits Progress about once a second, and warnings, to one
// event sink; its methods are safe for concurrent use.
type reporter struct {
	phase string
	emit  func(Event) // nil: count only

	files, bytes, filesTotal, bytesTotal, uploaded, downloaded atomic.Int64
	warnings                                                   atomic.Int64

	mu      sync.Mutex // serialises emit
	stopped chan struct{}
	done    chan struct{}
}

func startReporter(phase string, emit func(Event)) *reporter {
	r := &reporter{phase: phase, emit: emit, stopped: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-r.stopped:
				return
			case <-t.C:
				r.progress()
			}
		}
	}()
	return r
}

func (r *reporter) send(e Event) {
	if r.emit == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.emit(e)
}

func (r *reporter) progress() {
	r.send(&Progress{
		Phase: r.phase, Files: r.files.Load(), Bytes: r.bytes.Load(),
		FilesTotal: r.filesTotal.Load(), BytesTotal: r.bytesTotal.Load(),
		UploadedBytes: r.uploaded.Load(), DownloadedBytes: r.downloaded.Load(),
	})
}

// warn emits a warning (the first maxWarningEvents of a run) and counts it.
func (r *reporter) warn(path, format string, args ...any) {
	if n := r.warnings.Add(1); n <= maxWarningEvents {
		r.send(&Warning{Path: path, Message: fmt.Sprintf(format, args...)})
	} else if n == maxWarningEvents+1 {
		r.send(&Warning{Message: fmt.Sprintf("more than %d warnings: the others are only counted", maxWarningEvents)})
	}
}

// stop ends the ticks and emits a last Progress; idempotent.
func (r *reporter) stop() {
	select {
	case <-r.stopped:
		return
	default:
	}
	close(r.stopped)
	<-r.done
	r.progress()
}

// firstNames is how many paths an error message names at most (the termination message a
// Kubernetes pod leaves is 4 KiB).
const firstNames = 10

// problemList counts problems (paths and what is wrong with them) and keeps the first
// firstNames in path order, for messages; it is safe for concurrent use.
type problemList struct {
	mu    sync.Mutex
	count int
	first []Mismatch
}

func (l *problemList) add(path, problem string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count++
	i := 0
	for i < len(l.first) && comparePaths(l.first[i].Path, path) <= 0 {
		i++
	}
	if i >= firstNames {
		return
	}
	l.first = slices.Insert(l.first, i, Mismatch{path, problem})
	if len(l.first) > firstNames {
		l.first = l.first[:firstNames]
	}
}

func (l *problemList) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.count
}

// String is "a (problem), b (problem)", and "and N more" past the first ones.
func (l *problemList) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return listMismatches(l.first, l.count)
}

func listMismatches(first []Mismatch, count int) string {
	var s strings.Builder
	for i, m := range first {
		if i > 0 {
			s.WriteString(", ")
		}
		fmt.Fprintf(&s, "%s (%s)", m.Path, m.Problem)
	}
	if more := count - len(first); more > 0 {
		fmt.Fprintf(&s, " and %s more", thousands(int64(more)))
	}
	return s.String()
}

// errorLine makes err one line for a Failure event: newlines become "; ".
func errorLine(err error) string {
	if err == nil {
		return ""
	}
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}

// FailureOf is the Failure event for err, its message on one line.
func FailureOf(err error) *Failure {
	if err == nil {
		err = errors.New("unknown error")
	}
	return &Failure{Message: errorLine(err)}
}
