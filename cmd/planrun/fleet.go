package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/fleet"
	"planrun.dev/planrun/incluster"
	"planrun.dev/planrun/internal/images"
	"planrun.dev/planrun/internal/version"
)

// fleetFlags are apply's flags for fleets.
type fleetFlags struct {
	targets  string
	name     string
	parallel int
	waves    string
	budget   string
	gate     string
}

func (f *fleetFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.targets, "targets", "", "run the plan once per target of this file (a list of {name, params}, or {targets: [...], rollout: {...}}): a fleet")
	fs.StringVar(&f.name, "fleet", "", "name of the fleet (default: plan name and targets file name); a fleet run again skips its targets that succeeded")
	fs.IntVar(&f.parallel, "parallel", 0, "fleets: targets running at once, at most (rollout.maxParallel; default 1)")
	fs.StringVar(&f.waves, "waves", "", "fleets: wave sizes, such as 1,5,25% (the last repeats; default one wave)")
	fs.StringVar(&f.budget, "failure-budget", "", "fleets: failed targets tolerated, a count or a percentage (default 0: the first failure stops new starts)")
	fs.StringVar(&f.gate, "gate", "", "fleets: expression over the finished targets that must hold before each wave after the first, such as 'failed == 0'")
}

// rollout is the rollout the flags set (zero fields: not set).
func (f *fleetFlags) rollout() (fleet.Rollout, error) {
	var r fleet.Rollout
	if f.parallel < 0 {
		return r, usagef("--parallel %d: want at least 1", f.parallel)
	}
	r.MaxParallel = f.parallel
	if f.waves != "" {
		if err := r.SetWaves(strings.Split(f.waves, ",")); err != nil {
			return r, usagef("--waves: %v", err)
		}
	}
	if f.budget != "" {
		if err := r.SetBudget(f.budget); err != nil {
			return r, usagef("--failure-budget: %v", err)
		}
	}
	if f.gate != "" {
		if err := fleet.CheckGate(f.gate); err != nil {
			return r, usagef("--gate: %v", err)
		}
		r.Gate = f.gate
	}
	return r, nil
}

// fleetStore is where the fleets of the run store are kept: ConfigMaps next to PlanRuns, or a
// folder in the state folder.
func (a *app) fleetStore(ctx context.Context) (fleet.Store, error) {
	store, err := a.store(ctx)
	if err != nil {
		return nil, err
	}
	if cs, ok := asCluster(store); ok {
		client, err := kubernetes.NewForConfig(cs.RESTConfig())
		if err != nil {
			return nil, err
		}
		return &fleet.ConfigMapStore{Client: client, Namespace: cs.Namespace()}, nil
	}
	return &fleet.DirStore{Dir: filepath.Join(a.stateName(), ".fleets")}, nil
}

// applyFleet runs the plan over a targets file: each target's params are checked against the
// plan first (one error at its place in the targets file), then the fleet is recorded (or, when
// it exists, taken up again: targets that succeeded are skipped) and scheduled.
func applyFleet(ctx context.Context, a *app, planFile string, jsonOut bool) error {
	var err error
	if a.rf.dryRun || a.rf.runID != "" {
		return usagef("--targets: --dry-run and --run-id are for one run (a fleet's runs are FLEET.TARGET)")
	}
	var file *fleet.File
	switch {
	case a.fleet.targets != "" && a.forEach.resource != "":
		return usagef("--targets and --for-each: give one")
	case a.forEach.resource != "":
		if file, err = a.forEachTargets(ctx); err != nil {
			return err
		}
	default:
		if file, err = fleet.ReadFile(a.fleet.targets); err != nil {
			return usagef("%v", err)
		}
	}
	flags, err := a.fleet.rollout()
	if err != nil {
		return err
	}
	rollout := file.Rollout
	rollout.Override(flags)
	var planName string
	var source []byte
	for _, t := range file.Targets {
		params := engine.ParamValues{Set: a.rf.set, Files: a.rf.values}
		if t.Params != nil {
			params.Mappings = []engine.ValuesMapping{{File: file.Path, Node: t.Params}}
		}
		p, err := engine.Load(planFile, engine.LoadOptions{Params: params})
		if err != nil {
			return fmt.Errorf("target %s (%s): %w", t.Name, t.Pos, err)
		}
		planName, source = p.Name(), p.Source
		// The target's values as the plan resolved them (--set and --values apply to all).
		for i := range file.Targets {
			if file.Targets[i].Name == t.Name {
				file.Targets[i].ParamValues = p.Values
			}
		}
	}
	name := a.fleet.name
	if name == "" {
		from := file.Path
		if a.forEach.resource != "" {
			from, _, _ = strings.Cut(a.forEach.resource, ".")
		}
		name = defaultFleetName(planName, from)
	}
	fs, err := a.fleetStore(ctx)
	if err != nil {
		return err
	}
	executor := map[string]any{"mode": "local", "noRollback": a.rf.noRollback}
	if a.ic.enabled {
		executor = map[string]any{"mode": "in-cluster", "image": a.ic.image, "hostNetwork": a.ic.hostNetwork,
			"serviceAccount": a.ic.serviceAccount, "clusterSecrets": a.ic.clusterSecrets, "noRollback": a.rf.noRollback}
	}
	rec, err := fleet.New(name, planFile, planName, source, file.Targets, rollout, executor)
	if err != nil {
		return usagef("--fleet: %v", err)
	}
	err = fs.Create(ctx, rec)
	if errors.Is(err, fleet.ErrExists) {
		_, err = fs.Update(ctx, name, func(old *fleet.Record) error {
			if string(old.PlanSource) != string(source) {
				return fmt.Errorf("fleet %s exists and ran another version of the plan; name this one with --fleet", name)
			}
			if !sameTargets(old, rec) {
				return fmt.Errorf("fleet %s exists with other targets; name this one with --fleet", name)
			}
			if busy := old.Busy(); busy != nil {
				return busy
			}
			// Targets to run again take the params given now (a fixed value, a new --set).
			for i, t := range old.Targets {
				if t.State != fleet.Succeeded {
					t.Params = rec.Targets[i].Params
				}
			}
			fleet.Rerun(old, &flags)
			old.Executor = executor
			return nil
		})
	}
	if err != nil {
		return err
	}
	return a.scheduleFleet(ctx, fs, name, jsonOut)
}

func sameTargets(a, b *fleet.Record) bool {
	if len(a.Targets) != len(b.Targets) {
		return false
	}
	for i := range a.Targets {
		if a.Targets[i].Name != b.Targets[i].Name {
			return false
		}
	}
	return true
}

// defaultFleetName is PLAN-TARGETSFILE, made a valid fleet name.
func defaultFleetName(planName, targetsFile string) string {
	stem := strings.TrimSuffix(filepath.Base(targetsFile), filepath.Ext(targetsFile))
	var sb strings.Builder
	for _, r := range strings.ToLower(planName + "-" + stem) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('-')
		}
	}
	s := strings.Trim(sb.String(), "-")
	if len(s) > 50 {
		s = strings.TrimRight(s[:50], "-")
	}
	return s
}

// scheduleFleet runs a recorded fleet's scheduler here, with the executor the record names.
func (a *app) scheduleFleet(ctx context.Context, fs fleet.Store, name string, jsonOut bool) error {
	rec, err := fs.Load(ctx, name)
	if err != nil {
		return err
	}
	store, err := a.store(ctx)
	if err != nil {
		return err
	}
	runs := fleetRuns{a: a, store: store, rec: rec}
	noRollback, _ := rec.Executor["noRollback"].(bool)
	var exec fleet.Executor
	switch rec.Executor["mode"] {
	case "in-cluster":
		cs, err := a.clusterStore(ctx, "an in-cluster fleet")
		if err != nil {
			return err
		}
		opts, err := executorOptions(rec.Executor)
		if err != nil {
			return err
		}
		opts.NoRollback, opts.Verbose = noRollback, a.verbose
		if opts.HostNetwork {
			opts.APIServer = cs.RESTConfig().Host
		}
		exec = &jobExecutor{fleetRuns: runs, store: cs, opts: opts}
	default:
		exec = &localExecutor{fleetRuns: runs, noRollback: noRollback, runCtx: ctx, running: map[string]bool{}, ended: map[string]error{}, changed: make(chan struct{}, 1)}
	}
	host, _ := os.Hostname()
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	// Pods share a hostname and pid 1 across restarts: a random part tells schedulers apart.
	holder := fmt.Sprintf("%s/%d/%x", host, os.Getpid(), b)
	s := &fleet.Scheduler{Store: fs, Executor: exec, Holder: holder, Observe: fleetPrinter(a.stdout, jsonOut)}
	_, err = s.Run(ctx, name)
	if errors.Is(err, context.Canceled) {
		if !jsonOut {
			fmt.Fprintf(a.stdout, "fleet %s stopped; go on with planrun fleet resume %s\n", name, name)
		}
		return engine.ErrInterrupted
	}
	return err
}

// executorOptions are an in-cluster fleet's runner options, from its record.
func executorOptions(m map[string]any) (opts incluster.Options, err error) {
	data, err := json.Marshal(m)
	if err != nil {
		return opts, err
	}
	var rec struct {
		Image          string   `json:"image"`
		HostNetwork    bool     `json:"hostNetwork"`
		ServiceAccount string   `json:"serviceAccount"`
		ClusterSecrets []string `json:"clusterSecrets"`
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return opts, err
	}
	f := inClusterFlags{image: rec.Image, hostNetwork: rec.HostNetwork, serviceAccount: rec.ServiceAccount, clusterSecrets: rec.ClusterSecrets}
	secrets, err := f.secrets()
	if err != nil {
		return opts, err
	}
	opts = incluster.Options{Image: f.image, HostNetwork: f.hostNetwork, ServiceAccount: f.serviceAccount, ClusterSecrets: secrets}
	if opts.Image == "" {
		opts.Image = images.PlanrunImageFor(version.Version)
	}
	return opts, nil
}

// fleetPrinter prints a fleet's events: a line each, or JSON lines.
func fleetPrinter(w io.Writer, jsonOut bool) func(fleet.Event) {
	enc := json.NewEncoder(w)
	return func(e fleet.Event) {
		if jsonOut {
			_ = enc.Encode(e)
			return
		}
		at := e.Time.Local().Format("15:04:05")
		switch e.Type {
		case fleet.EventWaveStarted:
			fmt.Fprintf(w, "%s wave %d starts\n", at, e.Wave)
		case fleet.EventTargetStarted:
			fmt.Fprintf(w, "%s ▶ %s (run %s)\n", at, e.Target, e.RunID)
		case fleet.EventTargetFinished:
			if e.Status == string(engine.RunSucceeded) {
				fmt.Fprintf(w, "%s ✔ %s\n", at, e.Target)
			} else {
				fmt.Fprintf(w, "%s ✖ %s %s: %s\n", at, e.Target, e.Status, e.Error)
			}
		case fleet.EventPaused:
			fmt.Fprintf(w, "%s fleet paused: no new target starts (planrun fleet resume %s)\n", at, e.Fleet)
		case fleet.EventHalted:
			fmt.Fprintf(w, "%s fleet halted: %s\n", at, e.Error)
		case fleet.EventFinished:
			c := e.Counts
			fmt.Fprintf(w, "fleet %s %s: %d succeeded, %d failed, %d skipped, %d waiting of %d\n", e.Fleet, e.Status, c.Succeeded, c.Failed, c.Skipped, c.Waiting, c.Total)
		}
	}
}

// fleetVerbs are what planrun fleet does.
var fleetVerbs = []string{"status", "pause", "resume", "cancel"}

var fleetCommand = &command{
	name:     "fleet",
	usage:    "status [FLEET] | pause FLEET | resume FLEET | cancel FLEET",
	summary:  "Show a fleet's targets by state, or pause, resume or cancel its rollout.",
	complete: completeFleet,
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) == 0 {
			return usagef("fleet: give status, pause, resume or cancel")
		}
		jsonOut, err := a.jsonOutput()
		if err != nil {
			return err
		}
		fs, err := a.fleetStore(ctx)
		if err != nil {
			return err
		}
		verb, rest := args[0], args[1:]
		if verb == "status" && len(rest) == 0 {
			list, err := fs.List(ctx)
			if err != nil {
				return err
			}
			return printFleets(a.stdout, list, jsonOut)
		}
		if len(rest) != 1 {
			return usagef("fleet %s takes one fleet name", verb)
		}
		name := rest[0]
		switch verb {
		case "status":
			rec, err := fs.Load(ctx, name)
			if err != nil {
				return err
			}
			return printFleet(a.stdout, rec, jsonOut)
		case "pause", "cancel":
			control := map[string]fleet.Control{"pause": fleet.Paused, "cancel": fleet.Cancelled}[verb]
			rec, err := fs.Update(ctx, name, func(r *fleet.Record) error {
				if r.Control == fleet.Cancelled {
					return fmt.Errorf("fleet %s is cancelled", name)
				}
				r.Control = control
				return nil
			})
			if err != nil {
				return err
			}
			if !jsonOut {
				fmt.Fprintf(a.stdout, "fleet %s %s: no new target starts; %d running go on to their end\n", name, control, rec.Count().Running)
			}
			return nil
		case "resume":
			rec, err := fs.Update(ctx, name, func(r *fleet.Record) error {
				if r.Control == fleet.Cancelled {
					return fmt.Errorf("fleet %s is cancelled; run it again with planrun apply --targets to start its other targets", name)
				}
				r.Control = fleet.Running
				return nil
			})
			if err != nil {
				return err
			}
			if busy := rec.Busy(); busy != nil {
				if !jsonOut {
					fmt.Fprintf(a.stdout, "fleet %s resumed (its scheduler, %s, goes on)\n", name, busy.Heartbeat.Holder)
				}
				return nil
			}
			// No scheduler is at work on it: this one takes it up.
			return a.scheduleFleet(ctx, fs, name, jsonOut)
		}
		if guess := suggest(verb, fleetVerbs); guess != "" {
			return usagef("fleet %s: unknown; did you mean fleet %s?", verb, guess)
		}
		return usagef("fleet %s: unknown (status, pause, resume or cancel)", verb)
	},
}

// completeFleet completes a verb, then the name of a fleet of --state or --state-dir.
func completeFleet(ctx context.Context, a *app, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	if len(args) != 1 {
		return completeWords(fleetVerbs...)(ctx, a, args, toComplete)
	}
	fs, err := a.fleetStore(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	list, err := fs.List(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var names []string
	for _, r := range list {
		if strings.HasPrefix(r.Name, toComplete) {
			names = append(names, cobra.CompletionWithDesc(r.Name, controlText(r)+", plan "+r.PlanName))
		}
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// fleetView is a fleet as status shows it.
type fleetView struct {
	*fleet.Record
	PlanSource []byte       `json:"planSource,omitempty"`
	Counts     fleet.Counts `json:"counts"`
}

func printFleets(w io.Writer, list []*fleet.Record, jsonOut bool) error {
	if jsonOut {
		items := make([]fleetView, 0, len(list))
		for _, r := range list {
			items = append(items, fleetView{Record: r, Counts: r.Count()})
		}
		return writeJSON(w, items)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FLEET\tPLAN\tCONTROL\tTARGETS\tRUNNING\tSUCCEEDED\tFAILED\tWAITING\tSKIPPED\tCREATED")
	for _, r := range list {
		c := r.Count()
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", r.Name, r.PlanName, controlText(r), c.Total, c.Running, c.Succeeded, c.Failed, c.Waiting, c.Skipped, r.Created.Local().Format(time.DateTime))
	}
	return tw.Flush()
}

func controlText(r *fleet.Record) string {
	switch {
	case r.Control != fleet.Running:
		return string(r.Control)
	case r.Scheduler != nil:
		return "running"
	case r.Ended != "":
		return r.Ended
	}
	return "-"
}

func printFleet(w io.Writer, r *fleet.Record, jsonOut bool) error {
	if jsonOut {
		return writeJSON(w, fleetView{Record: r, Counts: r.Count()})
	}
	c := r.Count()
	fmt.Fprintf(w, "fleet %s: plan %s, %s\n", r.Name, r.PlanName, controlText(r))
	fmt.Fprintf(w, "targets: %d running, %d succeeded, %d failed, %d waiting, %d skipped of %d\n", c.Running, c.Succeeded, c.Failed, c.Waiting, c.Skipped, c.Total)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tWAVE\tSTATE\tRUN\tDURATION\tERROR")
	for _, t := range r.Targets {
		dur := "-"
		if t.Started != nil {
			end := time.Now()
			if t.Finished != nil {
				end = *t.Finished
			}
			dur = end.Sub(*t.Started).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", t.Name, t.Wave+1, t.State, orText(t.RunID, "-"), dur, t.Error)
	}
	return tw.Flush()
}
