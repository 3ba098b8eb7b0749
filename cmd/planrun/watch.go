package main

import (
	"context"
	"errors"
	"time"

	"planrun.dev/planrun/engine"
)

// watchEvery is how often status --watch reads the run's journal.
const watchEvery = time.Second

// watchGoneAfter is how many reads in a row must find no live runner before --watch says the
// run stopped: a runner taking a run over (a Job's next pod) holds no lock for a moment.
const watchGoneAfter = 3

// watchRun follows a run from its journal, as another machine (or a runner pod) writes it, and
// tells obs what changed as the events of a live run would: the steps that finished before
// first, then every start, retry, success, failure and skip, until the run ends or its runner
// is gone. Progress within a step is not in the journal, so it is not shown. It returns the
// run's outcome as apply would (nil, a *engine.RunError, or ErrInterrupted when ctx ends).
//
// runner, when not nil, says whether a runner is coming for the run (an in-cluster run's Job is
// active: its next pod may wait for a dead one's Lease to expire), or why none will (the Job
// failed, perhaps before the run's journal could say anything).
func watchRun(ctx context.Context, store engine.Store, runID string, obs engine.Observer, runner func(context.Context) (bool, error)) error {
	seen := map[string]engine.StepRecord{}
	gone := 0
	first := true
	live := newLiveEvents(store, runID)
	for {
		j, err := store.Load(ctx, runID)
		if err != nil {
			if ctx.Err() != nil {
				return engine.ErrInterrupted
			}
			return err
		}
		if first {
			obs.Observe(engine.Event{Time: j.Started, Type: engine.EventRunStarted, RunID: runID,
				Message: "watching plan " + j.Plan.Name + " (" + string(j.Status) + ")"})
			first = false
		}
		for _, r := range j.Steps {
			for _, e := range stepChanges(seen[r.ID], *r) {
				e.RunID = runID
				obs.Observe(e)
			}
			seen[r.ID] = *r
		}
		live.forward(obs)
		v := viewRun(ctx, store, j, time.Now())
		live := v.status == engine.RunRunning || v.status == engine.RunRollingBack || v.status == engine.RunPending
		stopped := v.status == engine.RunInterrupted && (runner != nil || j.Status != engine.RunInterrupted)
		switch {
		case (live || stopped) && runner != nil:
			coming, err := runner(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return engine.ErrInterrupted
				}
				return err
			}
			if !coming && !live {
				return finished(obs, j, v)
			}
		case live:
			gone = 0
		case stopped && gone+1 < watchGoneAfter:
			gone++ // no live runner: perhaps one is taking the run over
		default:
			return finished(obs, j, v)
		}
		select {
		case <-ctx.Done():
			return engine.ErrInterrupted
		case <-time.After(watchEvery):
		}
	}
}

// stepChanges are the events that take a step record from was to now.
func stepChanges(was, now engine.StepRecord) []engine.Event {
	base := engine.Event{StepID: now.ID, StepType: now.Type, Hook: now.Hook, Rollback: now.RollbackOf != "", Attempt: now.Attempts}
	at := func(t *time.Time) time.Time {
		if t == nil {
			return time.Now().UTC()
		}
		return *t
	}
	var out []engine.Event
	if now.Attempts > was.Attempts && (now.Status == engine.StepRunning || was.Attempts == 0) {
		e := base
		e.Type, e.Time = engine.EventStepStarted, at(now.Started)
		out = append(out, e)
	}
	if now.Status == was.Status && now.Attempts == was.Attempts {
		return out
	}
	e := base
	switch now.Status {
	case engine.StepSucceeded:
		e.Type, e.Time, e.Outputs = engine.EventStepSucceeded, at(now.Finished), now.Outputs
		if now.Started != nil && now.Finished != nil {
			e.Elapsed = engine.Duration(now.Finished.Sub(*now.Started))
		}
	case engine.StepFailed:
		e.Type, e.Time, e.Error = engine.EventStepFailed, at(now.Finished), now.Error
	case engine.StepSkipped:
		e.Type, e.Time, e.Message = engine.EventStepSkipped, at(now.Finished), "when was false"
	case engine.StepRolledBack:
		e.Type, e.Time, e.Status, e.Message = engine.EventStepReused, at(now.Finished), string(now.Status), "rolled back"
	default:
		return out
	}
	return append(out, e)
}

// finished reports the end of a watched run and returns its outcome.
func finished(obs engine.Observer, j *engine.Journal, v runView) error {
	e := engine.Event{Time: time.Now().UTC(), Type: engine.EventRunFinished, RunID: j.RunID, Status: string(v.status), Error: j.Error}
	if v.runner != "" && e.Error == "" {
		e.Error = v.runner
	}
	obs.Observe(e)
	switch v.status {
	case engine.RunSucceeded:
		return nil
	case engine.RunInterrupted:
		return &engine.RunError{RunID: j.RunID, Status: v.status, Err: errors.New(orText(e.Error, "stopped"))}
	}
	return &engine.RunError{RunID: j.RunID, Status: v.status, Err: errors.New(orText(j.Error, string(v.status)))}
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// liveEvents follows a run's event log, where the store keeps one: what the journal does not
// hold (progress, warnings, retries) reaches a follower as it would a local run's terminal.
type liveEvents struct {
	log    engine.EventLogger
	runID  string
	offset int64
}

// newLiveEvents starts at the end of the log: what happened before is in the journal.
func newLiveEvents(store engine.Store, runID string) *liveEvents {
	log, ok := store.(engine.EventLogger)
	if !ok {
		return nil
	}
	l := &liveEvents{log: log, runID: runID}
	for {
		_, next, err := log.ReadEvents(runID, l.offset)
		if err != nil || next == l.offset {
			return l
		}
		l.offset = next
	}
}

// forward tells obs the events added since, those the journal cannot say.
func (l *liveEvents) forward(obs engine.Observer) {
	if l == nil {
		return
	}
	for {
		events, next, err := l.log.ReadEvents(l.runID, l.offset)
		if err != nil || next == l.offset {
			return
		}
		l.offset = next
		for _, e := range events {
			switch e.Type {
			case engine.EventStepProgress, engine.EventStepWarning, engine.EventStepRetrying:
				obs.Observe(e)
			}
		}
	}
}
