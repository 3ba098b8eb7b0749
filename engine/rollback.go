package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/go-multierror"
)

// rollback undoes the completed steps of the run in reverse order (a saga). A step whose
// rollback fails keeps status Succeeded with the reason; the others are still undone, and every
// failure is reported, so the operator sees exactly what is left. cause is the failure that
// started the rollback, nil when asked for with `planrun rollback`.
func (x *execution) rollback(ctx context.Context, cause error) error {
	x.j.Status = RunRollingBack
	if err := x.save(ctx); err != nil {
		return err
	}
	msg := "rolling back on demand"
	if cause != nil {
		msg = "rolling back: " + cause.Error()
	}
	x.emit(Event{Type: EventRollbackStarted, Message: msg})

	var errs *multierror.Error
	var left []string
	for i := len(x.p.order) - 1; i >= 0; i-- {
		s := x.p.order[i]
		rec := x.j.Step(s.ID)
		if rec == nil || rec.Status != StepSucceeded || len(s.Rollback) == 0 {
			continue
		}
		err := x.undo(ctx, s, rec)
		if errors.Is(err, ErrInterrupted) {
			return err
		}
		if err != nil {
			errs = multierror.Append(errs, err)
			left = append(left, s.ID)
		}
	}
	if errs != nil {
		errs.ErrorFormat = listErrors
		err := fmt.Errorf("rollback incomplete; still to undo: %s; fix the cause, then run planrun rollback %s: %w",
			strings.Join(left, ", "), x.j.RunID, errs)
		if cause != nil {
			err = fmt.Errorf("%w (after %v)", err, cause)
		}
		return &RunError{RunID: x.j.RunID, Status: RunRollbackFailed, Err: err}
	}
	x.j.Status = RunRolledBack
	return nil
}

// undo runs the rollback steps of s in the order written. Those that succeeded in an earlier
// attempt are not run again.
func (x *execution) undo(ctx context.Context, s *Step, rec *StepRecord) error {
	for _, rb := range s.Rollback {
		rrec := x.j.Step(rb.ID)
		if rrec == nil {
			rrec = newRecord(rb)
			x.mu.Lock()
			x.j.Steps = append(x.j.Steps, rrec)
			x.mu.Unlock()
		}
		if rrec.Status.done() {
			continue
		}
		if err := x.runStep(ctx, rb, rrec); err != nil {
			if errors.Is(err, ErrInterrupted) {
				return err
			}
			if rb.OnError == OnErrorContinue {
				continue
			}
			x.mu.Lock()
			rec.RollbackError = fmt.Sprintf("rollback step %q: %v", rb.ID, err)
			serr := x.saveLocked(ctx)
			x.mu.Unlock()
			return errors.Join(fmt.Errorf("undo %q: rollback step %q failed: %w", s.ID, rb.ID, err), serr)
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	rec.Status, rec.RollbackError = StepRolledBack, ""
	return x.saveLocked(ctx)
}

func listErrors(errs []error) string {
	parts := make([]string, len(errs))
	for i, e := range errs {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}
