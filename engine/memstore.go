package engine

import (
	"context"
	"fmt"
	"os"
	"sync"

	"planrun.dev/planrun/internal/safepath"
)

// MemStore keeps runs in memory. Dry runs use it, so that they leave nothing behind; artifacts go
// to a temporary folder.
type MemStore struct {
	mu       sync.Mutex
	journals map[string][]byte
	plans    map[string][]byte
	locked   map[string]bool
	steplogs map[string][][]byte // see steplog.go
	tmp      string
}

// NewMemStore returns an empty in-memory store.
func NewMemStore() *MemStore {
	return &MemStore{journals: map[string][]byte{}, plans: map[string][]byte{}, locked: map[string]bool{}}
}

// Create implements Store.
func (m *MemStore) Create(ctx context.Context, j *Journal, planSource []byte) error {
	// The id names the run's artifact folder: checked as a DirStore checks it.
	if err := safepath.Name("run id", j.RunID); err != nil {
		return err
	}
	m.mu.Lock()
	if _, ok := m.journals[j.RunID]; ok {
		m.mu.Unlock()
		return fmt.Errorf("run %s already exists", j.RunID)
	}
	m.plans[j.RunID] = planSource
	m.mu.Unlock()
	return m.Save(ctx, j)
}

// Save implements Store. The journal is encoded, as a real store would, so that outputs that
// cannot be recorded fail here too.
func (m *MemStore) Save(_ context.Context, j *Journal) error {
	data, err := j.Encode()
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.journals[j.RunID] = data
	delete(m.steplogs, j.RunID)
	return nil
}

// Load implements Store.
func (m *MemStore) Load(_ context.Context, runID string) (*Journal, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	data, ok := m.journals[runID]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrRunNotFound, runID)
	}
	return m.decodeWithSteps(runID, data)
}

// PlanSource implements Store.
func (m *MemStore) PlanSource(_ context.Context, runID string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.plans[runID], nil
}

// List implements Store.
func (m *MemStore) List(ctx context.Context) ([]RunEntry, error) {
	m.mu.Lock()
	ids := make([]string, 0, len(m.journals))
	for id := range m.journals {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	var out []RunEntry
	for _, id := range ids {
		e := RunEntry{RunID: id}
		if e.Journal, e.Err = m.Load(ctx, id); e.Journal != nil {
			e.Time = e.Journal.Started
		}
		out = append(out, e)
	}
	SortRunEntries(out)
	return out, nil
}

type memLock struct {
	m  *MemStore
	id string
}

// Lock implements Store.
func (m *MemStore) Lock(_ context.Context, runID string, _ LockOptions) (Lock, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locked[runID] {
		return nil, &LockedError{RunID: runID, State: m.heldState()}
	}
	m.locked[runID] = true
	return &memLock{m: m, id: runID}, nil
}

// LockState implements Store.
func (m *MemStore) LockState(_ context.Context, runID string) (LockState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locked[runID] {
		return m.heldState(), nil
	}
	return LockState{Status: LockFree}, nil
}

// heldState is the state of a lock held in this process: a MemStore lives in one.
func (m *MemStore) heldState() LockState {
	host, _ := os.Hostname()
	return LockState{Status: LockHeld, Holder: LockHolder{PID: os.Getpid(), Host: host}}
}

func (l *memLock) Release() error {
	l.m.mu.Lock()
	defer l.m.mu.Unlock()
	delete(l.m.locked, l.id)
	return nil
}

// ArtifactDir implements Store.
func (m *MemStore) ArtifactDir(runID, stepID string) (string, error) {
	m.mu.Lock()
	if m.tmp == "" {
		dir, err := os.MkdirTemp("", "planrun-")
		if err != nil {
			m.mu.Unlock()
			return "", err
		}
		m.tmp = dir
	}
	tmp := m.tmp
	m.mu.Unlock()
	runDir, err := safepath.Join(tmp, "run id", runID)
	if err != nil {
		return "", err
	}
	return makeArtifactDir(runDir, stepID)
}
