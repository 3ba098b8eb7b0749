package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/progressfmt"
)

// newRenderer picks how run events are shown: JSON lines with -o json, a live progress bar on a
// terminal, plain lines in CI or a pipe (a bar redrawn with \r makes a mess of CI logs).
func newRenderer(w io.Writer, jsonOut bool) engine.Observer {
	if jsonOut {
		return &jsonRenderer{enc: json.NewEncoder(w)}
	}
	live := isTerminal(w) && os.Getenv("CI") == "" && os.Getenv("TERM") != "dumb"
	return &lineRenderer{w: w, live: live, lastProgress: map[string]time.Time{}}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

type jsonRenderer struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (r *jsonRenderer) Observe(e engine.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.enc.Encode(e)
}

// lineRenderer prints one line per event. Progress is throttled: on a terminal it redraws one
// bar line in place; elsewhere it prints a progress line at most every progressEvery per step.
type lineRenderer struct {
	mu           sync.Mutex
	w            io.Writer
	live         bool
	barShown     bool
	lastProgress map[string]time.Time
	rates        progressfmt.Tracker
}

const (
	progressEvery = 10 * time.Second
	redrawEvery   = 100 * time.Millisecond
)

func (r *lineRenderer) Observe(e engine.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Type == engine.EventStepProgress {
		r.progress(e)
		return
	}
	line := formatEvent(e)
	if line == "" {
		return
	}
	if r.barShown {
		fmt.Fprint(r.w, "\r\033[K")
		r.barShown = false
	}
	fmt.Fprintf(r.w, "%s %s\n", e.Time.Local().Format("15:04:05"), line)
}

func (r *lineRenderer) progress(e engine.Event) {
	p := e.Progress
	now := e.Time
	sum := r.rates.Observe(e.StepID, now, p)
	every := progressEvery
	if r.live {
		every = redrawEvery
	}
	finished := (p.Total > 0 && p.Done >= p.Total) || (p.TotalBytes > 0 && p.Bytes >= p.TotalBytes)
	if last, seen := r.lastProgress[e.StepID]; seen && now.Sub(last) < every && !finished {
		return
	}
	r.lastProgress[e.StepID] = now
	text := formatProgress(e.StepID, sum)
	if r.live {
		fmt.Fprintf(r.w, "\r\033[K%s", text)
		r.barShown = true
		return
	}
	fmt.Fprintf(r.w, "%s %s\n", now.Local().Format("15:04:05"), text)
}

// formatProgress renders "backup [#####-----] 5000/10000 objects (50%) 12.3 MiB 1234/s ETA 4s",
// or, when the step knows the bytes it will move, "copy [#####-----] 1.0 GiB/2.0 GiB (50%) 120
// files 51.2 MiB/s ETA 20s".
func formatProgress(step string, s progressfmt.Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %s ", step)
	if s.Total > 0 {
		b.WriteString(bar(s.Done, s.Total) + " ")
	}
	b.WriteString(s.Counts)
	if s.Rate != "" {
		b.WriteString(" " + s.Rate)
	}
	if s.ETA > 0 {
		fmt.Fprintf(&b, " ETA %s", s.ETA)
	}
	return b.String()
}

// bar draws done of total as "[#####-----]".
func bar(done, total int64) string {
	const width = 24
	filled := int(float64(width) * float64(done) / float64(total))
	filled = max(0, min(filled, width))
	return "[" + strings.Repeat("#", filled) + strings.Repeat("-", width-filled) + "]"
}

// formatEvent is the one-line text of an event ("" for events not worth a line).
func formatEvent(e engine.Event) string {
	name := e.StepID
	if e.Hook != "" {
		name = fmt.Sprintf("[%s] %s", e.Hook, e.StepID)
	}
	if e.Rollback {
		name = "undo " + e.StepID
	}
	switch e.Type {
	case engine.EventRunStarted:
		return fmt.Sprintf("run %s: %s", e.RunID, e.Message)
	case engine.EventStepStarted:
		s := fmt.Sprintf("▶ %s (%s)", name, e.StepType)
		if e.Attempt > 1 {
			s += fmt.Sprintf(" attempt %d", e.Attempt)
		}
		if e.Message != "" {
			s += ": " + e.Message
		}
		return s
	case engine.EventStepSucceeded:
		if e.Outputs["dryRun"] == true { // the step's convention for "changed nothing, as asked"
			return fmt.Sprintf("✔ %s dry run: not applied", name)
		}
		line := fmt.Sprintf("✔ %s done in %s", name, roundDuration(time.Duration(e.Elapsed)))
		// A step that moved data says how much in its "summary" output (kube.copyVolumes: "2
		// volumes: 1.0 GiB in 10,421 files; 12 MiB uploaded…"): the line a stage ends with.
		if summary, ok := e.Outputs["summary"].(string); ok && summary != "" {
			line += ": " + summary
		}
		return line
	case engine.EventStepSkipped:
		return fmt.Sprintf("- %s skipped (%s is false)", name, strings.TrimPrefix(e.Message, "when: "))
	case engine.EventStepReused:
		return fmt.Sprintf("= %s already %s", name, strings.ToLower(e.Status))
	case engine.EventStepRetrying:
		return fmt.Sprintf("↻ %s attempt %d of %d failed, retrying in %s: %s", name, e.Attempt, e.Retry.MaxAttempts, time.Duration(e.Retry.After), e.Error)
	case engine.EventStepWarning:
		return fmt.Sprintf("⚠ %s: %s", name, e.Message)
	case engine.EventStepFailed:
		return fmt.Sprintf("✘ %s failed: %s", name, e.Error)
	case engine.EventRollbackStarted:
		return "⟲ " + e.Message
	case engine.EventRunStopRequested:
		return "■ " + e.Message
	case engine.EventRunFinished:
		return fmt.Sprintf("run %s %s", e.RunID, e.Status)
	}
	return ""
}
