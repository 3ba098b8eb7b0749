package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Record is a fleet as it is kept: what it runs, how, and how far each target got. The
// scheduler is its only writer but for Control, which `planrun fleet pause|resume|cancel` set.
type Record struct {
	Name string `json:"name"`
	// Plan is the plan file the fleet runs, as given; PlanName its metadata.name.
	Plan     string `json:"plan"`
	PlanName string `json:"planName"`
	// PlanSource is the plan as the fleet started: targets started later, and by a scheduler
	// on another machine, run the same plan.
	PlanSource []byte    `json:"planSource"`
	Created    time.Time `json:"created"`
	Rollout    Rollout   `json:"rollout"`
	// Executor says how targets run ("local", "in-cluster") and with what options, for a
	// scheduler that takes the fleet over; the fleet does not read it.
	Executor map[string]any  `json:"executor,omitempty"`
	Targets  []*TargetRecord `json:"targets"`
	// WavesStarted are the waves (0-based) this rollout started: their gate was evaluated.
	WavesStarted []int   `json:"wavesStarted,omitempty"`
	Control      Control `json:"control,omitempty"`
	// Scheduler is who runs the fleet, and when it last said so.
	Scheduler *Heartbeat `json:"scheduler,omitempty"`
	// Ended says why the last scheduler stopped ("" while one runs or none has yet).
	Ended string `json:"ended,omitempty"`
}

// Control is what the operator asked of a fleet.
type Control string

// Controls.
const (
	// Running: start targets as the rollout says.
	Running Control = ""
	// Paused: start no new target; running ones go on. Resume undoes it.
	Paused Control = "paused"
	// Cancelled: start no new target, ever; running ones go on to their end.
	Cancelled Control = "cancelled"
)

// TargetState is where a target is.
type TargetState string

// Target states.
const (
	Waiting   TargetState = "Waiting"
	Started   TargetState = "Running"
	Succeeded TargetState = "Succeeded"
	Failed    TargetState = "Failed"
	// Skipped: the fleet was cancelled, or halted, before the target started.
	Skipped TargetState = "Skipped"
)

// TargetRecord is a target and its run.
type TargetRecord struct {
	Name   string         `json:"name"`
	Params map[string]any `json:"params,omitempty"`
	Wave   int            `json:"wave"`
	// RunID is the target's current run ("" before it starts); Attempt counts its runs.
	RunID    string      `json:"runID,omitempty"`
	Attempt  int         `json:"attempt,omitempty"`
	State    TargetState `json:"state"`
	Status   string      `json:"status,omitempty"` // the run's status once it ended
	Error    string      `json:"error,omitempty"`
	Started  *time.Time  `json:"started,omitempty"`
	Finished *time.Time  `json:"finished,omitempty"`
}

func (t *TargetRecord) finished() bool {
	return t.State == Succeeded || t.State == Failed || t.State == Skipped
}

// Heartbeat is a scheduler's claim on a fleet.
type Heartbeat struct {
	Holder string    `json:"holder"`
	Beat   time.Time `json:"beat"`
}

// Store keeps fleet records.
type Store interface {
	// Create records a new fleet; ErrExists if there is one of that name.
	Create(ctx context.Context, r *Record) error
	// Load returns a fleet; ErrNotFound if there is none.
	Load(ctx context.Context, name string) (*Record, error)
	// Update applies change to the fleet as kept and keeps the result, atomically: a change made
	// meanwhile by another writer is read again and change applied to it.
	Update(ctx context.Context, name string, change func(*Record) error) (*Record, error)
	// List returns every fleet, oldest first.
	List(ctx context.Context) ([]*Record, error)
}

// Errors of stores.
var (
	ErrNotFound = errors.New("fleet not found")
	ErrExists   = errors.New("fleet exists")
)

// BusyError says that another scheduler runs the fleet.
type BusyError struct {
	Name      string
	Heartbeat Heartbeat
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("fleet %s is being run by %s (last seen %s ago)", e.Name, e.Heartbeat.Holder, time.Since(e.Heartbeat.Beat).Round(time.Second))
}

// Counts are a fleet's targets by state.
type Counts struct {
	Total, Waiting, Running, Succeeded, Failed, Skipped int
}

// Count counts r's targets by state.
func (r *Record) Count() Counts {
	c := Counts{Total: len(r.Targets)}
	for _, t := range r.Targets {
		switch t.State {
		case Waiting:
			c.Waiting++
		case Started:
			c.Running++
		case Succeeded:
			c.Succeeded++
		case Failed:
			c.Failed++
		case Skipped:
			c.Skipped++
		}
	}
	return c
}

// checkName refuses a fleet name that cannot name its runs' prefix or a ConfigMap.
func checkName(name string) error {
	if name == "" || len(name) > 50 {
		return fmt.Errorf("fleet name %q: want 1 to 50 characters", name)
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(name)-1
		if !ok {
			return fmt.Errorf("fleet name %q: lower-case letters, digits and inner '-' only", name)
		}
	}
	return nil
}
