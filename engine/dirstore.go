package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DirStore keeps runs in a local folder, one sub-folder per run:
//
//	<root>/<run-id>/journal.json   the checkpoint, replaced atomically
//	<root>/<run-id>/plan.yaml      the plan as it was when the run started
//	<root>/<run-id>/lock           the run lock (flock) and its holder
//	<root>/<run-id>/steps/<id>/    artifacts of each step (logs, output)
type DirStore struct {
	Root     string
	steplogs dirStepLogs // see steplog.go
}

// NewDirStore returns a store rooted at root (created on first use).
func NewDirStore(root string) *DirStore { return &DirStore{Root: root} }

// RunDir is the folder of one run.
func (s *DirStore) RunDir(runID string) string { return filepath.Join(s.Root, runID) }

func (s *DirStore) journalPath(runID string) string {
	return filepath.Join(s.RunDir(runID), "journal.json")
}

// Create implements Store.
func (s *DirStore) Create(ctx context.Context, j *Journal, planSource []byte) error {
	if err := os.MkdirAll(s.Root, 0o755); err != nil {
		return err
	}
	dir := s.RunDir(j.RunID)
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("run %s already exists in %s", j.RunID, s.Root)
		}
		return err
	}
	if err := WriteFileAtomic(filepath.Join(dir, "plan.yaml"), planSource, 0o644); err != nil {
		return err
	}
	return s.Save(ctx, j)
}

// Save implements Store.
func (s *DirStore) Save(_ context.Context, j *Journal) error {
	data, err := j.Encode()
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(s.journalPath(j.RunID), data, 0o644); err != nil {
		return err
	}
	s.journalWritten(j.RunID, data)
	return nil
}

// Load implements Store.
func (s *DirStore) Load(_ context.Context, runID string) (*Journal, error) {
	if runID == "" || strings.ContainsAny(runID, `/\`) || runID == "." || runID == ".." {
		return nil, fmt.Errorf("invalid run id %q", runID)
	}
	data, err := os.ReadFile(s.journalPath(runID))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (looked in %s)", ErrRunNotFound, runID, s.Root)
	}
	if err != nil {
		return nil, err
	}
	j, err := DecodeJournal(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.journalPath(runID), err)
	}
	if err := s.applyStepLog(runID, data, j); err != nil {
		return nil, fmt.Errorf("%s: %w", s.stepLogPath(runID), err)
	}
	return j, nil
}

// PlanSource implements Store.
func (s *DirStore) PlanSource(_ context.Context, runID string) ([]byte, error) {
	return os.ReadFile(filepath.Join(s.RunDir(runID), "plan.yaml"))
}

// List implements Store.
func (s *DirStore) List(ctx context.Context) ([]*Journal, error) {
	entries, err := os.ReadDir(s.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Journal
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		j, err := s.Load(ctx, e.Name())
		if err != nil {
			continue // a half-created run folder or a foreign folder is not a run
		}
		out = append(out, j)
	}
	sort.SliceStable(out, func(i, k int) bool { return out[i].Started.Before(out[k].Started) })
	return out, nil
}

// ArtifactDir implements Store.
func (s *DirStore) ArtifactDir(runID, stepID string) (string, error) {
	dir := filepath.Join(s.RunDir(runID), "steps", stepID)
	return dir, os.MkdirAll(dir, 0o755)
}

// WriteFileAtomic writes data to path so that path holds either its old or its new content after
// a crash: write a temp file in the same folder, fsync it, rename it over path, fsync the folder.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
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
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes the names in dir durable (a rename, a new file).
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
