package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Runner executes plans and keeps their checkpoints in a Store.
type Runner struct {
	Store    Store
	Observer Observer
	Logger   *slog.Logger
	// NoRollback leaves a failed run as it is (status Failed) for repair and resume, instead of
	// rolling back its completed steps.
	NoRollback bool
	// BreakStaleLock takes over a run lock whose holder died.
	BreakStaleLock bool
	// LockWait is how long resume and rollback wait for a run's lock that a live runner holds
	// (0: they fail at once).
	LockWait time.Duration
	// Actor names who applies, resumes or rolls back, for the journal's record of actions;
	// CurrentActor() when empty.
	Actor string
}

func (r *Runner) actor() string {
	if r.Actor != "" {
		return r.Actor
	}
	return CurrentActor()
}

// RunError is returned when a run ends in another status than Succeeded.
type RunError struct {
	RunID  string
	Status RunStatus
	Err    error
}

func (e *RunError) Error() string {
	what := map[RunStatus]string{
		RunRolledBack:     "failed and was rolled back",
		RunRollbackFailed: "failed to roll back",
		RunInterrupted:    "was interrupted",
	}[e.Status]
	if what == "" {
		what = strings.ToLower(string(e.Status))
	}
	return fmt.Sprintf("run %s %s: %v", e.RunID, what, e.Err)
}

func (e *RunError) Unwrap() error { return e.Err }

// ApplyOptions control a new run.
type ApplyOptions struct {
	// RunID names the run; a fresh id from the plan name and the time by default.
	RunID  string
	DryRun bool
}

// NewRunID returns a run id such as "service-catalog-to-crds-20261121-171300-9f3a".
func NewRunID(planName string) string {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%s-%s", planName, time.Now().UTC().Format("20060102-150405"), hex.EncodeToString(b))
}

// newJournal is the journal of a new run of p.
func newJournal(p *Plan, opts ApplyOptions, status RunStatus) *Journal {
	if opts.RunID == "" {
		opts.RunID = NewRunID(p.Name())
	}
	now := time.Now().UTC()
	file := p.File
	if abs, err := filepath.Abs(file); err == nil {
		file = abs
	}
	j := &Journal{
		Version: JournalVersion,
		RunID:   opts.RunID,
		Plan:    PlanRecord{Name: p.Name(), Version: p.Metadata.Version, File: file, Digest: p.Digest},
		Params:  p.Values,
		DryRun:  opts.DryRun,
		Status:  status,
		Started: now,
		Updated: now,
	}
	for _, s := range p.order {
		j.Steps = append(j.Steps, newRecord(s))
	}
	return j
}

// Submit records a new run of p without running it, for a runner elsewhere (a Job in the cluster
// whose store holds the run) to run with Resume. The run is Pending until then.
func (r *Runner) Submit(ctx context.Context, p *Plan, opts ApplyOptions) (*Journal, error) {
	if opts.DryRun {
		return nil, errors.New("a dry run is not submitted: it keeps no journal (run it here)")
	}
	j := newJournal(p, opts, RunPending)
	j.NoRollback = r.NoRollback
	j.recordAction(ActionApply, r.actor())
	if err := r.Store.Create(ctx, j, p.Source); err != nil {
		return nil, err
	}
	return j, nil
}

// Apply starts a new run of p. A dry run keeps its journal in memory: it changes nothing,
// locally or in a cluster.
func (r *Runner) Apply(ctx context.Context, p *Plan, opts ApplyOptions) (*Journal, error) {
	j := newJournal(p, opts, RunRunning)
	j.NoRollback = r.NoRollback
	if !opts.DryRun {
		j.recordAction(ActionApply, r.actor())
	}
	store := r.Store
	if opts.DryRun {
		store = NewMemStore()
	}
	if err := store.Create(ctx, j, p.Source); err != nil {
		return nil, err
	}
	lock, err := store.Lock(ctx, j.RunID, LockOptions{})
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	ctx, stop := whileLocked(ctx, lock)
	defer stop()
	x := r.newExecution(p, j, store)
	defer x.shared.close(x.log)
	defer x.events.close()
	ctx, unwatch := x.watchStopRequests(ctx)
	defer unwatch()
	x.emit(Event{Type: EventRunStarted, Message: fmt.Sprintf("plan %s v%d (%d steps)", p.Name(), p.Metadata.Version, len(p.order))})
	return j, x.finish(lostLock(ctx, x.execute(ctx)))
}

// Resume continues a run that stopped: interrupted, crashed, or failed with --no-rollback.
// loadPlan receives the journal and returns the plan to continue with (normally the plan file
// recorded in the journal, reloaded with the run's params). Completed steps must be unchanged.
func (r *Runner) Resume(ctx context.Context, runID string, loadPlan func(*Journal) (*Plan, error)) (*Journal, error) {
	return r.withRun(ctx, runID, loadPlan, func(ctx context.Context, x *execution) error {
		switch x.j.Status {
		case RunPending, RunRunning, RunInterrupted, RunFailed:
			// Pending: submitted for this runner. Running: its runner died (we hold the lock now).
		case RunSucceeded:
			return fmt.Errorf("run %s already succeeded; nothing to resume", runID)
		case RunRolledBack:
			return fmt.Errorf("run %s was rolled back; start a new run with planrun apply", runID)
		case RunRollingBack, RunRollbackFailed:
			return fmt.Errorf("run %s is rolling back (%s); finish it with planrun rollback %s", runID, x.j.Status, runID)
		default:
			return fmt.Errorf("run %s has status %s, which cannot be resumed", runID, x.j.Status)
		}
		if err := x.adopt(); err != nil {
			return err
		}
		x.j.Status, x.j.Error, x.j.Finished = RunRunning, "", nil
		x.j.NoRollback = x.j.NoRollback || x.r.NoRollback
		x.recordAction(ActionResume)
		if err := x.save(ctx); err != nil {
			return err
		}
		x.emit(Event{Type: EventRunStarted, Message: fmt.Sprintf("resuming plan %s v%d", x.p.Name(), x.p.Metadata.Version)})
		return x.finish(lostLock(ctx, x.execute(ctx)))
	})
}

// Rollback undoes the completed steps of a run, in reverse order, on demand; it also finishes a
// rollback that failed or was interrupted. Rollback steps that already succeeded are not rerun.
func (r *Runner) Rollback(ctx context.Context, runID string, loadPlan func(*Journal) (*Plan, error)) (*Journal, error) {
	return r.withRun(ctx, runID, loadPlan, func(ctx context.Context, x *execution) error {
		if x.j.Status == RunRolledBack {
			return nil
		}
		if x.j.Status == RunRunning {
			// A runner died mid-run (we hold the lock, so none is running now).
			x.j.Status = RunInterrupted
		}
		x.recordAction(ActionRollback)
		x.emit(Event{Type: EventRunStarted, Message: fmt.Sprintf("rolling back plan %s v%d", x.p.Name(), x.p.Metadata.Version)})
		return x.finish(lostLock(ctx, x.rollback(ctx, nil)))
	})
}

func (r *Runner) withRun(ctx context.Context, runID string, loadPlan func(*Journal) (*Plan, error), fn func(context.Context, *execution) error) (*Journal, error) {
	lock, err := r.lockRun(ctx, runID)
	if err != nil {
		return nil, err
	}
	defer lock.Release()
	ctx, stop := whileLocked(ctx, lock)
	defer stop()
	j, err := r.Store.Load(ctx, runID)
	if err != nil {
		return nil, err
	}
	p, err := loadPlan(j)
	if err != nil {
		return j, err
	}
	if err := j.checkMatches(p); err != nil {
		return j, err
	}
	x := r.newExecution(p, j, r.Store)
	defer x.shared.close(x.log)
	defer x.events.close()
	ctx, unwatch := x.watchStopRequests(ctx)
	defer unwatch()
	return j, fn(ctx, x)
}

func newRecord(s *Step) *StepRecord {
	rec := &StepRecord{ID: s.ID, Type: s.Type, Phase: s.Phase, Hook: s.Hook, Digest: s.Digest, Status: StepPending}
	if s.Parent != nil {
		rec.RollbackOf = s.Parent.ID
	}
	return rec
}

// execution is one invocation of apply, resume or rollback on one run.
type execution struct {
	r      *Runner
	p      *Plan
	j      *Journal
	store  Store
	log    *slog.Logger
	events *eventLog  // the run's event log for followers; nil when the store keeps none
	mu     sync.Mutex // guards j while a step saves its state from its own goroutines
	shared sharedValues
	views  stepViews // see steplog.go
}

func (r *Runner) newExecution(p *Plan, j *Journal, store Store) *execution {
	log := r.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	x := &execution{r: r, p: p, j: j, store: store, log: log.With("run", j.RunID)}
	if !j.DryRun {
		x.events = openEventLog(store, j.RunID) // the caller holds the run's lock
	}
	return x
}

func (x *execution) emit(e Event) {
	e.Time = time.Now().UTC()
	e.RunID = x.j.RunID
	if !x.j.DryRun {
		x.events.add(e)
	}
	if x.r.Observer != nil {
		x.r.Observer.Observe(e)
	}
}

func (x *execution) save(ctx context.Context) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.saveLocked(ctx)
}

// saveLocked writes the checkpoint. It ignores ctx's cancellation: the checkpoint after an
// interrupt is the one that matters most.
func (x *execution) saveLocked(ctx context.Context) error {
	x.views.invalidate() // any record may have changed
	return x.writeJournal(ctx)
}

func (x *execution) writeJournal(ctx context.Context) error {
	x.j.Updated = time.Now().UTC()
	if err := x.store.Save(context.WithoutCancel(ctx), x.j); err != nil {
		return fmt.Errorf("checkpoint of run %s: %w", x.j.RunID, err)
	}
	return nil
}

// adopt checks that the plan may continue this run and lines the journal up with it: every
// completed step must be unchanged; pending and failed steps may have changed (that is how an
// operator fixes a failed step), and new steps may have been added.
func (x *execution) adopt() error {
	var errs []string
	for _, rec := range x.j.Steps {
		if rec.RollbackOf != "" || !(rec.Status.done() || rec.Status == StepFailed && x.continued(rec)) {
			continue
		}
		s := x.p.Step(rec.ID)
		switch {
		case s == nil:
			errs = append(errs, fmt.Sprintf("step %q completed in this run but is no longer in the plan", rec.ID))
		case s.Digest != rec.Digest:
			errs = append(errs, fmt.Sprintf("%s: step %q changed since it completed in this run (digest %.12s, now %.12s)", s.Pos, rec.ID, rec.Digest, s.Digest))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("cannot resume run %s: the plan changed under completed steps; undo the change or start a new run:\n%s", x.j.RunID, strings.Join(errs, "\n"))
	}
	old := map[string]*StepRecord{}
	var rollbackRecs []*StepRecord
	for _, rec := range x.j.Steps {
		if rec.RollbackOf != "" {
			rollbackRecs = append(rollbackRecs, rec)
		} else {
			old[rec.ID] = rec
		}
	}
	var steps []*StepRecord
	for _, s := range x.p.order {
		rec := old[s.ID]
		if rec == nil {
			rec = newRecord(s)
		}
		rec.Digest, rec.Type, rec.Phase, rec.Hook = s.Digest, s.Type, s.Phase, s.Hook
		steps = append(steps, rec)
		delete(old, s.ID)
	}
	for id := range old {
		// A step removed from the plan that never completed: nothing to keep.
		x.log.Info("step no longer in the plan; dropping its record", "step", id)
	}
	x.j.Steps = append(steps, rollbackRecs...)
	x.j.Plan.Digest = x.p.Digest
	return nil
}

func (x *execution) continued(rec *StepRecord) bool {
	s := x.p.Step(rec.ID)
	return s != nil && s.OnError == OnErrorContinue
}

// env is the expression environment as the journal stands now.
func (x *execution) env() Env {
	x.mu.Lock()
	defer x.mu.Unlock()
	return Env{Params: x.p.paramValue, Steps: x.views.current(x.j), Run: RunInfo{ID: x.j.RunID, DryRun: x.j.DryRun}}
}

// execute runs the plan's steps in order, skipping those an earlier attempt finished.
func (x *execution) execute(ctx context.Context) error {
	recs := make(map[string]*StepRecord, len(x.j.Steps)) // j.Step is a linear search
	for _, rec := range x.j.Steps {
		recs[rec.ID] = rec
	}
	for _, s := range x.p.order {
		rec := recs[s.ID]
		if rec.Status.done() || rec.Status == StepFailed && s.OnError == OnErrorContinue {
			x.emit(Event{Type: EventStepReused, StepID: s.ID, StepType: s.Type, Hook: s.Hook, Status: string(rec.Status)})
			continue
		}
		err := x.runStep(ctx, s, rec)
		if err == nil {
			continue
		}
		if errors.Is(err, ErrInterrupted) {
			return err
		}
		if s.OnError == OnErrorContinue {
			x.log.Warn("step failed; continuing as the plan says", "step", s.ID, "err", err)
			continue
		}
		failure := fmt.Errorf("step %q failed: %w", s.ID, err)
		if x.r.NoRollback || x.j.NoRollback || x.j.DryRun {
			return failure
		}
		if rbErr := x.rollback(ctx, failure); rbErr != nil {
			return rbErr
		}
		return &RunError{RunID: x.j.RunID, Status: RunRolledBack, Err: failure}
	}
	return nil
}

// finish records how the run ended and returns the error callers see.
func (x *execution) finish(err error) error {
	now := time.Now().UTC()
	var re *RunError
	switch {
	case err == nil && x.j.Status == RunRolledBack:
	case err == nil:
		x.j.Status = RunSucceeded
	case errors.Is(err, ErrInterrupted):
		// A rollback stopped half-way stays RollingBack: resuming it as a run would skip the
		// steps already undone and could end Succeeded with them undone; `planrun rollback`
		// finishes it.
		if x.j.Status != RunRollingBack {
			x.j.Status = RunInterrupted
		}
		err = &RunError{RunID: x.j.RunID, Status: RunInterrupted, Err: err}
	case errors.As(err, &re):
		x.j.Status = re.Status
	default:
		x.j.Status = RunFailed
		err = &RunError{RunID: x.j.RunID, Status: RunFailed, Err: err}
	}
	if err != nil {
		x.j.Error = err.Error()
	}
	if !errors.Is(err, ErrInterrupted) {
		x.j.Finished = &now
	}
	if errors.Is(err, ErrLockLost) {
		// The run is someone else's now: its journal is theirs to write.
		x.emit(Event{Type: EventRunFinished, Status: string(x.j.Status), Error: errString(err)})
		return err
	}
	if serr := x.save(context.Background()); serr != nil {
		// One line, and still a RunError for callers: the final checkpoint is lost (a full
		// disk), and the journal on disk is the last one written.
		if err == nil {
			err = serr
		} else {
			err = fmt.Errorf("%w; and %w", err, serr)
		}
	}
	x.emit(Event{Type: EventRunFinished, Status: string(x.j.Status), Error: errString(err)})
	return err
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
