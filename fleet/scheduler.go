package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Executor runs the targets' runs: in this process, or as Jobs in a cluster. The scheduler
// only decides when.
type Executor interface {
	// Start starts t's run: a new one (set t.RunID), or the one t.RunID names when it can be
	// resumed. It returns once the run is recorded; the run goes on in the background.
	Start(ctx context.Context, t *TargetRecord) error
	// Check says how t's run stands.
	Check(ctx context.Context, t *TargetRecord) (Outcome, error)
	// Wait waits for the runs this executor runs in this process to stop (ctx ended: they stop
	// at a safe point).
	Wait()
	// Changed receives when a run this executor runs in this process ended, so that the next
	// target starts at once rather than at the next tick (nil: runs elsewhere, polled).
	Changed() <-chan struct{}
}

// Outcome is how a target's run stands.
type Outcome struct {
	// State is Started (its runner is at work), Succeeded or Failed.
	State TargetState
	// Stopped: the run did not end but no runner is at work on it (its process died); the
	// scheduler starts it again, and the executor resumes it.
	Stopped bool
	// Status and Error are the run's, once it ended.
	Status, Error string
}

// Event is something the scheduler did or saw.
type Event struct {
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	Fleet  string    `json:"fleet"`
	Target string    `json:"target,omitempty"`
	RunID  string    `json:"runID,omitempty"`
	Wave   int       `json:"wave,omitempty"` // 1-based
	Status string    `json:"status,omitempty"`
	Error  string    `json:"error,omitempty"`
	Counts *Counts   `json:"counts,omitempty"`
}

// Event types.
const (
	EventWaveStarted    = "wave.started"
	EventTargetStarted  = "target.started"
	EventTargetFinished = "target.finished"
	// EventTargetUnknown: a target's run could not be read this time; it is read again.
	EventTargetUnknown = "target.unknown"
	EventPaused        = "fleet.paused"
	EventHalted        = "fleet.halted"
	EventFinished      = "fleet.finished"
)

// Scheduler runs a fleet: it starts targets wave by wave, at most MaxParallel at a time, stops
// starting them when the failure budget is spent or a gate does not hold, obeys pause and cancel,
// and keeps the record up to date.
type Scheduler struct {
	Store    Store
	Executor Executor
	// Holder names this scheduler in the record.
	Holder string
	// Observe, when set, is told every event.
	Observe func(Event)
	// Tick is how often runs are checked (default 500ms).
	Tick time.Duration
}

// heartbeatStale is how long a scheduler may be silent before another takes its fleet over.
const heartbeatStale = 15 * time.Second

// ErrHalted matches the error of a rollout that stopped starting targets: the failure budget
// was spent or a gate did not hold.
var ErrHalted = errors.New("fleet halted")

// HaltedError says why a rollout stopped starting targets.
type HaltedError struct{ Name, Reason string }

func (e *HaltedError) Error() string { return fmt.Sprintf("fleet %s halted: %s", e.Name, e.Reason) }

// Is makes errors.Is match ErrHalted.
func (e *HaltedError) Is(target error) bool { return target == ErrHalted }

// FailedError says that targets failed though the budget allowed going on.
type FailedError struct {
	Name   string
	Failed []string
}

func (e *FailedError) Error() string {
	return fmt.Sprintf("fleet %s: %d targets failed: %v", e.Name, len(e.Failed), e.Failed)
}

// Run runs fleet name until every target ended, the rollout halted and its running targets
// ended, the fleet was cancelled and its running targets ended, or ctx ended (the runs this
// process runs stop at a safe point; the fleet stays as it is for `planrun fleet resume`).
func (s *Scheduler) Run(ctx context.Context, name string) (*Record, error) {
	rec, err := s.Store.Update(ctx, name, s.claim)
	if err != nil {
		return nil, err
	}
	defer s.Executor.Wait()
	tick := s.Tick
	if tick == 0 {
		tick = 500 * time.Millisecond
	}
	var halted string
	pausedSaid := false
	for {
		// Starting runs is a side effect: it happens on this copy, and only the targets are
		// written back (the scheduler is their only writer), with the operator's Control read
		// fresh, so that a write retried on a conflict never starts a run twice.
		var events []Event
		events, halted = s.step(ctx, rec, halted)
		targets, waves := rec.Targets, rec.WavesStarted
		saved, uerr := s.Store.Update(context.WithoutCancel(ctx), name, func(r *Record) error {
			if err := s.claim(r); err != nil {
				return err
			}
			r.Targets, r.WavesStarted = targets, waves
			return nil
		})
		if uerr != nil {
			s.Executor.Wait()
			return rec, uerr
		}
		rec = saved
		for _, e := range events {
			s.emit(rec, e)
		}
		c := rec.Count()
		if rec.Control == Paused && !pausedSaid {
			s.emit(rec, Event{Type: EventPaused, Counts: &c})
		}
		pausedSaid = rec.Control == Paused
		if c.Running == 0 && (c.Waiting == 0 || halted != "") {
			return s.end(ctx, rec, halted)
		}
		select {
		case <-ctx.Done():
			// Runs of this process stop at a safe point; runs elsewhere (Jobs) go on. Either
			// way the fleet stays as it is, for planrun fleet resume.
			s.Executor.Wait()
			return s.end(ctx, rec, "interrupted")
		case <-s.Executor.Changed():
		case <-time.After(tick):
		}
	}
}

// Busy says which scheduler is at work on the fleet, nil if none is.
func (r *Record) Busy() *BusyError {
	if h := r.Scheduler; h != nil && time.Since(h.Beat) < heartbeatStale {
		return &BusyError{Name: r.Name, Heartbeat: *h}
	}
	return nil
}

// claim makes this scheduler the fleet's, unless another one is alive.
func (s *Scheduler) claim(r *Record) error {
	if busy := r.Busy(); busy != nil && busy.Heartbeat.Holder != s.Holder {
		return busy
	}
	r.Scheduler = &Heartbeat{Holder: s.Holder, Beat: time.Now().UTC()}
	r.Ended = ""
	return nil
}

// step checks the running targets and starts those the rollout allows now.
func (s *Scheduler) step(ctx context.Context, r *Record, halted string) ([]Event, string) {
	var events []Event
	for _, t := range r.Targets {
		if t.State != Started || ctx.Err() != nil {
			continue
		}
		o, err := s.Executor.Check(ctx, t)
		if err != nil {
			// One target's run could not be read (the API server busy): look again next time,
			// the others go on.
			events = append(events, Event{Type: EventTargetUnknown, Target: t.Name, RunID: t.RunID, Wave: t.Wave + 1, Error: oneLine(err)})
			continue
		}
		switch {
		case o.Stopped:
			// Its runner died (this scheduler's process before, or the Job's last pod):
			// start it again, which resumes it.
			if err := s.Executor.Start(ctx, t); err != nil && ctx.Err() == nil {
				events = append(events, s.fail(t, "Failed", fmt.Sprintf("resuming run %s: %v", t.RunID, err)))
			}
		case o.State == Succeeded || o.State == Failed:
			finished := time.Now().UTC()
			t.State, t.Status, t.Error, t.Finished = o.State, o.Status, capError(o.Error), &finished
			events = append(events, Event{Type: EventTargetFinished, Target: t.Name, RunID: t.RunID, Wave: t.Wave + 1, Status: o.Status, Error: t.Error})
		}
	}
	events, halted = s.start(ctx, r, halted, events)
	c := r.Count()
	if halted != "" && c.Running == 0 {
		for _, t := range r.Targets {
			if t.State == Waiting {
				t.State = Skipped
			}
		}
	}
	return events, halted
}

// start starts the targets the rollout allows now, unless it halted.
func (s *Scheduler) start(ctx context.Context, r *Record, halted string, events []Event) ([]Event, string) {
	c := r.Count()
	if halted == "" && c.Failed > r.Rollout.tolerated(c.Total) {
		halted = fmt.Sprintf("%d of %d targets failed, more than the failure budget (%s)", c.Failed, c.Total, orDefault(r.Rollout.Budget, "0"))
		events = append(events, Event{Type: EventHalted, Error: halted, Counts: &c})
	}
	if r.Control == Cancelled && halted == "" {
		halted = "cancelled"
	}
	if halted != "" || r.Control != Running || ctx.Err() != nil {
		return events, halted
	}
	// The wave under way is the first with targets that have not finished.
	wave := -1
	for _, t := range r.Targets {
		if !t.finished() && (wave < 0 || t.Wave < wave) {
			wave = t.Wave
		}
	}
	if wave < 0 {
		return events, halted
	}
	maxParallel := max(r.Rollout.MaxParallel, 1)
	for _, t := range r.Targets {
		if t.Wave != wave || t.State != Waiting || c.Running >= maxParallel || ctx.Err() != nil {
			continue
		}
		if !slices.Contains(r.WavesStarted, wave) {
			if wave > 0 {
				ok, err := gateHolds(r.Rollout.Gate, gateVars(r, wave))
				if err != nil || !ok {
					halted = fmt.Sprintf("the gate before wave %d does not hold: %s", wave+1, r.Rollout.Gate)
					if err != nil {
						halted = fmt.Sprintf("the gate before wave %d failed: %v", wave+1, err)
					}
					events = append(events, Event{Type: EventHalted, Wave: wave + 1, Error: halted, Counts: &c})
					return events, halted
				}
			}
			r.WavesStarted = append(r.WavesStarted, wave)
			events = append(events, Event{Type: EventWaveStarted, Wave: wave + 1, Counts: &c})
		}
		t.Attempt++
		started := time.Now().UTC()
		t.Started, t.Finished, t.Status, t.Error = &started, nil, "", ""
		if err := s.Executor.Start(ctx, t); err != nil {
			if ctx.Err() != nil {
				t.Started = nil
				return events, halted
			}
			// It could not start (its plan does not load with its params, a Secret it needs
			// is missing): a failed target, which the budget counts.
			events = append(events, s.fail(t, "Failed", "could not start: "+oneLine(err)))
			c = r.Count()
			if c.Failed > r.Rollout.tolerated(c.Total) {
				return s.start(ctx, r, halted, events)
			}
			continue
		}
		t.State = Started
		c.Running++
		events = append(events, Event{Type: EventTargetStarted, Target: t.Name, RunID: t.RunID, Wave: wave + 1})
	}
	return events, halted
}

// fail records t as failed and returns the event that says so.
func (s *Scheduler) fail(t *TargetRecord, status, why string) Event {
	finished := time.Now().UTC()
	t.State, t.Status, t.Error, t.Finished = Failed, status, capError(why), &finished
	return Event{Type: EventTargetFinished, Target: t.Name, RunID: t.RunID, Wave: t.Wave + 1, Status: status, Error: t.Error}
}

// maxTargetError bounds a target's error in the record (its run's journal has it whole).
const maxTargetError = 1024

func capError(s string) string {
	if len(s) > maxTargetError {
		return s[:maxTargetError] + "…"
	}
	return s
}

func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

func gateVars(r *Record, wave int) GateVars {
	c := r.Count()
	v := GateVars{Succeeded: c.Succeeded, Failed: c.Failed, Finished: c.Succeeded + c.Failed, Running: c.Running, Total: c.Total, Wave: wave + 1}
	for _, t := range r.Targets {
		if t.State == Succeeded || t.State == Failed {
			v.Runs = append(v.Runs, GateRun{Name: t.Name, Status: t.Status, Error: t.Error, Params: t.Params})
		}
	}
	return v
}

// end records why the scheduler stopped and returns the fleet's outcome.
func (s *Scheduler) end(ctx context.Context, rec *Record, halted string) (*Record, error) {
	why := "finished"
	if halted != "" {
		why = halted
	}
	out, err := s.Store.Update(context.WithoutCancel(ctx), rec.Name, func(r *Record) error {
		if r.Scheduler != nil && r.Scheduler.Holder == s.Holder {
			r.Scheduler = nil
		}
		r.Ended = why
		return nil
	})
	if err != nil {
		return rec, err
	}
	c := out.Count()
	s.emit(out, Event{Type: EventFinished, Status: why, Counts: &c})
	switch {
	case halted == "interrupted":
		return out, context.Cause(ctx)
	case halted != "":
		return out, &HaltedError{Name: out.Name, Reason: halted}
	case c.Failed > 0:
		var failed []string
		for _, t := range out.Targets {
			if t.State == Failed {
				failed = append(failed, t.Name)
			}
		}
		return out, &FailedError{Name: out.Name, Failed: failed}
	}
	return out, nil
}

func (s *Scheduler) emit(r *Record, e Event) {
	if s.Observe == nil {
		return
	}
	e.Fleet = r.Name
	if e.Time.IsZero() {
		e.Time = time.Now().UTC()
	}
	s.Observe(e)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// New is a new fleet record for targets, assigned to waves.
func New(name, planFile, planName string, planSource []byte, targets []Target, rollout Rollout, executor map[string]any) (*Record, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	waves := rollout.waveOf(len(targets))
	r := &Record{Name: name, Plan: planFile, PlanName: planName, PlanSource: planSource, Created: time.Now().UTC(), Rollout: rollout, Executor: executor}
	for i, t := range targets {
		r.Targets = append(r.Targets, &TargetRecord{Name: t.Name, Params: t.ParamValues, Wave: waves[i], State: Waiting})
	}
	return r, nil
}

// Rerun prepares a fleet that ran before for another rollout: targets that succeeded stay as
// they are (they are not run again), every other one waits to start again, and the rollout
// may change.
func Rerun(r *Record, rollout *Rollout) {
	if rollout != nil {
		r.Rollout.Override(*rollout)
	}
	waves := r.Rollout.waveOf(len(r.Targets))
	r.WavesStarted = nil // a new rollout: its gates are evaluated again
	for i, t := range r.Targets {
		t.Wave = waves[i]
		if t.State == Succeeded || t.State == Started {
			continue
		}
		t.State = Waiting
	}
	if r.Control == Cancelled {
		r.Control = Running
	}
}
