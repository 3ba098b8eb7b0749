package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"planrun.dev/planrun/clusterstore"
	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/fleet"
	"planrun.dev/planrun/incluster"
)

// The executors of fleets: the scheduler (package fleet) decides when a target starts; these
// start its run, here or as a Job, and read how it stands from its journal.

// fleetRuns is what both executors share: the store, the fleet's plan, and a target's run id.
type fleetRuns struct {
	a     *app
	store engine.Store
	rec   *fleet.Record
}

// planFor loads the fleet's plan with a target's params.
func (f *fleetRuns) planFor(t *fleet.TargetRecord) (*engine.Plan, error) {
	p, err := engine.Parse(f.rec.Plan, f.rec.PlanSource, engine.LoadOptions{Params: engine.ParamValues{Fixed: t.Params}})
	if err != nil {
		return nil, fmt.Errorf("target %s: %w", t.Name, err)
	}
	f.a.applyClusterDefaults(p)
	return p, nil
}

// runFor says which run a target's start continues, or which new run it makes: the first run
// of a target is FLEET.TARGET; a target whose run was rolled back gets a new one, FLEET.TARGET.N.
// Fleet and target names are DNS labels, without dots: no two targets, of one fleet or of two,
// share a run.
// resume is false for a new run; done for a run that already succeeded.
func (f *fleetRuns) runFor(ctx context.Context, t *fleet.TargetRecord) (runID string, resume, done bool, err error) {
	base := f.rec.Name + "." + t.Name
	for n := 1; ; n++ {
		runID = base
		if n > 1 {
			runID = fmt.Sprintf("%s.%d", base, n)
		}
		j, err := f.store.Load(ctx, runID)
		switch {
		case errors.Is(err, engine.ErrRunNotFound):
			return runID, false, false, nil
		case err != nil:
			return "", false, false, err
		case j.Status == engine.RunSucceeded:
			return runID, false, true, nil
		case j.Status != engine.RunRolledBack:
			return runID, true, false, nil
		}
	}
}

// outcome reads a target's run from its journal: ended, or not (then alive says whether a
// runner is at work on it).
func (f *fleetRuns) outcome(ctx context.Context, t *fleet.TargetRecord) (fleet.Outcome, bool, error) {
	j, err := f.store.Load(ctx, t.RunID)
	if errors.Is(err, engine.ErrRunNotFound) {
		return fleet.Outcome{Stopped: true}, false, nil
	}
	if err != nil {
		return fleet.Outcome{}, false, err
	}
	switch j.Status {
	case engine.RunSucceeded:
		return fleet.Outcome{State: fleet.Succeeded, Status: string(j.Status)}, true, nil
	case engine.RunRolledBack, engine.RunFailed, engine.RunRollbackFailed:
		return fleet.Outcome{State: fleet.Failed, Status: string(j.Status), Error: j.Error}, true, nil
	}
	return fleet.Outcome{State: fleet.Started}, false, nil
}

// localExecutor runs targets in this process, each in its own goroutine.
type localExecutor struct {
	fleetRuns
	noRollback bool
	// runCtx is the context of the runs: the command's, so that Ctrl-C stops them at a safe
	// point, not the scheduler's step.
	runCtx context.Context

	wg      sync.WaitGroup
	mu      sync.Mutex
	running map[string]bool  // run ids with a goroutine at work
	ended   map[string]error // why a goroutine ended without the run ending, by run id
	changed chan struct{}    // a goroutine ended (buffered: one wake-up is enough)
}

var _ fleet.Executor = (*localExecutor)(nil)

func (e *localExecutor) Start(ctx context.Context, t *fleet.TargetRecord) error {
	runID, resume, done, err := e.runFor(ctx, t)
	if err != nil || done {
		t.RunID = runID
		return err
	}
	t.RunID = runID
	e.mu.Lock()
	if e.running[runID] {
		e.mu.Unlock()
		return nil
	}
	e.running[runID] = true
	delete(e.ended, runID)
	e.mu.Unlock()
	target := *t
	// The plan is loaded and the run submitted in the run's goroutine too: the scheduler goes
	// on starting the wave's other targets meanwhile.
	e.wg.Go(func() {
		err := e.run(target, runID, resume)
		e.mu.Lock()
		defer e.mu.Unlock()
		delete(e.running, runID)
		var re *engine.RunError
		if err != nil && !errors.As(err, &re) {
			e.ended[runID] = err // the run did not end: a lock, an interruption, a plan error
		}
		select {
		case e.changed <- struct{}{}:
		default:
		}
	})
	return nil
}

// run runs a target's run to its end, submitting it first when it is new.
func (e *localExecutor) run(t fleet.TargetRecord, runID string, resume bool) error {
	p, err := e.planFor(&t)
	if err != nil {
		return err
	}
	r := &engine.Runner{Store: e.store, Logger: e.a.logger, NoRollback: e.noRollback, BreakStaleLock: true}
	if !resume {
		if _, err := r.Submit(e.runCtx, p, engine.ApplyOptions{RunID: runID}); err != nil {
			return err
		}
	}
	load := func(*engine.Journal) (*engine.Plan, error) { return p, nil }
	if j, err := e.store.Load(e.runCtx, runID); err == nil && j.Status == engine.RunRollingBack {
		// Its runner died rolling it back: finish the rollback, as an in-cluster runner does.
		_, err = r.Rollback(e.runCtx, runID, load)
		return err
	}
	_, err = r.Resume(e.runCtx, runID, load)
	return err
}

func (e *localExecutor) Check(ctx context.Context, t *fleet.TargetRecord) (fleet.Outcome, error) {
	e.mu.Lock()
	running, why := e.running[t.RunID], e.ended[t.RunID]
	e.mu.Unlock()
	var le *engine.LockedError
	switch {
	case running:
		return fleet.Outcome{State: fleet.Started}, nil
	case why != nil && !errors.Is(why, engine.ErrInterrupted) && !errors.As(why, &le):
		// It could not run: its plan did not load with the target's params, or its journal
		// could not be written.
		return fleet.Outcome{State: fleet.Failed, Status: "Failed", Error: why.Error()}, nil
	}
	o, over, err := e.outcome(ctx, t)
	if err != nil || over {
		return o, err
	}
	// Not run by this process: another runner may be at work on it.
	if st, err := e.store.LockState(ctx, t.RunID); err == nil && st.Status == engine.LockHeld {
		return fleet.Outcome{State: fleet.Started}, nil
	}
	return fleet.Outcome{State: fleet.Started, Stopped: true}, nil
}

func (e *localExecutor) Wait() { e.wg.Wait() }

func (e *localExecutor) Changed() <-chan struct{} { return e.changed }

// jobExecutor runs each target as a Job in the cluster that keeps the runs (apply --in-cluster
// for each), so that the cluster's nodes carry the fleet.
type jobExecutor struct {
	fleetRuns
	store *clusterstore.Store
	opts  incluster.Options
}

var _ fleet.Executor = (*jobExecutor)(nil)

func (e *jobExecutor) Start(ctx context.Context, t *fleet.TargetRecord) error {
	runID, resume, done, err := e.runFor(ctx, t)
	if err != nil || done {
		t.RunID = runID
		return err
	}
	p, err := e.planFor(t)
	if err != nil {
		return err
	}
	launch, err := incluster.Prepare(ctx, e.store, p, e.opts)
	if err != nil {
		return err
	}
	if !resume {
		r := &engine.Runner{Store: e.store, Logger: e.a.logger}
		if _, err := r.Submit(ctx, p, engine.ApplyOptions{RunID: runID}); err != nil {
			return err
		}
	} else if err := incluster.Relaunch(ctx, e.store, runID); err != nil {
		return err
	}
	t.RunID = runID
	_, err = launch.Start(ctx, runID)
	return err
}

func (e *jobExecutor) Check(ctx context.Context, t *fleet.TargetRecord) (fleet.Outcome, error) {
	o, over, err := e.outcome(ctx, t)
	if err != nil {
		return o, err
	}
	if over {
		if o.Status == string(engine.RunSucceeded) || o.Status == string(engine.RunRolledBack) {
			if err := incluster.Cleanup(ctx, e.store, t.RunID); err != nil {
				e.a.logger.Warn("cleaning up a target's runner", "run", t.RunID, "err", err)
			}
		}
		return o, nil
	}
	st, err := incluster.Runner(ctx, e.store, t.RunID)
	switch {
	case err != nil:
		return fleet.Outcome{State: fleet.Started, Stopped: true}, nil // no Job: start one
	case st.Failed != "":
		return fleet.Outcome{State: fleet.Failed, Status: "Failed", Error: st.Failed}, nil
	case !st.Active:
		return fleet.Outcome{State: fleet.Started, Stopped: true}, nil
	}
	return fleet.Outcome{State: fleet.Started}, nil
}

func (e *jobExecutor) Wait() {}

func (e *jobExecutor) Changed() <-chan struct{} { return nil }
