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
		if rec == nil || rec.Status != StepSucceeded || !s.undoable() {
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
	steps := s.Rollback
	if steps == nil {
		steps = []*Step{s.builtinUndo(rec)}
	}
	for _, rb := range steps {
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
			serr := x.saveStepLocked(ctx, rec)
			x.mu.Unlock()
			return errors.Join(fmt.Errorf("undo %q: rollback step %q failed: %w", s.ID, rb.ID, err), serr)
		}
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	rec.Status, rec.RollbackError = StepRolledBack, ""
	return x.saveStepLocked(ctx, rec)
}

func listErrors(errs []error) string {
	parts := make([]string, len(errs))
	for i, e := range errs {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

// undoable reports whether a completed step has something to undo: a rollback block, or, when
// it has none, an action that undoes itself.
func (s *Step) undoable() bool {
	if len(s.Rollback) > 0 {
		return true
	}
	if s.Rollback != nil || s.stepType.New == nil {
		return false // rollback: [] turns undoing off
	}
	_, ok := s.stepType.New().(Undoer)
	return ok
}

// builtinUndo is a rollback step that calls the step's own Undo with the outputs it recorded.
// Its id, "<id>:undo", cannot clash with a plan's ids, which may not contain ':'.
func (s *Step) builtinUndo(rec *StepRecord) *Step {
	u := &Step{ID: s.ID + ":undo", Type: s.Type, Retry: s.Retry, Timeout: s.Timeout, Pos: s.Pos, Parent: s, stepType: s.stepType}
	u.action = &undoAction{step: s, rec: rec}
	u.Digest = s.Digest
	return u
}

type undoAction struct {
	step *Step
	rec  *StepRecord
}

func (u *undoAction) Describe() string { return "undo " + u.step.ID }

func (u *undoAction) Run(ctx context.Context, rc *RunContext) (Outputs, error) {
	a, err := u.step.prepare(rc.env, rc.run.p.File)
	if err != nil {
		return nil, err
	}
	undoer, ok := a.(Undoer)
	if !ok {
		return nil, fmt.Errorf("step type %s cannot undo itself", u.step.Type)
	}
	return Outputs{}, undoer.Undo(ctx, rc, u.rec.Outputs)
}
