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
	// List returns every run, oldest first. A run whose journal cannot be read is listed with
	// the reason, never hidden; folders that are not runs are skipped.
	List(ctx context.Context) ([]RunEntry, error)
	// Lock takes the run's lock, or fails with a *LockedError saying who holds it.
	Lock(ctx context.Context, runID string, opts LockOptions) (Lock, error)
	// LockState says whether a runner holds the run's lock, without taking it: status and runs
	// ask it to tell a live run from one whose runner died.
	LockState(ctx context.Context, runID string) (LockState, error)
	// ArtifactDir returns a local folder for the artifacts of one step of a run, creating it.
	ArtifactDir(runID, stepID string) (string, error)
}

// RunEntry is one run as Store.List finds it.
type RunEntry struct {
	RunID string
	// Journal is the run's checkpoint; nil when Err says why it cannot be read.
	Journal *Journal
	// Err is why the journal cannot be read (errors.Is ErrCorruptJournal for a damaged or
	// forged one, which resume and rollback refuse too).
	Err error
	// Time orders the list: when the run started, or when an unreadable journal was written.
	Time time.Time
}

// ErrRunNotFound is returned by Store.Load for an unknown run.
var ErrRunNotFound = errors.New("run not found")

// LockOptions control taking a run lock.
type LockOptions struct {
	// BreakStale takes over a lock whose holder is gone (its process died without releasing it),
	// or was taken on another host (the operator vouches that it is gone). A lock whose holder
	// is alive on this host is never broken.
	BreakStale bool
}

// Lock is a held run lock.
type Lock interface {
	Release() error
}

// LosableLock is a Lock that can be lost before it is released: a lease that could not be
// renewed in time, or that another runner took over once it expired. Lost is closed then, and
// Err says why. The runner stops before its next side effect: the run's context is cancelled
// with Err as its cause, and the store refuses its checkpoints.
type LosableLock interface {
	Lock
	Lost() <-chan struct{}
	Err() error
}

// ErrLockLost matches a *LockLostError.
var ErrLockLost = errors.New("run lock lost")

// LockLostError says why a runner lost its run's lock. It matches ErrLockLost and also
// ErrInterrupted: a runner that lost its run stops as if interrupted (no rollback, the step
// under way stays Running), leaving the run to whoever holds it now.
type LockLostError struct {
	RunID  string
	Reason string
}

func (e *LockLostError) Error() string {
	return fmt.Sprintf("lost the lock of run %s: %s; stopped before the next side effect", e.RunID, e.Reason)
}

// Is makes errors.Is match ErrLockLost and ErrInterrupted.
func (e *LockLostError) Is(target error) bool {
	return target == ErrLockLost || target == ErrInterrupted
}

// whileLocked returns a context that ends when lock is lost (its cause is the lock's Err), and
// a function that releases what it holds.
func whileLocked(ctx context.Context, lock Lock) (context.Context, context.CancelFunc) {
	ll, ok := lock.(LosableLock)
	if !ok {
		return context.WithCancel(ctx)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-ll.Lost():
			cancel(ll.Err())
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil) }
}

// lostLock is err, or the lock loss that cut ctx short when err is the interruption it caused
// (and the refused checkpoints that followed): one line that says why.
func lostLock(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrLockLost) && errors.Is(err, ErrInterrupted) {
		return cause
	}
	return err
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

// LockStatus is what a run's lock says about its runner.
type LockStatus string

// Lock statuses.
const (
	// LockFree: no runner holds the run, and none died holding it.
	LockFree LockStatus = "free"
	// LockHeld: a live runner holds the run.
	LockHeld LockStatus = "held"
	// LockStale: the runner that took the lock is gone without releasing it (killed, crashed):
	// the run was cut off.
	LockStale LockStatus = "stale"
	// LockForeign: the lock was taken on another host; whether that runner still runs cannot be
	// checked from here.
	LockForeign LockStatus = "foreign"
)

// LockState is the state of a run's lock.
type LockState struct {
	Status LockStatus
	// Holder is the recorded holder; zero when there is none or Garbled.
	Holder LockHolder
	// Garbled: a holder record is there but cannot be read (a runner died writing it, or the
	// file was damaged). With the lock free it counts as stale: some runner took the lock.
	Garbled bool
}

// LockedError is returned when a run is locked by someone else, by a holder that is gone, or by
// a holder on another host.
type LockedError struct {
	RunID string
	State LockState
}

func (e *LockedError) Error() string {
	h := e.State.Holder
	who := h.String()
	switch {
	case e.State.Garbled:
		who = "a runner whose holder record cannot be read"
	case h.PID == 0:
		who = "a runner that has not recorded itself yet"
	}
	switch e.State.Status {
	case LockStale:
		return fmt.Sprintf("run %s has a stale lock from %s: that process is gone; if you are sure nothing else runs this plan, retry with --break-lock", e.RunID, who)
	case LockForeign:
		return fmt.Sprintf("run %s is locked by %s: held by %s (cannot check whether it still runs from here); if you are sure it does not, retry with --break-lock", e.RunID, who, h.Host)
	}
	if e.State.Garbled || h.PID == 0 {
		return fmt.Sprintf("run %s is locked by %s; wait for it or stop it", e.RunID, who)
	}
	return fmt.Sprintf("run %s is locked by %s (%s); wait for it or stop it", e.RunID, who, h.Command)
}
