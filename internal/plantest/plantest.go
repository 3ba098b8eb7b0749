// Package plantest loads and runs plans in the tests of step types: a plan body is written to a
// file with the header added, loaded as planrun loads it, and run with its state in a folder of
// the test. steps/kube/kubetest builds on it for plans that talk to control planes.
package plantest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
)

// Header is what Load puts before a plan body.
const Header = "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: test}\n"

// Options for Load and Apply.
type Options struct {
	DryRun     bool
	NoRollback bool
	Params     []string        // name=value
	Dir        string          // state folder (a fresh temp folder by default): reuse it to resume
	RunID      string          // "run" by default
	Timeout    time.Duration   // of the run, 10 minutes by default
	Observer   engine.Observer // also gets every event of the run, when set
}

// Run is the outcome of a plan run in a test.
type Run struct {
	Journal *engine.Journal
	Err     error
	Store   *engine.DirStore
	Plan    *engine.Plan
	// Progress is the last progress event of each step, by step id.
	Progress map[string]engine.Progress
	// Warnings are the steps' warnings, "STEP: message", in order.
	Warnings []string
}

// Outputs of a step of the run.
func (r *Run) Outputs(t testing.TB, step string) engine.Outputs {
	t.Helper()
	rec := r.Journal.Step(step)
	if rec == nil {
		t.Fatalf("no step %q in the run", step)
	}
	return rec.Outputs
}

// Load writes a plan (Header added) to a file of the test and loads it.
func Load(t testing.TB, body string, opts Options) (*engine.Plan, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plan.yaml")
	if err := os.WriteFile(path, []byte(Header+body), 0o644); err != nil {
		t.Fatal(err)
	}
	return engine.Load(path, engine.LoadOptions{Params: engine.ParamValues{Set: opts.Params}})
}

// MustLoad is Load that fails the test when the plan does not load.
func MustLoad(t testing.TB, body string, opts Options) *engine.Plan {
	t.Helper()
	p, err := Load(t, body, opts)
	if err != nil {
		t.Fatalf("plan does not load:\n%v\n%s", err, Header+body)
	}
	return p
}

// Apply loads a plan (Header added) and runs it.
func Apply(t testing.TB, body string, opts Options) *Run {
	t.Helper()
	return RunPlan(t, MustLoad(t, body, opts), opts)
}

// RunPlan runs a loaded plan in opts.Dir (a fresh folder by default).
func RunPlan(t testing.TB, p *engine.Plan, opts Options) *Run {
	t.Helper()
	dir := opts.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	run := &Run{Store: engine.NewDirStore(filepath.Join(dir, "runs")), Plan: p, Progress: map[string]engine.Progress{}}
	var mu sync.Mutex
	r := &engine.Runner{Store: run.Store, NoRollback: opts.NoRollback,
		Observer: engine.ObserverFunc(func(e engine.Event) {
			mu.Lock()
			defer mu.Unlock()
			if e.Progress != nil {
				run.Progress[e.StepID] = *e.Progress
			}
			if e.Type == engine.EventStepWarning {
				run.Warnings = append(run.Warnings, e.StepID+": "+e.Message)
			}
			if opts.Observer != nil {
				opts.Observer.Observe(e)
			}
		})}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	id := opts.RunID
	if id == "" {
		id = "run"
	}
	run.Journal, run.Err = r.Apply(ctx, p, engine.ApplyOptions{RunID: id, DryRun: opts.DryRun})
	return run
}

// Num is a numeric output as an int64 (outputs read back from a journal are float64).
func Num(t testing.TB, out engine.Outputs, name string) int64 {
	t.Helper()
	switch v := out[name].(type) {
	case int64:
		return v
	case int:
		return int64(v)
	case uint64:
		return int64(v)
	case float64:
		return int64(v)
	}
	t.Fatalf("output %s = %#v (%T) in %v", name, out[name], out[name], out)
	return 0
}

// WantError fails the test unless err is a one-line error containing every part.
func WantError(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one with %q", parts)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Fatalf("error on several lines: %q", msg)
	}
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Fatalf("error %q\nwant it to contain %q", msg, p)
		}
	}
}
