// Command planrun runs Kubernetes migration plans: apply, watch, resume, roll back.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"k8s.io/klog/v2"

	"planrun.dev/planrun/clusterstore"
	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/safepath"
	_ "planrun.dev/planrun/steps" // registers every step type
)

// Exit codes, so that scripts and CI can tell outcomes apart.
const (
	exitOK             = 0
	exitRunFailed      = 1   // the run failed (and was rolled back unless --no-rollback)
	exitUsage          = 2   // bad flags, or a plan that does not load
	exitLocked         = 3   // another runner holds the run, or a stale lock needs --break-lock
	exitRollbackFailed = 4   // a rollback failed: repair, then planrun rollback RUN
	exitInterrupted    = 130 // stopped on SIGINT/SIGTERM at a safe point: planrun resume
	exitTempFail       = 75  // planrun runner: a failure the next try may not meet (EX_TEMPFAIL)
)

// command is one subcommand. newRootCommand makes the command line of the table below: each
// entry is a command, with its help and its completion.
type command struct {
	name    string
	usage   string
	summary string
	run     func(ctx context.Context, app *app, args []string) error
	flags   func(fs *pflag.FlagSet, app *app)
	// complete proposes the argument being typed (toComplete) after args, for shell
	// completion; nil completes file names. The flags typed before it are parsed into app.
	complete completeFunc
}

var commands = []*command{
	applyCommand, resumeCommand, rollbackCommand, cancelCommand, statusCommand, runsCommand, validateCommand, schemaCommand, verifyBackupCommand, moverCommand, installCRDCommand, rbacCommand, runnerCommand, fleetCommand, logsCommand, uiCommand, versionCommand,
	completionCommand,
}

// usageError is a mistake on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

func main() {
	os.Exit(run(commandLine(os.Args), os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := newRootCommand(a)
	root.SetArgs(append([]string{}, args...)) // never nil: cobra would read os.Args
	cmd, err := root, firstWordCommand(root, args)
	if err == nil {
		cmd, err = root.ExecuteC()
	}
	code := exitCode(err)
	if err != nil {
		msg := err.Error()
		switch {
		case code == exitUsage && engine.AsErrorList(err) != nil:
			fmt.Fprintln(stderr, msg) // file:line:col lines speak for themselves
		case cmd == nil || cmd == root:
			fmt.Fprintf(stderr, "planrun: %s\n", msg)
		default:
			fmt.Fprintf(stderr, "planrun %s: %s\n", cmd.Name(), msg)
		}
	}
	return code
}

// interruptContext is canceled on the first SIGINT or SIGTERM: the run stops at a safe point and
// writes its checkpoint. A second signal exits at once; the checkpoint already says which step was
// running, and resume runs it again.
func interruptContext(stderr io.Writer) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	done := make(chan struct{})
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		n := 0
		for {
			select {
			case <-done: // the command returned: nothing left to stop
				return
			case <-sigs:
			}
			n++
			if n == 1 {
				fmt.Fprintln(stderr, "planrun: stopping at a safe point (signal again to exit now)")
				cancel()
				continue
			}
			os.Exit(exitInterrupted)
		}
	}()
	return ctx, func() { signal.Stop(sigs); close(done); cancel() }
}

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	var le *engine.LockedError
	var re *engine.RunError
	var te *retryableError
	switch {
	case errors.Is(err, engine.ErrInterrupted):
		return exitInterrupted
	case errors.As(err, &te):
		return exitTempFail
	case errors.As(err, &re):
		// The run started: whatever failed in it (a step, or a `when` or `${{ }}` that failed
		// to evaluate, which carries a plan position like a load error) is a run failure. This
		// comes before the load-error case for that reason.
		if re.Status == engine.RunRollbackFailed {
			return exitRollbackFailed
		}
		return exitRunFailed
	case errors.As(err, &ue), engine.AsErrorList(err) != nil, errors.Is(err, safepath.ErrUnsafe):
		// A run id that cannot name a folder is a bad argument, not a failed run.
		return exitUsage
	case errors.As(err, &le):
		return exitLocked
	}
	return exitRunFailed
}

// app holds what every command shares: flags, output and the run store.
type app struct {
	stdout, stderr io.Writer
	stateDir       string
	state          string       // --state: a folder or k8s://CONTEXT/NAMESPACE; "" is stateDir
	runStore       engine.Store // opened by store, once
	artifacts      string       // --artifacts: where step files are uploaded too
	artifactCreds  string       // --artifacts-credentials-from NAMESPACE/NAME
	output         string
	verbose        int
	kubeconfig     string
	kubeContext    string
	namespace      string
	// credentialsFrom is verify-backup's --credentials-from NAMESPACE/NAME.
	credentialsFrom string
	// watch is status --watch.
	watch bool
	// mover holds planrun mover's flags.
	mover  moverFlags
	logger *slog.Logger
	rf     runFlags
	// fleet holds apply --targets' flags, forEach apply --for-each's.
	fleet   fleetFlags
	forEach forEachFlags
	// ic holds apply --in-cluster's flags (and rbac's).
	ic inClusterFlags
	// runnerOpts holds planrun runner's flags.
	runnerOpts runnerFlags
	// cancel holds planrun cancel's flags.
	cancel cancelFlags
	// ui holds planrun ui's flags.
	ui uiFlags
}

func (a *app) globalFlags(fs *pflag.FlagSet) {
	def := os.Getenv("PLANRUN_STATE_DIR")
	if def == "" {
		def = ".planrun/runs"
	}
	fs.StringVar(&a.stateDir, "state-dir", def, "folder holding run checkpoints (env PLANRUN_STATE_DIR)")
	fs.StringVar(&a.state, "state", os.Getenv("PLANRUN_STATE"), "where runs are kept: a folder (as --state-dir), or k8s://CONTEXT/NAMESPACE for PlanRun objects and Lease locks in a cluster (env PLANRUN_STATE)")
	fs.StringVar(&a.artifacts, "artifacts", os.Getenv("PLANRUN_ARTIFACTS"), "runs kept in a cluster: object storage (s3://bucket/prefix?…, gs://, azblob://) the files of each step (logs, command output) are uploaded to, under RUN/STEP/, once the step ended (env PLANRUN_ARTIFACTS)")
	fs.StringVar(&a.artifactCreds, "artifacts-credentials-from", "", "NAMESPACE/NAME: a Secret on the cluster of --state k8s://… with the keys of --artifacts (default: the provider's own chain)")
	fs.StringVarP(&a.output, "output", "o", "", "output format: text (default) or json")
	fs.CountVarP(&a.verbose, "verbose", "v", "log more (-v info, -vv debug)")
	fs.StringVar(&a.kubeconfig, "kubeconfig", "", "kubeconfig file for clusters that do not name one")
	fs.StringVar(&a.kubeContext, "context", "", "kubeconfig context for clusters that do not name one")
	fs.StringVarP(&a.namespace, "namespace", "n", "", "shorthand for --set namespace=NS (apply; the plan must declare a namespace param)")
}

func (a *app) setup() {
	level := slog.LevelWarn
	switch {
	case a.verbose >= 2:
		level = slog.LevelDebug
	case a.verbose == 1:
		level = slog.LevelInfo
	}
	a.logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
	// client-go logs through klog: its lines go through planrun's logger too, at its level,
	// never as raw klog text across a progress line.
	klog.SetSlogLogger(a.logger)
}

// store opens where runs are kept, once: --state (a folder or a cluster namespace), or
// --state-dir.
func (a *app) store(ctx context.Context) (engine.Store, error) {
	if a.runStore != nil {
		return a.runStore, nil
	}
	where := a.stateName()
	var store engine.Store
	if !clusterstore.IsURL(where) {
		store = engine.NewDirStore(where)
	} else {
		if _, _, _, err := clusterstore.ParseURL(where); err != nil {
			return nil, usagef("--state: %v", err)
		}
		s, err := clusterstore.Open(ctx, where, clusterstore.Options{Kubeconfig: a.kubeconfig})
		if err != nil {
			return nil, err
		}
		store = s
	}
	if a.artifacts != "" {
		if _, ok := store.(*clusterstore.Store); !ok {
			// A local folder keeps the files already, where its runs are resumed.
			return nil, usagef("--artifacts: for runs kept in a cluster (--state k8s://…)")
		}
		loc, err := a.openArtifacts(ctx, store)
		if err != nil {
			return nil, err
		}
		store = &artifactStore{Store: store, loc: loc, logger: a.logger, uploaded: map[string]bool{}}
	}
	a.runStore = store
	return store, nil
}

// stateName is where runs are kept, as given.
func (a *app) stateName() string {
	if a.state != "" {
		return a.state
	}
	return a.stateDir
}

func (a *app) jsonOutput() (bool, error) {
	switch strings.ToLower(a.output) {
	case "", "text", "wide":
		return false, nil
	case "json":
		return true, nil
	}
	return false, usagef("-o %s: unknown output format (text or json)", a.output)
}

// applyClusterDefaults fills clusters that name no kubeconfig or context from the flags.
func (a *app) applyClusterDefaults(p *engine.Plan) {
	if len(p.Clusters) == 0 {
		// A plan that names no cluster works on the one --kubeconfig and --context point at.
		p.Clusters = map[string]*engine.Cluster{"default": {}}
	}
	for _, c := range p.Clusters {
		if c.Kubeconfig == "" {
			c.Kubeconfig = a.kubeconfig
		}
		if c.Context == "" {
			c.Context = a.kubeContext
		}
	}
}
