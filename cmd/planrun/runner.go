package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"planrun.dev/planrun/engine"
)

// runnerFlags are planrun runner's flags.
type runnerFlags struct {
	clusterKubeconfigs []string
	lockWait           time.Duration
}

// runnerCommand is what the Job of apply --in-cluster runs: it takes a submitted run to its end,
// whichever way it is going (a run rolling back when the last pod died finishes its rollback), so
// that every pod of the Job does the same thing. A run already over ends the pod as the run
// ended: 0 for a success, else the code that tells the Job not to try again.
var runnerCommand = &command{
	name:     "runner",
	usage:    "RUN --state k8s://CONTEXT/NAMESPACE [--cluster-kubeconfig CLUSTER=PATH]... [--lock-wait DUR]",
	summary:  "Take a run kept in a cluster to its end (what the Job of apply --in-cluster runs).",
	complete: completeRunIDs,
	flags: func(fs *pflag.FlagSet, a *app) {
		fs.StringArrayVar(&a.runnerOpts.clusterKubeconfigs, "cluster-kubeconfig", nil, "CLUSTER=PATH: reach plan cluster CLUSTER with the kubeconfig at PATH; CLUSTER= with the pod's service account (repeatable)")
		fs.DurationVar(&a.runnerOpts.lockWait, "lock-wait", time.Minute, "how long to wait for the lock of a runner that died to expire")
		fs.BoolVar(&a.rf.noRollback, "no-rollback", false, "on failure, keep the run as it is for repair and resume instead of rolling back")
	},
	run: func(ctx context.Context, a *app, args []string) error {
		return retryable(runRunner(ctx, a, args))
	},
}

// runRunner takes the run to its end.
func runRunner(ctx context.Context, a *app, args []string) error {
	if len(args) != 1 {
		return usagef("runner takes one run id")
	}
	if _, err := a.clusterStore(ctx, "runner"); err != nil {
		return err
	}
	overrides, err := clusterOverrides(a.runnerOpts.clusterKubeconfigs)
	if err != nil {
		return err
	}
	r, err := a.runner(ctx, false)
	if err != nil {
		return err
	}
	r.NoRollback, r.BreakStaleLock, r.LockWait = a.rf.noRollback, true, a.runnerOpts.lockWait
	runID := args[0]
	j, err := r.Store.Load(ctx, runID)
	if err != nil {
		return err
	}
	load := func(j *engine.Journal) (*engine.Plan, error) {
		p, err := a.recordedPlan(ctx, j)
		if err != nil {
			return nil, err
		}
		for name, kubeconfig := range overrides {
			c, ok := p.Clusters[name]
			if !ok {
				return nil, usagef("--cluster-kubeconfig %s: the plan has no cluster %q", name, name)
			}
			c.Kubeconfig, c.Context = kubeconfig, ""
		}
		return p, nil
	}
	switch j.Status {
	case engine.RunSucceeded:
		fmt.Fprintf(a.stdout, "run %s already succeeded\n", runID)
		return nil
	case engine.RunRolledBack, engine.RunFailed, engine.RunRollbackFailed:
		return &engine.RunError{RunID: runID, Status: j.Status, Err: errors.New(orText(j.Error, "ended before this runner"))}
	case engine.RunRollingBack:
		j, err = r.Rollback(ctx, runID, load)
	default: // pending, running (its runner died), interrupted (its pod was stopped)
		j, err = r.Resume(ctx, runID, load)
	}
	if err == nil && j != nil && j.Status == engine.RunRolledBack {
		// A rollback the runner finished is still a run that failed: the Job must not rerun it.
		err = &engine.RunError{RunID: runID, Status: j.Status, Err: errors.New(orText(j.Error, "rolled back"))}
	}
	return err
}

// retryableError is a runner's failure that another try may not meet (the API server
// unavailable, a timeout, a lock not yet expired): its exit code tells the Job to start the next
// pod, where a failed run, a bad argument or a missing permission fail the Job at once.
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// retryable marks err as worth another pod unless it is final: the run ended (RunError), the
// arguments or plan are wrong, the run is gone, or the runner lacks a permission or a
// credential (another pod has the same).
func retryable(err error) error {
	var re *engine.RunError
	var ue *usageError
	switch {
	case err == nil, errors.As(err, &re), errors.As(err, &ue), engine.AsErrorList(err) != nil,
		errors.Is(err, engine.ErrRunNotFound), apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return err
	}
	return &retryableError{err}
}

// clusterOverrides parses --cluster-kubeconfig.
func clusterOverrides(flags []string) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range flags {
		name, path, ok := strings.Cut(f, "=")
		if !ok || name == "" {
			return nil, usagef("--cluster-kubeconfig %q: want CLUSTER=PATH (CLUSTER= for the pod's service account)", f)
		}
		out[name] = path
	}
	return out, nil
}
