package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// RunContext is what a running step gets from the engine besides its own config.
type RunContext struct {
	RunID  string
	StepID string
	// DryRun: the step must change nothing (server-side dry run for mutations) and say in its
	// outputs or log what it would have done.
	DryRun bool
	// Attempt counts from 1 within this invocation of the run.
	Attempt int
	// Clusters are the plan's named clusters, with the CLI's --kubeconfig/--context applied.
	Clusters map[string]*Cluster
	Logger   *slog.Logger

	datastores map[string]any

	env      Env
	run      *execution
	record   *StepRecord
	observer func(Progress)
	warner   func(string)
}

// Eval evaluates a compiled expression in the current environment.
func (rc *RunContext) Eval(e *Expr) (any, error) { return e.Eval(rc.env) }

// EvalBool evaluates a compiled expression that must give true or false.
func (rc *RunContext) EvalBool(e *Expr) (bool, error) { return e.EvalBool(rc.env) }

// Progress reports how far the step is. Cheap to call often; the CLI throttles what it draws.
func (rc *RunContext) Progress(p Progress) {
	if rc.observer != nil {
		rc.observer(p)
	}
}

// Warn tells the operator something they should know while the step goes on (a limit exceeded,
// an object skipped): the CLI shows it as a warning line, or a step.warning event with -o json.
// Keep what matters in the step's outputs too: events are not part of the checkpoint.
func (rc *RunContext) Warn(msg string) {
	rc.Logger.Info("warning: " + msg)
	if rc.warner != nil {
		rc.warner(msg)
	}
}

// ArtifactDir returns the step's folder in the run's store, for logs and other artifacts.
func (rc *RunContext) ArtifactDir() (string, error) {
	return rc.run.store.ArtifactDir(rc.RunID, rc.StepID)
}

// SaveState checkpoints a long step's own progress marker (the last key copied, the objects
// restored so far...). If the run dies, the step runs again and LoadState gives the marker back.
func (rc *RunContext) SaveState(ctx context.Context, state any) error {
	b, err := json.Marshal(state)
	if err != nil {
		return fmt.Errorf("step state cannot be recorded: %w", err)
	}
	rc.run.mu.Lock()
	defer rc.run.mu.Unlock()
	rc.record.State = b
	return rc.run.saveStepLocked(ctx, rc.record)
}

// LoadState fills state from the last SaveState of this step in this run, and reports whether
// there was one.
func (rc *RunContext) LoadState(state any) (bool, error) {
	rc.run.mu.Lock()
	b := rc.record.State
	rc.run.mu.Unlock()
	if len(b) == 0 {
		return false, nil
	}
	return true, json.Unmarshal(b, state)
}

// Shared returns a value shared by every step of the run under key, making it on first use:
// steps use it to reuse clients (one Kubernetes client per cluster, one etcd client per
// datastore) instead of dialling again for every step. A value that is an io.Closer is closed
// when this invocation of the run (apply, resume or rollback) ends, newest first.
func (rc *RunContext) Shared(key string, make func() (any, error)) (any, error) {
	return rc.run.shared.get(key, make)
}

// sharedValues makes each value once. The lock of the map is not held while a value is made:
// making one may need another (an etcd client reads its certificates through the cluster's
// Kubernetes client), and two steps making different values need not wait for each other.
type sharedValues struct {
	mu     sync.Mutex
	values map[string]*sharedValue
	order  []*sharedValue // in the order they were made, for close
}

type sharedValue struct {
	mu   sync.Mutex // held while the value is made
	made bool
	v    any
}

func (s *sharedValues) get(key string, make func() (any, error)) (any, error) {
	s.mu.Lock()
	if s.values == nil {
		s.values = map[string]*sharedValue{}
	}
	e, ok := s.values[key]
	if !ok {
		e = &sharedValue{}
		s.values[key] = e
	}
	s.mu.Unlock()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.made {
		return e.v, nil
	}
	v, err := make()
	if err != nil {
		return nil, err // not kept: the next step tries again
	}
	e.v, e.made = v, true
	s.mu.Lock()
	s.order = append(s.order, e)
	s.mu.Unlock()
	return v, nil
}

// close closes the values that are io.Closers, newest first (a value may use an older one), and
// forgets every value. Failures are logged: the run's outcome is decided by then.
func (s *sharedValues) close(log *slog.Logger) {
	s.mu.Lock()
	order := s.order
	s.values, s.order = nil, nil
	s.mu.Unlock()
	for i := len(order) - 1; i >= 0; i-- {
		if c, ok := order[i].v.(io.Closer); ok {
			if err := c.Close(); err != nil {
				log.Warn("closing a shared value at the end of the run", "err", err)
			}
		}
	}
}
