package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"planrun.dev/planrun/clusterstore"
	"planrun.dev/planrun/engine"
)

// runFlags are the flags of apply, resume and rollback (validate uses set and values). They live
// in the app of one invocation, so that nothing carries over from one command to the next.
type runFlags struct {
	set        []string
	values     []string
	dryRun     bool
	runID      string
	noRollback bool
	breakLock  bool
	planFile   string
}

var applyCommand = &command{
	name:     "apply",
	usage:    "PLAN.yaml [--set name=value]... [--values FILE]... [--dry-run] [--in-cluster --state k8s://CONTEXT/NAMESPACE]",
	summary:  "Start a run of a plan.",
	complete: completePlanFile,
	flags: func(fs *pflag.FlagSet, a *app) {
		fs.StringArrayVar(&a.rf.set, "set", nil, "set a param: name=value (repeatable)")
		fs.StringArrayVar(&a.rf.values, "values", nil, "YAML file of param values (repeatable; later wins, --set wins over all)")
		fs.BoolVar(&a.rf.dryRun, "dry-run", false, "change nothing: steps use server-side dry run and say what they would do")
		fs.StringVar(&a.rf.runID, "run-id", "", "name of the run (default: plan name, time and a random suffix)")
		fs.BoolVar(&a.rf.noRollback, "no-rollback", false, "on failure, keep the run as it is for repair and resume instead of rolling back")
		a.ic.register(fs, true)
		a.fleet.register(fs)
		a.forEach.register(fs)
	},
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 1 {
			return usagef("apply takes one plan file, got %d arguments", len(args))
		}
		jsonOut, err := a.jsonOutput()
		if err != nil {
			return err
		}
		if a.fleet.targets != "" || a.forEach.resource != "" {
			return applyFleet(ctx, a, args[0], jsonOut)
		}
		sets := a.rf.set
		if a.namespace != "" { // -n is a shorthand for --set namespace=..., as kubectl users expect
			sets = append([]string{"namespace=" + a.namespace}, sets...)
		}
		p, err := engine.Load(args[0], engine.LoadOptions{Params: engine.ParamValues{Set: sets, Files: a.rf.values}})
		if err != nil {
			return err
		}
		a.applyClusterDefaults(p)
		if a.ic.enabled {
			return applyInCluster(ctx, a, p, jsonOut)
		}
		r, err := a.runner(ctx, jsonOut)
		if err != nil {
			return err
		}
		r.NoRollback = a.rf.noRollback
		j, err := r.Apply(ctx, p, engine.ApplyOptions{RunID: a.rf.runID, DryRun: a.rf.dryRun})
		a.summary(j, jsonOut, err)
		return err
	},
}

// runner builds the engine's runner with the CLI's renderer as observer.
func (a *app) runner(ctx context.Context, jsonOut bool) (*engine.Runner, error) {
	store, err := a.store(ctx)
	if err != nil {
		return nil, err
	}
	return &engine.Runner{
		Store:          store,
		Observer:       newRenderer(a.stdout, jsonOut),
		Logger:         a.logger,
		BreakStaleLock: a.rf.breakLock,
	}, nil
}

// summary tells the operator what to do next after a run ends.
func (a *app) summary(j *engine.Journal, jsonOut bool, err error) {
	if j == nil || jsonOut {
		return
	}
	if j.DryRun {
		// A dry run keeps no journal: there is nothing to resume or roll back.
		what := "finished"
		if j.Status != engine.RunSucceeded {
			what = strings.ToLower(string(j.Status)) + " (see above); fix the cause and dry-run again"
		}
		fmt.Fprintf(a.stdout, "dry run of %s %s: nothing was changed\n", j.Plan.Name, what)
		return
	}
	switch j.Status {
	case engine.RunSucceeded:
		fmt.Fprintf(a.stdout, "run %s succeeded (planrun status %s)\n", j.RunID, j.RunID)
	case engine.RunInterrupted:
		fmt.Fprintf(a.stdout, "run %s interrupted: continue with planrun resume %s, or undo with planrun rollback %s\n", j.RunID, j.RunID, j.RunID)
	case engine.RunFailed:
		fmt.Fprintf(a.stdout, "run %s failed: fix the cause, then planrun resume %s (or planrun rollback %s)\n", j.RunID, j.RunID, j.RunID)
	case engine.RunRolledBack:
		fmt.Fprintf(a.stdout, "run %s failed and was rolled back\n", j.RunID)
	case engine.RunRollbackFailed:
		fmt.Fprintf(a.stdout, "run %s: rollback incomplete; repair, then planrun rollback %s\n", j.RunID, j.RunID)
	}
}

// loadRunPlan reloads the plan of a run for resume: the file recorded in the journal (or
// --plan), with the params the run started with.
func loadRunPlan(ctx context.Context, a *app) func(*engine.Journal) (*engine.Plan, error) {
	return func(j *engine.Journal) (*engine.Plan, error) {
		file := j.Plan.File
		if a.rf.planFile != "" {
			file = a.rf.planFile
		}
		if _, err := os.Stat(file); err != nil {
			if a.rf.planFile == "" && clusterstore.IsURL(a.stateName()) {
				// Runs kept in a cluster are resumed elsewhere than where they started (a Job,
				// another machine): the plan they started from is in the store.
				return a.recordedPlan(ctx, j)
			}
			return nil, fmt.Errorf("plan file of run %s: %v (give its new place with --plan FILE)", j.RunID, err)
		}
		p, err := engine.Load(file, engine.LoadOptions{Params: engine.ParamValues{Fixed: j.Params}})
		if err != nil {
			return nil, err
		}
		a.applyClusterDefaults(p)
		return p, nil
	}
}

// recordedPlan is the plan as run j started from it, as the store keeps it.
func (a *app) recordedPlan(ctx context.Context, j *engine.Journal) (*engine.Plan, error) {
	store, err := a.store(ctx)
	if err != nil {
		return nil, err
	}
	src, err := store.PlanSource(ctx, j.RunID)
	if err != nil {
		return nil, fmt.Errorf("plan of run %s: %v (give it with --plan FILE)", j.RunID, err)
	}
	p, err := engine.Parse(j.Plan.File, src, engine.LoadOptions{Params: engine.ParamValues{Fixed: j.Params}})
	if err != nil {
		return nil, err
	}
	a.applyClusterDefaults(p)
	return p, nil
}

var resumeCommand = &command{
	name:     "resume",
	usage:    "[RUN] [--plan FILE] [--break-lock]",
	summary:  "Continue a run that stopped (the latest run if none is named).",
	complete: completeRunIDs,
	flags: func(fs *pflag.FlagSet, a *app) {
		fs.StringVar(&a.rf.planFile, "plan", "", "plan file to continue with (default: the file the run started from)")
		fs.BoolVar(&a.rf.breakLock, "break-lock", false, "take over a stale lock left by a runner that died")
		fs.BoolVar(&a.rf.noRollback, "no-rollback", false, "on failure, keep the run as it is for repair and resume instead of rolling back")
	},
	run: func(ctx context.Context, a *app, args []string) error {
		jsonOut, err := a.jsonOutput()
		if err != nil {
			return err
		}
		runID, err := a.runArg(ctx, args)
		if err != nil {
			return err
		}
		r, err := a.runner(ctx, jsonOut)
		if err != nil {
			return err
		}
		r.NoRollback = a.rf.noRollback
		j, err := r.Resume(ctx, runID, loadRunPlan(ctx, a))
		a.summary(j, jsonOut, err)
		return err
	},
}

var rollbackCommand = &command{
	name:     "rollback",
	usage:    "RUN [--plan FILE] [--break-lock]",
	summary:  "Undo the completed steps of a run, in reverse order.",
	complete: completeRunIDs,
	flags: func(fs *pflag.FlagSet, a *app) {
		fs.StringVar(&a.rf.planFile, "plan", "", "plan file whose rollback blocks to use (default: the plan as the run started)")
		fs.BoolVar(&a.rf.breakLock, "break-lock", false, "take over a stale lock left by a runner that died")
	},
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 1 {
			return usagef("rollback takes one run id (see planrun runs)")
		}
		jsonOut, err := a.jsonOutput()
		if err != nil {
			return err
		}
		load := func(j *engine.Journal) (*engine.Plan, error) {
			if a.rf.planFile != "" {
				return loadRunPlan(ctx, a)(j)
			}
			return a.recordedPlan(ctx, j)
		}
		var was engine.RunStatus // how the run stood before this rollback
		r, err := a.runner(ctx, jsonOut)
		if err != nil {
			return err
		}
		j, err := r.Rollback(ctx, args[0], func(j *engine.Journal) (*engine.Plan, error) {
			was = j.Status
			return load(j)
		})
		if j != nil && !jsonOut && err == nil && j.Status == engine.RunRolledBack {
			fmt.Fprintf(a.stdout, "run %s %s\n", j.RunID, rolledBackFrom(was))
			return nil
		}
		a.summary(j, jsonOut, err)
		return err
	},
}

// rolledBackFrom says what `planrun rollback` did, given how the run stood before: an
// interrupted run was not a failed one.
func rolledBackFrom(was engine.RunStatus) string {
	switch was {
	case engine.RunRolledBack:
		return "was already rolled back"
	case engine.RunRunning, engine.RunInterrupted:
		return "was interrupted and has been rolled back"
	case engine.RunFailed:
		return "failed and has been rolled back"
	case engine.RunRollingBack, engine.RunRollbackFailed:
		return "has finished rolling back"
	}
	return "has been rolled back"
}

// runArg returns the run named on the command line, or the latest run.
func (a *app) runArg(ctx context.Context, args []string) (string, error) {
	switch len(args) {
	case 0:
		store, err := a.store(ctx)
		if err != nil {
			return "", err
		}
		runs, err := store.List(ctx)
		if err != nil {
			return "", err
		}
		if len(runs) == 0 {
			return "", fmt.Errorf("no runs in %s", a.stateName())
		}
		return runs[len(runs)-1].RunID, nil
	case 1:
		return args[0], nil
	}
	return "", usagef("expected at most one run id, got %d", len(args))
}
