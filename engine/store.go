package engine

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Store keeps runs: their journals, the plan each started from, their locks and a local folder
// for step artifacts (logs, command output). DirStore keeps them in a local folder; a store
// backed by a ConfigMap or Secret, with a Lease as the lock, fits the same interface so that plans
// can run as in-cluster Jobs.
type Store interface {
	// Create records a new run and the plan source it starts from. It fails if the run exists.
	Create(ctx context.Context, j *Journal, planSource []byte) error
	// Save replaces the run's journal atomically: after a crash it holds the old or the new
	// journal, never a mixture.
	Save(ctx context.Context, j *Journal) error
	// Load returns the run's journal; ErrRunNotFound if there is none.
	Load(ctx context.Context, runID string) (*Journal, error)
	// PlanSource returns the plan source recorded by Create.
	PlanSource(ctx context.Context, runID string) ([]byte, error)
	// List returns the journals of every run, oldest first.
	List(ctx context.Context) ([]*Journal, error)
	// Lock takes the run's lock, or fails with a *LockedError saying who holds it.
	Lock(ctx context.Context, runID string, opts LockOptions) (Lock, error)
	// ArtifactDir returns a local folder for the artifacts of one step of a run, creating it.
	ArtifactDir(runID, stepID string) (string, error)
}

// ErrRunNotFound is returned by Store.Load for an unknown run.
var ErrRunNotFound = errors.New("run not found")

// LockOptions control taking a run lock.
type LockOptions struct {
	// BreakStale takes over a lock whose holder is gone (its process died without releasing it).
	// A lock whose holder is alive is never broken.
	BreakStale bool
}

// Lock is a held run lock.
type Lock interface {
	Release() error
}

// LockHolder says who holds a lock.
type LockHolder struct {
	PID     int       `json:"pid"`
	Host    string    `json:"host"`
	Started time.Time `json:"started"`
	Command string    `json:"command,omitempty"`
}

func (h LockHolder) String() string {
	return fmt.Sprintf("pid %d on %s since %s", h.PID, h.Host, h.Started.Format(time.RFC3339))
}

// LockedError is returned when a run is locked by someone else, or by a holder that is gone.
type LockedError struct {
	RunID  string
	Holder LockHolder
	// Stale is true when the holder is gone: the lock can be broken with --break-lock.
	Stale bool
}

func (e *LockedError) Error() string {
	if e.Stale {
		return fmt.Sprintf("run %s has a stale lock from %s: that process is gone; if you are sure nothing else runs this plan, retry with --break-lock", e.RunID, e.Holder)
	}
	return fmt.Sprintf("run %s is locked by %s (%s); wait for it or stop it", e.RunID, e.Holder, e.Holder.Command)
}
