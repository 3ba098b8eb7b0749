package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/stepfiles"
	"planrun.dev/planrun/steps/storage"
)

// logsFollowEvery is how often logs -f looks for more output.
const logsFollowEvery = 300 * time.Millisecond

var logsCommand = &command{
	name:    "logs",
	usage:   "RUN [STEP] [-f]",
	summary: "Print the files a run's steps wrote (exec output, Job pod logs); -f follows a running step.",
	complete: func(ctx context.Context, a *app, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 1 {
			return completeStepIDs(ctx, a, args[0], toComplete)
		}
		return completeRunIDs(ctx, a, args, toComplete)
	},
	flags: func(fs *pflag.FlagSet, a *app) {
		fs.BoolVarP(&a.watch, "follow", "f", false, "follow the step's files as it writes them, until it ends")
	},
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) < 1 || len(args) > 2 {
			return usagef("logs takes a run id and optionally a step id")
		}
		store, err := a.store(ctx)
		if err != nil {
			return err
		}
		j, err := store.Load(ctx, args[0])
		if err != nil {
			return err
		}
		var steps []*engine.StepRecord
		for _, r := range j.Steps {
			if len(args) == 1 || r.ID == args[1] {
				steps = append(steps, r)
			}
		}
		if len(args) == 2 && len(steps) == 0 {
			return usagef("run %s has no step %q (planrun status %s lists them)", j.RunID, args[1], j.RunID)
		}
		if a.watch && len(steps) != 1 {
			return usagef("logs -f follows one step: give its id")
		}
		if a.watch && a.artifacts != "" {
			return usagef("logs -f follows a step on the runner's machine; --artifacts has the files of steps that ended")
		}
		if a.artifacts != "" && !a.watch {
			return a.remoteLogs(ctx, store, j, steps)
		}
		for _, r := range steps {
			dir, err := store.ArtifactDir(j.RunID, r.ID)
			if err != nil {
				return err
			}
			if a.watch {
				return followStep(ctx, a.stdout, store, j.RunID, r.ID, dir)
			}
			if err := printFiles(a.stdout, r.ID, dir, len(steps) > 1); err != nil {
				return err
			}
		}
		return nil
	},
}

// printFiles prints each file of a step, under a header naming it when there are several.
func printFiles(w io.Writer, stepID, dir string, headers bool) error {
	return stepfiles.Each(dir, func(name string, f *os.File, st os.FileInfo, several bool) error {
		if headers || several {
			fmt.Fprintf(w, "==> %s/%s <==\n", stepID, name)
		}
		_, err := io.Copy(w, io.LimitReader(f, st.Size()))
		return err
	})
}

// followed is how far logs -f printed a file, and which file that was (a file replaced by a
// rename, or truncated and written again, is printed from its start).
type followed struct {
	info   os.FileInfo
	offset int64
}

// followStep prints what a step's files hold and what is added to them, while the step waits
// to run or runs and its runner lives (the journal and the run's lock say so), until the files
// said everything.
func followStep(ctx context.Context, w io.Writer, store engine.Store, runID, stepID, dir string) error {
	seen := map[string]*followed{}
	current := ""
	gone := 0
	for {
		j, err := store.Load(ctx, runID)
		if err != nil {
			return err
		}
		r := j.Step(stepID)
		v := viewRun(ctx, store, j, time.Now())
		alive := v.status == engine.RunPending || v.status == engine.RunRunning || v.status == engine.RunRollingBack
		died := v.status == engine.RunInterrupted && j.Status != engine.RunInterrupted // its runner is gone
		stepActive := r == nil || r.Status == engine.StepPending || r.Status == engine.StepRunning
		waiting := alive && stepActive
		switch {
		case died && stepActive && gone+1 < watchGoneAfter:
			gone++ // no runner this moment: perhaps one is taking the run over
			waiting = true
		case alive:
			gone = 0
		}
		if err := printNew(w, stepID, dir, seen, &current); err != nil {
			return err
		}
		if !waiting {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil // Ctrl-C stops following, not the step
		case <-time.After(logsFollowEvery):
		}
	}
}

// printNew prints what was added to the step's files since the last call.
func printNew(w io.Writer, stepID, dir string, seen map[string]*followed, current *string) error {
	return stepfiles.Each(dir, func(name string, f *os.File, st os.FileInfo, several bool) error {
		fl := seen[name]
		if fl == nil || !os.SameFile(fl.info, st) || st.Size() < fl.offset {
			fl = &followed{info: st}
			seen[name] = fl
		}
		if st.Size() <= fl.offset {
			return nil
		}
		if name != *current && several {
			fmt.Fprintf(w, "==> %s/%s <==\n", stepID, name)
			*current = name
		}
		n, err := io.Copy(w, io.NewSectionReader(f, fl.offset, st.Size()-fl.offset))
		fl.offset += n
		return err
	})
}

// remoteLogs prints steps' files from --artifacts, where the runner (a pod, another machine)
// uploaded them.
func (a *app) remoteLogs(ctx context.Context, store engine.Store, j *engine.Journal, steps []*engine.StepRecord) error {
	cs, ok := asCluster(store)
	if !ok {
		return usagef("--artifacts: for runs kept in a cluster (--state k8s://…)")
	}
	loc, err := a.openArtifacts(ctx, cs)
	if err != nil {
		return err
	}
	defer loc.Close()
	for _, r := range steps {
		prefix := j.RunID + "/" + r.ID
		var names []string
		err := loc.Walk(ctx, prefix, func(e storage.Entry) error {
			if !e.Dir {
				names = append(names, e.Path)
			}
			return nil
		})
		if errors.Is(err, fs.ErrNotExist) {
			continue // the step wrote no files
		}
		if err != nil {
			return fmt.Errorf("files of step %s in %s: %w", r.ID, loc, err)
		}
		for _, name := range names {
			fmt.Fprintf(a.stdout, "==> %s <==\n", name)
			rc, err := loc.Open(ctx, name)
			if err != nil {
				return err
			}
			_, err = io.Copy(a.stdout, rc)
			rc.Close()
			if err != nil {
				return err
			}
		}
	}
	return nil
}
