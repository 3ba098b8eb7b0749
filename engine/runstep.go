package engine

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// runStep runs one step to its end: condition, config, attempts with retries and timeouts. The
// journal says Running before every attempt (the side effect may happen any time after) and
// Succeeded with the outputs after it.
func (x *execution) runStep(ctx context.Context, s *Step, rec *StepRecord) error {
	if ctx.Err() != nil {
		return ErrInterrupted
	}
	ev := Event{StepID: s.ID, StepType: s.Type, Hook: s.Hook, Rollback: s.Parent != nil}
	env := x.env()
	if s.when != nil {
		if rec.When == nil { // a recorded result is reused, never recomputed
			ok, err := s.when.EvalBool(env)
			if err != nil {
				return x.fail(ctx, s, rec, ev, fmt.Errorf("when: %w", err))
			}
			// Recorded by the next checkpoint (Skipped, Running or Failed), which follows with
			// nothing done in between: a checkpoint of its own would only cost a sync per step.
			rec.When = &ok
		}
		if !*rec.When {
			now := time.Now().UTC()
			rec.Status, rec.Finished = StepSkipped, &now
			ev.Type, ev.Message = EventStepSkipped, "when: "+s.when.Source
			x.emit(ev)
			return x.saveStep(ctx, rec)
		}
	}
	action, err := s.prepare(env, x.p.File)
	if err != nil {
		return x.fail(ctx, s, rec, ev, err)
	}

	attempts, backoff, maxBackoff, retryAny := retryPolicy(s.Retry)
	for attempt := 1; ; attempt++ {
		now := time.Now().UTC()
		x.mu.Lock()
		rec.Status, rec.Attempts, rec.Error = StepRunning, rec.Attempts+1, ""
		if rec.Started == nil {
			rec.Started = &now
		}
		err := x.saveStepLocked(ctx, rec)
		x.mu.Unlock()
		if err != nil {
			return err
		}
		ev.Type, ev.Attempt, ev.Message = EventStepStarted, attempt, describe(action)
		x.emit(ev)

		outputs, err := x.attempt(ctx, s, rec, action, attempt, env)
		if err == nil {
			if outputs, err = normalizeOutputs(outputs); err == nil {
				done := time.Now().UTC()
				x.mu.Lock()
				rec.Status, rec.Outputs, rec.Finished = StepSucceeded, outputs, &done
				err = x.saveStepLocked(ctx, rec)
				x.mu.Unlock()
				if err != nil {
					return err
				}
				ev.Type, ev.Message, ev.Outputs, ev.Elapsed = EventStepSucceeded, "", outputs, Duration(done.Sub(now))
				x.emit(ev)
				return nil
			}
		}
		if ctx.Err() != nil {
			// Interrupted: the step stays Running and runs again on resume.
			x.mu.Lock()
			rec.Error = "interrupted: " + err.Error()
			serr := x.saveStepLocked(ctx, rec)
			x.mu.Unlock()
			return errors.Join(ErrInterrupted, serr)
		}
		if attempt >= attempts || !(retryAny || IsTransient(err)) {
			return x.fail(ctx, s, rec, ev, err)
		}
		wait := backoffFor(attempt, backoff, maxBackoff)
		ev.Type, ev.Error, ev.Retry = EventStepRetrying, err.Error(), &RetryInfo{After: Duration(wait), MaxAttempts: attempts}
		x.emit(ev)
		ev.Error, ev.Retry = "", nil
		select {
		case <-ctx.Done():
			return ErrInterrupted
		case <-time.After(wait):
		}
	}
}

// attempt runs the action once, within the step's timeout.
func (x *execution) attempt(ctx context.Context, s *Step, rec *StepRecord, action Action, attempt int, env Env) (Outputs, error) {
	actx := ctx
	if s.Timeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, time.Duration(s.Timeout))
		defer cancel()
	}
	rc := &RunContext{
		RunID:      x.j.RunID,
		StepID:     s.ID,
		DryRun:     x.j.DryRun,
		Attempt:    attempt,
		Clusters:   x.p.Clusters,
		datastores: x.p.datastores,
		Logger:     x.log.With("step", s.ID),
		env:        env,
		run:        x,
		record:     rec,
		observer: func(p Progress) {
			x.emit(Event{Type: EventStepProgress, StepID: s.ID, StepType: s.Type, Hook: s.Hook, Rollback: s.Parent != nil, Progress: &p})
		},
		warner: func(msg string) {
			x.emit(Event{Type: EventStepWarning, StepID: s.ID, StepType: s.Type, Hook: s.Hook, Rollback: s.Parent != nil, Message: msg})
		},
	}
	outputs, err := runProtected(actx, action, rc)
	if err != nil && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		err = timeoutError(s.Timeout)
	}
	return outputs, err
}

// runProtected turns a panicking step into a failed step, so the checkpoint is still written.
func runProtected(ctx context.Context, a Action, rc *RunContext) (out Outputs, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("step panicked: %v", p)
		}
	}()
	return a.Run(ctx, rc)
}

func (x *execution) fail(ctx context.Context, s *Step, rec *StepRecord, ev Event, err error) error {
	now := time.Now().UTC()
	x.mu.Lock()
	rec.Status, rec.Error, rec.Finished = StepFailed, err.Error(), &now
	serr := x.saveStepLocked(ctx, rec)
	x.mu.Unlock()
	ev.Type, ev.Error = EventStepFailed, err.Error()
	x.emit(ev)
	if serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

func describe(a Action) string {
	if d, ok := a.(Describer); ok {
		return d.Describe()
	}
	return ""
}

func retryPolicy(r *Retry) (attempts int, backoff, maxBackoff time.Duration, any bool) {
	attempts, backoff, maxBackoff = 1, time.Second, time.Minute
	if r == nil {
		return
	}
	if r.Attempts > 0 {
		attempts = r.Attempts
	}
	if r.Backoff > 0 {
		backoff = time.Duration(r.Backoff)
	}
	if r.MaxBackoff > 0 {
		maxBackoff = time.Duration(r.MaxBackoff)
	}
	return attempts, backoff, maxBackoff, r.On == RetryOnAny
}

// backoffFor doubles the wait after each failed attempt, up to max.
func backoffFor(attempt int, base, max time.Duration) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d
}
