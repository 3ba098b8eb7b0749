package engine_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"planrun.dev/planrun/engine"
)

// losingStore is a DirStore whose locks can be lost on demand, as a lease that another runner
// took over: after lose(), Lost is closed and checkpoints are refused.
type losingStore struct {
	*engine.DirStore
	mu   sync.Mutex
	lost chan struct{}
	gone bool
}

type losingLock struct {
	engine.Lock
	s *losingStore
}

func (l losingLock) Lost() <-chan struct{} { return l.s.lost }
func (l losingLock) Err() error {
	return &engine.LockLostError{RunID: "run-1", Reason: "lease taken over by pod other"}
}

func (s *losingStore) Lock(ctx context.Context, runID string, opts engine.LockOptions) (engine.Lock, error) {
	l, err := s.DirStore.Lock(ctx, runID, opts)
	if err != nil {
		return nil, err
	}
	return losingLock{Lock: l, s: s}, nil
}

func (s *losingStore) Save(ctx context.Context, j *engine.Journal) error {
	s.mu.Lock()
	gone := s.gone
	s.mu.Unlock()
	if gone {
		return &engine.LockLostError{RunID: j.RunID, Reason: "checkpoint refused"}
	}
	return s.DirStore.Save(ctx, j)
}

func (s *losingStore) lose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.gone {
		s.gone = true
		close(s.lost)
	}
}

// TestLostLockStopsTheRunner: a runner whose lock is lost while a step runs stops that step, runs
// no further step and no rollback, writes nothing more, and says why; the run stays resumable by
// whoever holds it now.
func TestLostLockStopsTheRunner(t *testing.T) {
	f := newFixture(t)
	store := &losingStore{DirStore: f.store, lost: make(chan struct{})}
	f.runner.Store = store
	body := `
steps:
  - {id: a, type: test.op, rollback: [{id: undo-a, type: test.op}]}
  - {id: b, type: test.op, with: {sleep: 1m}}
  - {id: c, type: test.op}
`
	f.runner.Observer = engine.ObserverFunc(func(e engine.Event) {
		if e.Type == engine.EventStepStarted && e.StepID == "b" {
			store.lose()
		}
	})
	_, err := f.apply(body, engine.ApplyOptions{})
	if !errors.Is(err, engine.ErrLockLost) || !errors.Is(err, engine.ErrInterrupted) || !strings.Contains(err.Error(), "lease taken over by pod other") {
		t.Fatalf("apply after the lock was lost: %v; want the lock loss, as an interruption", err)
	}
	if got := ran(); !equal(got, []string{"a", "b"}) {
		t.Errorf("ran %v: want a, then b stopped, and no c nor undo", got)
	}
	j, err := f.store.Load(context.Background(), "run-1")
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != engine.RunRunning || j.Step("b").Status != engine.StepRunning || j.Step("a").Status != engine.StepSucceeded {
		t.Errorf("journal after the loss: run %s, a %s, b %s; want the last checkpoint (running b)", j.Status, j.Step("a").Status, j.Step("b").Status)
	}
}
