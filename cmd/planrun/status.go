package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"planrun.dev/planrun/engine"
)

var statusCommand = &command{
	name:     "status",
	usage:    "[RUN] [-w] [-o json]",
	summary:  "Show a run step by step (the latest run if none is named); -w follows it until it ends.",
	complete: completeRunIDs,
	flags: func(fs *pflag.FlagSet, a *app) {
		fs.BoolVarP(&a.watch, "watch", "w", false, "follow the run as its runner (here or elsewhere) checkpoints it, until it ends; exit as the run does")
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
		store, err := a.store(ctx)
		if err != nil {
			return err
		}
		if a.watch {
			runner := runnerOf(ctx, store, runID)
			err := watchRun(ctx, store, runID, newRenderer(a.stdout, jsonOut), runner)
			if runner != nil && ctx.Err() == nil {
				cleanUpRunner(ctx, a, store, runID)
			}
			return err
		}
		j, err := store.Load(ctx, runID)
		if err != nil {
			return err
		}
		v := viewRun(ctx, store, j, time.Now())
		if jsonOut {
			j.Status = v.status
			return writeJSON(a.stdout, struct {
				*engine.Journal
				Runner string `json:"runner,omitempty"`
			}{j, v.runner})
		}
		printStatus(a.stdout, v)
		return nil
	},
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printStatus prints a run the way `argo get` prints a workflow: a header, then a table of steps.
func printStatus(w io.Writer, v runView) {
	j := v.j
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Run:\t%s\n", j.RunID)
	fmt.Fprintf(tw, "Plan:\t%s v%d (%s)\n", j.Plan.Name, j.Plan.Version, j.Plan.File)
	fmt.Fprintf(tw, "Status:\t%s\n", v.status)
	if v.runner != "" {
		fmt.Fprintf(tw, "Runner:\t%s\n", v.runner)
	}
	fmt.Fprintf(tw, "Started:\t%s\n", j.Started.Local().Format(time.RFC1123))
	if j.Finished != nil {
		fmt.Fprintf(tw, "Finished:\t%s\n", j.Finished.Local().Format(time.RFC1123))
	}
	fmt.Fprintf(tw, "Duration:\t%s\n", roundDuration(v.end.Sub(j.Started)))
	if len(j.Params) > 0 {
		keys := sortedKeys(j.Params)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%v", k, j.Params[k])
		}
		fmt.Fprintf(tw, "Params:\t%s\n", strings.Join(parts, " "))
	}
	if j.Error != "" {
		fmt.Fprintf(tw, "Message:\t%s\n", firstLine(j.Error))
	}
	// Who did what, for the shift that takes the run over.
	for i, act := range j.Actions {
		label := ""
		if i == 0 {
			label = "Actions:"
		}
		fmt.Fprintf(tw, "%s\t%s by %s at %s\n", label, act.Action, act.By, act.At.Local().Format(time.RFC1123))
	}
	tw.Flush()
	fmt.Fprintln(w)

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STEP\tTYPE\tSTATUS\tATTEMPTS\tDURATION\tMESSAGE")
	for _, r := range j.Steps {
		name := r.ID
		switch {
		case r.Hook != "":
			name = fmt.Sprintf("[%s] %s", r.Hook, r.ID)
		case r.RollbackOf != "":
			name = fmt.Sprintf(" └ undo %s: %s", r.RollbackOf, r.ID)
		}
		dur := "-"
		if r.Started != nil {
			e := v.end
			if r.Finished != nil {
				e = *r.Finished
			}
			dur = roundDuration(e.Sub(*r.Started)).String()
		}
		msg := r.Error
		if r.RollbackError != "" {
			msg = "rollback failed: " + r.RollbackError
		}
		if r.Status == engine.StepSkipped {
			msg = "when was false"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", name, r.Type, r.Status, r.Attempts, dur, truncate(firstLine(msg), 100))
	}
	tw.Flush()
}

func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

var runsCommand = &command{
	name:     "runs",
	usage:    "[-o json]",
	summary:  "List the runs in the state folder, oldest first.",
	complete: completeNone,
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 0 {
			return usagef("runs takes no arguments")
		}
		jsonOut, err := a.jsonOutput()
		if err != nil {
			return err
		}
		store, err := a.store(ctx)
		if err != nil {
			return err
		}
		runs, err := store.List(ctx)
		if err != nil {
			return err
		}
		type row struct {
			RunID   string           `json:"runID"`
			Plan    string           `json:"plan,omitempty"`
			Version int              `json:"version,omitempty"`
			Status  engine.RunStatus `json:"status"`
			Started time.Time        `json:"started"`
			Steps   int              `json:"steps"`
			Done    int              `json:"done"`
			Runner  string           `json:"runner,omitempty"`
			Error   string           `json:"error,omitempty"`
		}
		now := time.Now()
		rows := []row{}
		for _, e := range runs {
			if e.Err != nil {
				// Listed, never hidden: the operator has to see a run that cannot be resumed.
				status := statusUnreadable // e.g. a journal of another planrun release
				if errors.Is(e.Err, engine.ErrCorruptJournal) {
					status = statusCorrupt
				}
				rows = append(rows, row{RunID: e.RunID, Status: status, Started: e.Time, Error: e.Err.Error()})
				continue
			}
			v := viewRun(ctx, store, e.Journal, now)
			done, total := progress(e.Journal)
			rows = append(rows, row{e.RunID, e.Journal.Plan.Name, e.Journal.Plan.Version, v.status, e.Journal.Started, total, done, v.runner, ""})
		}
		if jsonOut {
			return writeJSON(a.stdout, rows)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RUN\tPLAN\tSTATUS\tSTEPS\tSTARTED\tNOTE")
		for _, r := range rows {
			plan, note := fmt.Sprintf("%s v%d", r.Plan, r.Version), r.Runner
			if r.Error != "" {
				plan, note = "?", r.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\t%s\n", r.RunID, plan, r.Status, r.Done, r.Steps, r.Started.Local().Format("2006-01-02 15:04:05"), firstLine(note))
		}
		return tw.Flush()
	},
}

// Shown for a run whose journal cannot be trusted, or cannot be read by this planrun.
const (
	statusCorrupt    engine.RunStatus = "Corrupt"
	statusUnreadable engine.RunStatus = "Unreadable"
)

func progress(j *engine.Journal) (done, total int) {
	for _, r := range j.Steps {
		if r.RollbackOf != "" {
			continue
		}
		total++
		if r.Status == engine.StepSucceeded || r.Status == engine.StepSkipped || r.Status == engine.StepRolledBack {
			done++
		}
	}
	return done, total
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sortStrings(keys)
	return keys
}
