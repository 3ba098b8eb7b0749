package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/spf13/pflag"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/storage"
)

// logsFollowEvery is how often logs -f looks for more output.
const logsFollowEvery = 300 * time.Millisecond

var logsCommand = &command{
	name:    "logs",
	usage:   "RUN [STEP] [-f]",
	summary: "Print the files a run's steps wrote (exec output, Job pod logs); -f follows a running step.",
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

// stepFiles are the regular files of a step's folder, by name.
func stepFiles(dir string) ([]string, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		names = append(names, rel)
		return err
	})
	sort.Strings(names)
	return names, err
}

// printFiles prints each file of a step, under a header naming it when there are several.
func printFiles(w io.Writer, stepID, dir string, headers bool) error {
	names, err := stepFiles(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		if headers || len(names) > 1 {
			fmt.Fprintf(w, "==> %s/%s <==\n", stepID, name)
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		_, err = io.Copy(w, f)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// followStep prints what a step's files hold and what is added to them, until the step is no
// longer running (its journal says so) and the files said everything.
func followStep(ctx context.Context, w io.Writer, store engine.Store, runID, stepID, dir string) error {
	offsets := map[string]int64{}
	current := ""
	for {
		running := false
		if j, err := store.Load(ctx, runID); err == nil {
			if r := j.Step(stepID); r != nil && r.Status == engine.StepRunning {
				running = true
			}
		}
		names, err := stepFiles(dir)
		if err != nil {
			return err
		}
		for _, name := range names {
			f, err := os.Open(filepath.Join(dir, name))
			if err != nil {
				continue
			}
			if _, err := f.Seek(offsets[name], io.SeekStart); err == nil {
				buf, _ := io.ReadAll(f)
				if len(buf) > 0 {
					if name != current && len(names) > 1 {
						fmt.Fprintf(w, "==> %s/%s <==\n", stepID, name)
						current = name
					}
					w.Write(buf)
					offsets[name] += int64(len(buf))
				}
			}
			f.Close()
		}
		if !running {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil // Ctrl-C stops following, not the step
		case <-time.After(logsFollowEvery):
		}
	}
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
