package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/pflag"

	"planrun.dev/planrun/engine"
)

// cancelPollEvery is how often cancel --wait looks whether the runner let go of the run.
const cancelPollEvery = 200 * time.Millisecond

var cancelCommand = &command{
	name:     "cancel",
	usage:    "RUN [--wait=false] [--timeout D]",
	summary:  "Ask a run's runner, wherever it runs, to stop at a safe point (as Ctrl-C does); planrun resume continues it.",
	complete: completeRunIDs,
	flags: func(fs *pflag.FlagSet, a *app) {
		fs.BoolVar(&a.cancel.wait, "wait", true, "wait until the runner stopped")
		fs.DurationVar(&a.cancel.timeout, "timeout", 10*time.Minute, "how long --wait waits (a step stops at its next safe point)")
	},
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 1 {
			return usagef("cancel takes one run id")
		}
		store, err := a.store(ctx)
		if err != nil {
			return err
		}
		runID := args[0]
		if err := engine.CancelRun(ctx, store, runID, engine.CurrentActor()); err != nil {
			return err
		}
		if !a.cancel.wait {
			fmt.Fprintf(a.stdout, "run %s: stop requested\n", runID)
			return nil
		}
		fmt.Fprintf(a.stderr, "run %s: stop requested; waiting for it to reach a safe point\n", runID)
		deadline := time.Now().Add(a.cancel.timeout)
		for {
			ls, err := store.LockState(ctx, runID)
			if err != nil {
				return err
			}
			if ls.Status != engine.LockHeld {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("run %s still running after %s; the request stands", runID, a.cancel.timeout)
			}
			select {
			case <-ctx.Done():
				return engine.ErrInterrupted
			case <-time.After(cancelPollEvery):
			}
		}
		j, err := store.Load(ctx, runID)
		if err != nil {
			return err
		}
		fmt.Fprintf(a.stdout, "run %s stopped: %s\n", runID, j.Status)
		if j.Status == engine.RunInterrupted {
			fmt.Fprintf(a.stdout, "  planrun resume %s   continues it\n  planrun rollback %s undoes what it did\n", runID, runID)
		}
		return nil
	},
}

// cancelFlags are planrun cancel's flags.
type cancelFlags struct {
	wait    bool
	timeout time.Duration
}
