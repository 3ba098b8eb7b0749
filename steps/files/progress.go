package files

import (
	"sync"
	"sync/atomic"
	"time"

	"planrun.dev/planrun/engine"
)

// progressEvery is how often progress is reported while bytes flow: a copy moves hundreds of
// megabytes a second in 32 KiB writes, and every report is an event (a JSON line with -o json).
const progressEvery = 100 * time.Millisecond

// progress counts files done and bytes copied (or found equal) across workers, and reports them
// at most every progressEvery, and once more at the end (flush).
type progress struct {
	rc        *engine.RunContext
	total     int64 // files of the whole copy
	doneFiles atomic.Int64
	doneBytes atomic.Int64
	mu        sync.Mutex // held while reporting
	last      time.Time
}

func newProgress(rc *engine.RunContext, files int64) *progress {
	return &progress{rc: rc, total: files}
}

// Write counts bytes written to the destination (io.Writer, for io.MultiWriter).
func (p *progress) Write(b []byte) (int, error) {
	p.add(int64(len(b)))
	return len(b), nil
}

func (p *progress) add(n int64) {
	p.doneBytes.Add(n)
	p.report(false)
}

// file counts a file done; rest is its bytes not counted by Write (all of them for a file
// found equal or copied server-side).
func (p *progress) file(rest int64) {
	p.doneBytes.Add(rest)
	p.doneFiles.Add(1)
	p.report(false)
}

func (p *progress) flush() { p.report(true) }

func (p *progress) report(force bool) {
	if !force {
		if !p.mu.TryLock() {
			return // another worker is reporting these counts
		}
	} else {
		p.mu.Lock()
	}
	defer p.mu.Unlock()
	now := time.Now()
	if !force && now.Sub(p.last) < progressEvery {
		return
	}
	p.last = now
	p.rc.Progress(engine.Progress{Done: p.doneFiles.Load(), Total: p.total, Bytes: p.doneBytes.Load(), Unit: "files"})
}
