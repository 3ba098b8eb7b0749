package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"planrun.dev/planrun/engine"
)

var statusCommand = &command{
	name:    "status",
	usage:   "[RUN] [-o json]",
	summary: "Show a run step by step (the latest run if none is named).",
	run: func(ctx context.Context, a *app, args []string) error {
		jsonOut, err := a.jsonOutput()
		if err != nil {
			return err
		}
		runID, err := a.runArg(ctx, args)
		if err != nil {
			return err
		}
		j, err := a.store().Load(ctx, runID)
		if err != nil {
			return err
		}
		if jsonOut {
			return writeJSON(a.stdout, j)
		}
		printStatus(a.stdout, j, time.Now())
		return nil
	},
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printStatus prints a run the way `argo get` prints a workflow: a header, then a table of steps.
func printStatus(w io.Writer, j *engine.Journal, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Run:\t%s\n", j.RunID)
	fmt.Fprintf(tw, "Plan:\t%s v%d (%s)\n", j.Plan.Name, j.Plan.Version, j.Plan.File)
	fmt.Fprintf(tw, "Status:\t%s\n", j.Status)
	fmt.Fprintf(tw, "Started:\t%s\n", j.Started.Local().Format(time.RFC1123))
	end := now
	if j.Finished != nil {
		end = *j.Finished
		fmt.Fprintf(tw, "Finished:\t%s\n", j.Finished.Local().Format(time.RFC1123))
	}
	fmt.Fprintf(tw, "Duration:\t%s\n", roundDuration(end.Sub(j.Started)))
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
			e := now
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
	name:    "runs",
	usage:   "[-o json]",
	summary: "List the runs in the state folder, oldest first.",
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 0 {
			return usagef("runs takes no arguments")
		}
		jsonOut, err := a.jsonOutput()
		if err != nil {
			return err
		}
		runs, err := a.store().List(ctx)
		if err != nil {
			return err
		}
		if jsonOut {
			type row struct {
				RunID   string           `json:"runID"`
				Plan    string           `json:"plan"`
				Version int              `json:"version"`
				Status  engine.RunStatus `json:"status"`
				Started time.Time        `json:"started"`
				Steps   int              `json:"steps"`
				Done    int              `json:"done"`
			}
			rows := []row{}
			for _, j := range runs {
				done, total := progress(j)
				rows = append(rows, row{j.RunID, j.Plan.Name, j.Plan.Version, j.Status, j.Started, total, done})
			}
			return writeJSON(a.stdout, rows)
		}
		tw := tabwriter.NewWriter(a.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "RUN\tPLAN\tSTATUS\tSTEPS\tSTARTED")
		for _, j := range runs {
			done, total := progress(j)
			fmt.Fprintf(tw, "%s\t%s v%d\t%s\t%d/%d\t%s\n", j.RunID, j.Plan.Name, j.Plan.Version, j.Status, done, total, j.Started.Local().Format("2006-01-02 15:04:05"))
		}
		return tw.Flush()
	},
}

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
