package files

import (
	"context"
	"sync"
	"time"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/storage"
)

// The checkpoint lists the files done (copied, or found equal): path, size, sha256 and how. A
// run killed mid-copy resumes from it: a file it lists that the destination's listing shows
// with the same size is not compared (hashed) or copied again.
//
// It is saved every so often rather than after every file: each save writes the whole list (the
// engine appends the step's record to its log and fsyncs), so saving per file would make a copy
// of n files cost n² in checkpoints. The interval adapts to what a save costs (ten times its
// duration, at least minSaveEvery), so checkpoints stay a small share of the run whatever the
// number of files; files done since the last save are found equal again on resume, at the price
// of a comparison.
const minSaveEvery = time.Second

// checkpointState is what SaveState records. Field names are short: the list is written whole at
// every save.
type checkpointState struct {
	From string     `json:"from"`
	To   string     `json:"to"`
	Done []doneItem `json:"done"`
}

type doneItem struct {
	Path    string  `json:"p"`
	Size    int64   `json:"n"`
	SHA256  string  `json:"h,omitempty"`
	Outcome outcome `json:"o,omitempty"`
}

type checkpoint struct {
	from, to string
	dryRun   bool
	prev     map[string]doneItem // from an earlier attempt; read only

	mu   sync.Mutex // guards done
	done []doneItem

	saving sync.Mutex // held while saving; guards the fields below
	saved  int        // len(done) at the last save
	last   time.Time
	every  time.Duration
}

// loadCheckpoint reads what an earlier attempt of the step recorded. A checkpoint of other
// locations (the plan was changed before resume) is ignored.
func loadCheckpoint(rc *engine.RunContext, from, to storage.Location) (*checkpoint, error) {
	ck := &checkpoint{from: from.String(), to: to.String(), dryRun: rc.DryRun, last: time.Now(), every: minSaveEvery}
	var st checkpointState
	ok, err := rc.LoadState(&st)
	if err != nil {
		return nil, err
	}
	if !ok || st.From != ck.from || st.To != ck.to {
		return ck, nil
	}
	ck.prev = make(map[string]doneItem, len(st.Done))
	for _, d := range st.Done {
		ck.prev[d.Path] = d // a later entry for a path replaces an earlier one
	}
	// Kept in the next saves until this attempt reaches them: a second crash early in this
	// attempt must not forget what the first attempt did.
	ck.done = st.Done
	ck.saved = len(st.Done)
	return ck, nil
}

// resume reports whether it is done according to the checkpoint and the destination's listing
// shows it with the size it had then; it then takes the recorded sum and outcome.
func (ck *checkpoint) resume(it *item, d storage.Entry, present bool) bool {
	p, ok := ck.prev[it.dst]
	if !ok || !present || d.Dir || p.Size != it.size || d.Size != it.size {
		return false
	}
	it.sum, it.outcome, it.resumed = p.SHA256, p.Outcome, true
	return true
}

// add records a file done in this attempt.
func (ck *checkpoint) add(it *item) {
	ck.mu.Lock()
	ck.done = append(ck.done, doneItem{Path: it.dst, Size: it.size, SHA256: it.sum, Outcome: it.outcome})
	ck.mu.Unlock()
}

// save records the files done so far: when force is set (the step is failing), or when the
// interval has passed and no other worker is saving.
func (ck *checkpoint) save(ctx context.Context, rc *engine.RunContext, force bool) error {
	if ck.dryRun {
		return nil
	}
	if force {
		ck.saving.Lock()
	} else if !ck.saving.TryLock() {
		return nil
	}
	defer ck.saving.Unlock()
	if !force && time.Since(ck.last) < ck.every {
		return nil
	}
	ck.mu.Lock()
	n := len(ck.done)
	done := ck.done[:n:n] // appends after this go beyond n: the encoder reads a fixed list
	ck.mu.Unlock()
	if n == ck.saved {
		ck.last = time.Now()
		return nil
	}
	start := time.Now()
	if err := rc.SaveState(ctx, checkpointState{From: ck.from, To: ck.to, Done: done}); err != nil {
		return err
	}
	ck.last = time.Now()
	ck.every = max(minSaveEvery, 10*ck.last.Sub(start))
	ck.saved = n
	return nil
}
