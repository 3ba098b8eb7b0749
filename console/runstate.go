package console

import (
	"context"
	"time"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/progressfmt"
)

// runState follows one run: its journal, and its event log from where it was last read, for the
// timeline and the progress of its running steps.
type runState struct {
	store    engine.Store
	runID    string
	offset   int64
	hasLog   bool
	timeline timeline
	rates    progressfmt.Tracker
	progress map[string]progressLine // the latest progress of each step, by lane key
}

type progressLine struct {
	Key, Label string
	At         time.Time
	Summary    progressfmt.Summary
}

func newRunState(store engine.Store, runID string) *runState {
	return &runState{store: store, runID: runID, progress: map[string]progressLine{}}
}

// catchUp reads the events added since the last call.
func (rs *runState) catchUp() error {
	el, ok := rs.store.(engine.EventLogger)
	if !ok {
		return nil
	}
	for range 64 { // a capped log is 64 MiB; reading it in rounds keeps each short
		events, next, err := el.ReadEvents(rs.runID, rs.offset)
		if err != nil {
			return err
		}
		if next < rs.offset { // the log was replaced: start over
			rs.timeline, rs.progress, rs.rates = timeline{}, map[string]progressLine{}, progressfmt.Tracker{}
		}
		rs.offset = next
		for _, e := range events {
			rs.hasLog = true
			rs.add(e)
		}
		if len(events) == 0 {
			return nil
		}
	}
	return nil
}

func (rs *runState) add(e engine.Event) {
	rs.timeline.add(e)
	key, label := laneKey(e)
	switch e.Type {
	case engine.EventStepProgress:
		if e.Progress != nil {
			rs.progress[key] = progressLine{Key: key, Label: label, At: e.Time, Summary: rs.rates.Observe(key, e.Time, e.Progress)}
		}
	case engine.EventStepStarted, engine.EventStepSucceeded, engine.EventStepFailed, engine.EventStepRetrying:
		delete(rs.progress, key)
		rs.rates.Forget(key)
	case engine.EventRunFinished, engine.EventRunStarted:
		rs.progress = map[string]progressLine{}
		rs.rates = progressfmt.Tracker{}
	}
}

// load reads the journal and what the lock says, and catches up with the log.
func (rs *runState) load(ctx context.Context) (*engine.Journal, engine.LockState, error) {
	j, err := rs.store.Load(ctx, rs.runID)
	if err != nil {
		return nil, engine.LockState{}, err
	}
	var ls engine.LockState
	if mayBeHeld(j.Status) {
		if ls, err = rs.store.LockState(ctx, rs.runID); err != nil {
			return nil, ls, err
		}
	}
	if err := rs.catchUp(); err != nil {
		return nil, ls, err
	}
	return j, ls, nil
}

// mayBeHeld says whether a runner may hold a run of this status: others are not read for
// their lock (a folder per run, hundreds of runs).
func mayBeHeld(st engine.RunStatus) bool {
	switch st {
	case engine.RunRunning, engine.RunPending, engine.RunRollingBack, engine.RunInterrupted, engine.RunFailed, engine.RunRollbackFailed:
		return true
	}
	return false
}
