package engine

import (
	"context"
	"errors"
	"fmt"
)

// Only transient errors are retried by default: retrying "forbidden" or "invalid object" wastes
// the operator's time and hides the real problem. Steps mark an error transient with Transient;
// the engine does so for an attempt that ran out of time.

type transientError struct{ err error }

func (e *transientError) Error() string   { return e.err.Error() }
func (e *transientError) Unwrap() error   { return e.err }
func (e *transientError) Transient() bool { return true }

// Transient marks err as worth retrying (conflict, throttling, timeout, unavailable).
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &transientError{err: err}
}

// IsTransient reports whether err, or an error it wraps, says it is transient.
func IsTransient(err error) bool {
	var t interface{ Transient() bool }
	return errors.As(err, &t) && t.Transient()
}

// ErrInterrupted is returned when a run stopped on a signal at a safe point; resume continues it.
var ErrInterrupted = errors.New("interrupted")

// timeoutError is an attempt that ran past the step's timeout.
func timeoutError(limit Duration) error {
	return Transient(fmt.Errorf("timed out after %s: %w", limit, context.DeadlineExceeded))
}
