package engine

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// lockWaitEvery is how often a runner waiting for a run's lock asks again.
const lockWaitEvery = time.Second

// lockRun takes the run's lock. With LockWait set, a lock that a live runner holds is waited
// for, up to LockWait: the Job that reruns an in-cluster runner starts its next pod while the
// Lease of the killed one has not expired yet. A lock that stays held is still a *LockedError.
func (r *Runner) lockRun(ctx context.Context, runID string) (Lock, error) {
	opts := LockOptions{BreakStale: r.BreakStaleLock}
	deadline := time.Now().Add(r.LockWait)
	logged := false
	for {
		lock, err := r.Store.Lock(ctx, runID, opts)
		var le *LockedError
		if err == nil || !errors.As(err, &le) || le.State.Status != LockHeld || !time.Now().Before(deadline) {
			return lock, err
		}
		if !logged && r.Logger != nil {
			r.Logger.Info("waiting for the run's lock", "run", runID, "holder", le.State.Holder.String(), "for", r.LockWait)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrInterrupted, err)
		case <-time.After(lockWaitEvery):
		}
	}
}
