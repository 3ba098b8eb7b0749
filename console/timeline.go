package console

import (
	"fmt"
	"time"

	"planrun.dev/planrun/engine"
)

// The run timeline: each step's attempts, hooks and rollbacks as bars on a time axis, built
// from the run's event log (the journal keeps one start and one end per step, not attempts).

// span is one attempt of a step, or a skip.
type span struct {
	Attempt    int
	Start, End time.Time // End is zero while the attempt runs
	Outcome    string    // succeeded, failed, retried, interrupted, skipped, running
	Note       string
}

// lane is one row of the timeline.
type lane struct {
	Key, Label string
	Spans      []*span
}

// timeline accumulates a run's events into lanes, as they come.
type timeline struct {
	lanes []*lane
	byKey map[string]*lane
}

func laneKey(e engine.Event) (key, label string) {
	switch {
	case e.Rollback:
		return "undo/" + e.StepID, "undo " + e.StepID
	case e.Hook != "":
		return e.StepID, fmt.Sprintf("[%s] %s", e.Hook, e.StepID)
	}
	return e.StepID, e.StepID
}

func (t *timeline) lane(e engine.Event) *lane {
	if t.byKey == nil {
		t.byKey = map[string]*lane{}
	}
	key, label := laneKey(e)
	l := t.byKey[key]
	if l == nil {
		l = &lane{Key: key, Label: label}
		t.byKey[key] = l
		t.lanes = append(t.lanes, l)
	}
	return l
}

// open is the attempt of the lane still running, or nil.
func (l *lane) open() *span {
	if n := len(l.Spans); n > 0 && l.Spans[n-1].End.IsZero() {
		return l.Spans[n-1]
	}
	return nil
}

// closeAll ends every running attempt at t: the runner stopped (interrupted) or died.
func (t *timeline) closeAll(at time.Time, outcome string) {
	for _, l := range t.lanes {
		if s := l.open(); s != nil {
			s.End, s.Outcome = at, outcome
		}
	}
}

func (t *timeline) add(e engine.Event) {
	switch e.Type {
	case engine.EventRunStarted:
		// Attempts a dead runner left open ended when it died: we only know it was before now.
		t.closeAll(e.Time, "interrupted")
	case engine.EventStepStarted:
		l := t.lane(e)
		if s := l.open(); s != nil {
			s.End, s.Outcome = e.Time, "interrupted"
		}
		l.Spans = append(l.Spans, &span{Attempt: e.Attempt, Start: e.Time, Outcome: "running"})
	case engine.EventStepRetrying:
		if s := t.lane(e).open(); s != nil {
			s.End, s.Outcome, s.Note = e.Time, "retried", e.Error
		}
	case engine.EventStepSucceeded, engine.EventStepFailed:
		l := t.lane(e)
		s := l.open()
		if s == nil { // a start thinned out of a capped log
			s = &span{Attempt: e.Attempt, Start: e.Time.Add(-time.Duration(e.Elapsed))}
			l.Spans = append(l.Spans, s)
		}
		s.End = e.Time
		if e.Type == engine.EventStepSucceeded {
			s.Outcome = "succeeded"
		} else {
			s.Outcome, s.Note = "failed", e.Error
		}
	case engine.EventStepSkipped:
		t.lane(e).Spans = append(t.lane(e).Spans, &span{Start: e.Time, End: e.Time, Outcome: "skipped", Note: e.Message})
	case engine.EventRunFinished:
		t.closeAll(e.Time, "interrupted")
	}
}

// fromJournal is the timeline the journal alone tells, for stores that keep no event log: one
// bar per step that started.
func fromJournal(j *engine.Journal) *timeline {
	t := &timeline{}
	for _, r := range j.Steps {
		if r.Started == nil && r.Status != engine.StepSkipped {
			continue
		}
		e := engine.Event{StepID: r.ID, Hook: r.Hook}
		if r.RollbackOf != "" {
			e = engine.Event{StepID: r.RollbackOf, Rollback: true}
		}
		l := t.lane(e)
		s := &span{Attempt: r.Attempts, Outcome: outcomeOf(r.Status), Note: r.Error}
		switch {
		case r.Started != nil:
			s.Start = *r.Started
		case r.Finished != nil:
			s.Start = *r.Finished
		}
		if r.Finished != nil {
			s.End = *r.Finished
		}
		l.Spans = append(l.Spans, s)
	}
	return t
}

func outcomeOf(st engine.StepStatus) string {
	switch st {
	case engine.StepSucceeded:
		return "succeeded"
	case engine.StepFailed:
		return "failed"
	case engine.StepSkipped:
		return "skipped"
	case engine.StepRolledBack:
		return "rolledback"
	}
	return "running"
}

// svgTimeline is the timeline laid out for its SVG.
type svgTimeline struct {
	Width, Height int
	Axis          []svgTick
	Rows          []svgRow
	AxisY         int
}

type svgTick struct {
	X     int
	Label string
}

type svgRow struct {
	Y, TextY int
	Label    string
	Bars     []svgBar
}

type svgBar struct {
	X, W    int
	Outcome string
	Title   string
}

const (
	tlWidth  = 960
	tlLabels = 220 // the step names' column
	tlRow    = 22
	tlTop    = 8
)

// layout places the lanes on an axis from start to end (now for a live run). Every lane of
// order (the plan's steps) gets a row, started or not, so the timeline reads as the plan.
func (t *timeline) layout(order []string, labels map[string]string, start, end time.Time) svgTimeline {
	if !end.After(start) {
		end = start.Add(time.Second)
	}
	span := end.Sub(start)
	x := func(at time.Time) int {
		f := float64(at.Sub(start)) / float64(span)
		return tlLabels + int(f*float64(tlWidth-tlLabels-10))
	}
	var lanes []*lane
	seen := map[string]bool{}
	for _, k := range order {
		l := t.byKey[k]
		if l == nil {
			l = &lane{Key: k, Label: labels[k]}
		}
		lanes = append(lanes, l)
		seen[k] = true
	}
	for _, l := range t.lanes {
		if !seen[l.Key] {
			lanes = append(lanes, l)
		}
	}
	out := svgTimeline{Width: tlWidth}
	for i, l := range lanes {
		y := tlTop + i*tlRow
		row := svgRow{Y: y + 3, TextY: y + 15, Label: l.Label}
		for _, s := range l.Spans {
			stop := s.End
			if stop.IsZero() {
				stop = end
			}
			x0, x1 := x(s.Start), x(stop)
			w := max(x1-x0, 3) // an instant still shows
			title := fmt.Sprintf("%s: %s", l.Label, s.Outcome)
			if s.Attempt > 0 {
				title = fmt.Sprintf("%s attempt %d: %s", l.Label, s.Attempt, s.Outcome)
			}
			title += fmt.Sprintf(" at %s for %s", s.Start.UTC().Format("15:04:05"), shortDuration(stop.Sub(s.Start)))
			if s.Note != "" {
				title += " — " + s.Note
			}
			row.Bars = append(row.Bars, svgBar{X: x0, W: w, Outcome: s.Outcome, Title: title})
		}
		out.Rows = append(out.Rows, row)
	}
	out.AxisY = tlTop + len(lanes)*tlRow + 4
	out.Height = out.AxisY + 22
	tick := tickEvery(span)
	for at := time.Duration(0); at <= span; at += tick {
		label := "+" + shortDuration(at)
		if at == 0 {
			label = "start"
		}
		out.Axis = append(out.Axis, svgTick{X: x(start.Add(at)), Label: label})
	}
	return out
}

// tickEvery picks a round interval that puts at most 8 ticks on the axis.
func tickEvery(span time.Duration) time.Duration {
	for _, d := range []time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 10 * time.Second, 15 * time.Second, 30 * time.Second,
		time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 30 * time.Minute,
		time.Hour, 2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour} {
		if span/d <= 8 {
			return d
		}
	}
	return span / 8
}

// shortDuration is "850ms", "12s", "3m05s", "2h04m".
func shortDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}
