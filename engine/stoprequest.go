package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// StopRequester is implemented by stores through which another process (planrun cancel, the
// console) asks a run's runner to stop at a safe point, as SIGINT does: the run ends Interrupted
// and resume continues it.
type StopRequester interface {
	// RequestStop records a request to stop the run: by whom, when, for which runner.
	RequestStop(ctx context.Context, runID string, req OperatorAction) error
	// StopRequest returns the pending request, nil when there is none.
	StopRequest(ctx context.Context, runID string) (*OperatorAction, error)
	// ClearStopRequest removes a request once the runner has acted on it (or, when a runner
	// starts, one left from an earlier execution).
	ClearStopRequest(ctx context.Context, runID string) error
}

// ErrStopRequested is the cause of a run's cancellation when an operator asked it to stop.
var ErrStopRequested = errors.New("stop requested")

// stopPollInterval is how often a runner looks for a stop request: a stat of a file, or a Get.
var stopPollInterval = 500 * time.Millisecond

// watchStopRequests returns a context that ends when an operator asks the run to stop; the
// request is recorded in the journal as who and when. A request made for another runner (the
// one before this one, gone since) is dropped.
func (x *execution) watchStopRequests(ctx context.Context) (context.Context, func()) {
	sr, ok := x.store.(StopRequester)
	if !ok || x.j.DryRun {
		return ctx, func() {}
	}
	var me string // this runner as its lock's holder
	if ls, err := x.store.LockState(ctx, x.j.RunID); err == nil && ls.Status == LockHeld {
		me = ls.Holder.String()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(stopPollInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			req, err := sr.StopRequest(ctx, x.j.RunID)
			if err != nil || req == nil {
				continue // a store that cannot be read now is read again next tick
			}
			if req.Target != "" && me != "" && req.Target != me {
				if err := sr.ClearStopRequest(ctx, x.j.RunID); err != nil {
					x.log.Warn("cannot clear a stop request meant for another runner", "err", err)
				}
				continue
			}
			x.mu.Lock()
			x.j.recordAction(ActionCancel, req.By)
			x.mu.Unlock()
			x.emit(Event{Type: EventRunStopRequested, Message: fmt.Sprintf("stop requested by %s; stopping at a safe point", req.By)})
			cancel(ErrStopRequested)
			return
		}
	}()
	return ctx, func() {
		close(done)
		cancel(nil)
		// Bounded: the run's lock is released after this, and a store that hangs must not hold it.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer ccancel()
		if err := sr.ClearStopRequest(cctx, x.j.RunID); err != nil {
			x.log.Warn("cannot clear the stop request", "err", err)
		}
	}
}

var _ StopRequester = (*DirStore)(nil)

// stopRequestFile is the request in a run's folder.
const stopRequestFile = "stop-request.json"

// RequestStop implements StopRequester.
func (s *DirStore) RequestStop(_ context.Context, runID string, req OperatorAction) error {
	dir, err := s.existingRunDir(runID)
	if err != nil {
		return err
	}
	data, err := json.Marshal(req)
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, stopRequestFile), data, 0o644)
}

// StopRequest implements StopRequester.
func (s *DirStore) StopRequest(_ context.Context, runID string) (*OperatorAction, error) {
	dir, err := s.existingRunDir(runID)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, stopRequestFile), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var req OperatorAction
	// A request is a few dozen bytes. One that cannot be read (a file made by hand, cut
	// short) is still a request: someone asked.
	if json.NewDecoder(io.LimitReader(f, 4096)).Decode(&req) != nil || req.By == "" {
		req = OperatorAction{Action: ActionCancel, By: "someone (an unreadable request)", At: time.Now().UTC()}
	}
	return &req, nil
}

// ClearStopRequest implements StopRequester.
func (s *DirStore) ClearStopRequest(_ context.Context, runID string) error {
	dir, err := s.existingRunDir(runID)
	if err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, stopRequestFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// ErrNotRunning is returned by CancelRun for a run no live runner holds.
var ErrNotRunning = errors.New("not running")

// ErrCannotCancel is returned by CancelRun for stores that carry no stop requests.
var ErrCannotCancel = errors.New("this store carries no stop requests")

// CancelRun asks the live runner of a run to stop at a safe point, on behalf of by. It fails
// with ErrNotRunning when no runner holds the run: there is nothing to stop, and a request
// left behind would be dropped by the next runner anyway.
func CancelRun(ctx context.Context, store Store, runID, by string) error {
	sr, ok := store.(StopRequester)
	if !ok {
		return fmt.Errorf("run %s: %w; stop its runner with Ctrl-C or SIGTERM", runID, ErrCannotCancel)
	}
	j, err := store.Load(ctx, runID)
	if err != nil {
		return err
	}
	ls, err := store.LockState(ctx, runID)
	if err != nil {
		return err
	}
	if ls.Status != LockHeld {
		return fmt.Errorf("run %s is %w (status %s): nothing to cancel", runID, ErrNotRunning, j.Status)
	}
	return sr.RequestStop(ctx, runID, OperatorAction{Action: ActionCancel, By: by, At: time.Now().UTC(), Target: ls.Holder.String()})
}
