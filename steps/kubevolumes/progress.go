package kubevolumes

import (
	"fmt"
	"sync"
	"time"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/mover"
)

// progressEvery is how often progress is reported: the movers report about once a second
// each, and every report is an event.
const progressEvery = 250 * time.Millisecond

// maxWarningsShown is how many warnings of one claim become warning events; the rest are only
// counted (the mover's log, kept in the step's folder, has them all).
const maxWarningsShown = 20

// progress adds up what the movers report: files and bytes done of the totals, each claim's
// phases (backup then restore, say) each counting for an equal share, so that the totals are
// those of the volumes and the count only goes up. Every report and warning of the step goes
// through it, one at a time (the engine's observer takes one event at a time).
type progress struct {
	rc     *engine.RunContext
	phases []string // each claim's phases, in order
	mu     sync.Mutex
	claims map[string]*claimProgress
	last   time.Time
}

type claimProgress struct {
	phase    map[string]counts
	warnings int
}

// counts are files and bytes done of totals (0: not known yet).
type counts struct{ files, filesTotal, bytes, bytesTotal int64 }

func newProgress(rc *engine.RunContext, phases ...string) *progress {
	return &progress{rc: rc, phases: phases, claims: map[string]*claimProgress{}}
}

func (p *progress) claim(key string) *claimProgress {
	c := p.claims[key]
	if c == nil {
		c = &claimProgress{phase: map[string]counts{}}
		p.claims[key] = c
	}
	return c
}

// update takes a progress event of a claim's mover.
func (p *progress) update(key string, ev *mover.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.claim(key).phase[ev.Phase] = counts{files: ev.Files, filesTotal: ev.FilesTotal, bytes: ev.Bytes, bytesTotal: ev.BytesTotal}
	p.reportLocked(false)
}

// finished counts a phase of a claim as done, with the totals of its result.
func (p *progress) finished(key, phase string, files, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.claim(key).phase[phase] = counts{files: files, filesTotal: files, bytes: bytes, bytesTotal: bytes}
	p.reportLocked(true)
}

// warn passes a warning of a claim's mover in phase on (the first maxWarningsShown of each
// claim).
func (p *progress) warn(key, phase string, ev *mover.Warning) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.claim(key)
	c.warnings++
	switch {
	case c.warnings <= maxWarningsShown:
		msg := fmt.Sprintf("claim %s (%s): %s", key, phase, ev.Message)
		if ev.Path != "" {
			msg = fmt.Sprintf("claim %s (%s): %s: %s", key, phase, ev.Path, ev.Message)
		}
		p.rc.Warn(msg)
	case c.warnings == maxWarningsShown+1:
		p.rc.Warn(fmt.Sprintf("claim %s: more warnings, not shown here: see the mover's log in the step's folder", key))
	}
}

// say passes a message of the step on as a warning (through the same lock as the reports).
func (p *progress) say(msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rc.Warn(msg)
}

// reportLocked sends the sums, at most every progressEvery unless forced.
func (p *progress) reportLocked(force bool) {
	now := time.Now()
	if !force && now.Sub(p.last) < progressEvery {
		return
	}
	p.last = now
	var sum engine.Progress
	n := int64(len(p.phases))
	for _, c := range p.claims {
		var files, bytes, filesTotal, bytesTotal int64
		for _, ph := range p.phases {
			k := c.phase[ph]
			files += k.files
			bytes += k.bytes
			filesTotal = max(filesTotal, k.filesTotal)
			bytesTotal = max(bytesTotal, k.bytesTotal)
		}
		sum.Done += files / n
		sum.Bytes += bytes / n
		sum.Total += filesTotal
		sum.TotalBytes += bytesTotal
	}
	sum.Unit = "files"
	p.rc.Progress(sum)
}
