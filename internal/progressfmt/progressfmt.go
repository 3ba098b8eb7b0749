// Package progressfmt describes a step's progress for people: counts, percentage, rate and ETA.
// The terminal's bar line and the console's progress bars say the same thing the same way.
package progressfmt

import (
	"fmt"
	"strings"
	"time"

	"planrun.dev/planrun/engine"
)

// Summary is a step's progress, described.
type Summary struct {
	// Done of Total is what a bar shows: bytes when the step knows how many it will move (a
	// volume's files differ in size by orders of magnitude, so counting them says little), else
	// items; Total is 0 when unknown.
	Done, Total int64
	// Counts is "5000/10000 objects (50%) 12.3 MiB" or "1.0 GiB/2.0 GiB (50%) 120 files".
	Counts string
	// Rate is "1234/s" or "51.2 MiB/s"; "" until a second has passed with something done.
	Rate string
	// ETA is how long the rest takes at Rate; 0 when unknown or done.
	ETA time.Duration
}

// Describe summarizes p, elapsed after the step's progress started with doneSince items and
// bytesSince bytes moved since then.
func Describe(p *engine.Progress, elapsed time.Duration, doneSince, bytesSince int64) Summary {
	var s Summary
	unit := p.Unit
	if unit == "" {
		unit = "items"
	}
	var b strings.Builder
	secs := elapsed.Seconds()
	if p.TotalBytes > 0 {
		s.Done, s.Total = p.Bytes, p.TotalBytes
		fmt.Fprintf(&b, "%s/%s (%d%%)", HumanBytes(p.Bytes), HumanBytes(p.TotalBytes), p.Bytes*100/p.TotalBytes)
		if p.Total > 0 {
			fmt.Fprintf(&b, " %d/%d %s", p.Done, p.Total, unit)
		} else {
			fmt.Fprintf(&b, " %d %s", p.Done, unit)
		}
		if secs >= 1 && bytesSince > 0 {
			perSec := float64(bytesSince) / secs
			s.Rate = HumanBytes(int64(perSec)) + "/s"
			if p.Bytes < p.TotalBytes {
				s.ETA = (time.Duration(float64(p.TotalBytes-p.Bytes)/perSec) * time.Second).Round(time.Second)
			}
		}
		s.Counts = b.String()
		return s
	}
	s.Done, s.Total = p.Done, p.Total
	if p.Total > 0 {
		fmt.Fprintf(&b, "%d/%d %s (%d%%)", p.Done, p.Total, unit, p.Done*100/p.Total)
	} else {
		fmt.Fprintf(&b, "%d %s", p.Done, unit)
	}
	if p.Bytes > 0 {
		fmt.Fprintf(&b, " %s", HumanBytes(p.Bytes))
	}
	if secs >= 1 && doneSince > 0 {
		perSec := float64(doneSince) / secs
		s.Rate = fmt.Sprintf("%.0f/s", perSec)
		if p.Total > 0 && p.Done < p.Total {
			s.ETA = (time.Duration(float64(p.Total-p.Done)/perSec) * time.Second).Round(time.Second)
		}
	}
	s.Counts = b.String()
	return s
}

// HumanBytes is n in B, KiB, MiB…: "12.3 MiB".
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Tracker remembers when each step's progress started, to compute rates from a stream of
// progress events. A step whose counts go down (a new attempt) starts over.
type Tracker struct {
	starts map[string]start
}

type start struct {
	at          time.Time
	done, bytes int64
}

// Observe takes a progress event of step at t and describes it.
func (tr *Tracker) Observe(step string, t time.Time, p *engine.Progress) Summary {
	if tr.starts == nil {
		tr.starts = map[string]start{}
	}
	st, ok := tr.starts[step]
	if !ok || p.Done < st.done || p.Bytes < st.bytes {
		st = start{at: t, done: p.Done, bytes: p.Bytes}
		tr.starts[step] = st
	}
	return Describe(p, t.Sub(st.at), p.Done-st.done, p.Bytes-st.bytes)
}

// Forget drops a step's start, when it ended.
func (tr *Tracker) Forget(step string) { delete(tr.starts, step) }
