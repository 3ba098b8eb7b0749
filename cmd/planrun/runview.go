package main

import (
	"context"
	"fmt"
	"time"

	"planrun.dev/planrun/engine"
)

// runView is a run as status and runs show it. The journal says what its runner last wrote; a
// runner killed with SIGKILL (or a lost machine) writes nothing more, so a journal that says
// Running is only believed while the run's lock has a live holder.
type runView struct {
	j      *engine.Journal
	status engine.RunStatus // the status shown
	// runner says why the journal's own status is not the whole truth, "" when it is.
	runner string
	// end closes the durations: now for a live run, the finish time, or the last checkpoint of
	// a run that stopped unfinished (its clock stopped with its runner).
	end time.Time
}

func viewRun(ctx context.Context, store engine.Store, j *engine.Journal, now time.Time) runView {
	v := runView{j: j, status: j.Status, end: j.Updated}
	if j.Finished != nil {
		v.end = *j.Finished
		return v
	}
	if j.Status == engine.RunPending {
		v.runner, v.end = "submitted; waiting for its runner", now
		return v
	}
	if j.Status != engine.RunRunning && j.Status != engine.RunRollingBack {
		return v // interrupted or failed at a safe point: nothing runs
	}
	ls, err := store.LockState(ctx, j.RunID)
	switch {
	case err != nil:
		v.runner = fmt.Sprintf("whether its runner lives is unknown: %v", err)
	case ls.Status == engine.LockHeld:
		v.end = now
	case ls.Status == engine.LockForeign:
		v.runner = fmt.Sprintf("held by %s (cannot check)", ls.Holder.Host)
		v.end = now
	default:
		brk := ""
		if ls.Status == engine.LockStale {
			brk = " --break-lock" // the dead runner's holder record is still there
		}
		v.runner = fmt.Sprintf("its runner is gone (killed or crashed); planrun resume %s%s, or planrun rollback %s%s", j.RunID, brk, j.RunID, brk)
		if j.Status == engine.RunRunning {
			v.status = engine.RunInterrupted
		}
	}
	return v
}
