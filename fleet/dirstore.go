package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// DirStore keeps fleet records as JSON files in a folder, next to the runs of a local state
// folder. Updates are serialized by an flock on a file of the fleet's own, and replace the record
// by rename, so a crash leaves the old or the new record.
type DirStore struct {
	Dir string
}

var _ Store = (*DirStore)(nil)

func (s *DirStore) path(name string) string { return filepath.Join(s.Dir, name+".json") }

// Create implements Store.
func (s *DirStore) Create(ctx context.Context, r *Record) error {
	if err := checkName(r.Name); err != nil {
		return err
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return err
	}
	unlock, err := s.lock(r.Name)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(s.path(r.Name)); err == nil {
		return fmt.Errorf("%w: %s", ErrExists, r.Name)
	}
	return s.write(r)
}

// Load implements Store.
func (s *DirStore) Load(ctx context.Context, name string) (*Record, error) {
	if err := checkName(name); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	data, err := os.ReadFile(s.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (no %s)", ErrNotFound, name, s.path(name))
	}
	if err != nil {
		return nil, err
	}
	return decodeRecord(data, s.path(name))
}

// Update implements Store.
func (s *DirStore) Update(ctx context.Context, name string, change func(*Record) error) (*Record, error) {
	unlock, err := s.lock(name)
	if err != nil {
		return nil, err
	}
	defer unlock()
	r, err := s.Load(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := change(r); err != nil {
		return nil, err
	}
	return r, s.write(r)
}

// List implements Store.
func (s *DirStore) List(ctx context.Context) ([]*Record, error) {
	entries, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		r, err := s.Load(ctx, name)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

func (s *DirStore) write(r *Record) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.Dir, "."+r.Name+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), s.path(r.Name))
}

// lock serializes writers of one fleet, across processes.
func (s *DirStore) lock(name string) (func(), error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.Dir, "."+name+".lock"), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}

func decodeRecord(data []byte, where string) (*Record, error) {
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("fleet record %s: %v", where, err)
	}
	if err := r.Rollout.restore(); err != nil {
		return nil, fmt.Errorf("fleet record %s: rollout: %v", where, err)
	}
	return &r, nil
}
