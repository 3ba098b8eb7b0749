package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"planrun.dev/planrun/internal/safepath"
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

// RunDir is the folder of one run. The run id is checked first: no id names a folder outside
// Root.
func (s *DirStore) RunDir(runID string) (string, error) {
	return safepath.Join(s.Root, "run id", runID)
}

// existingRunDir is RunDir for a run that must exist: a real folder, not a symlink planted in
// the state folder to send planrun's writes elsewhere (List does not show those either).
func (s *DirStore) existingRunDir(runID string) (string, error) {
	dir, err := s.RunDir(runID)
	if err != nil {
		return "", err
	}
	fi, err := os.Lstat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("%w: %s (looked in %s)", ErrRunNotFound, runID, s.Root)
	case err != nil:
		return "", err
	case !fi.IsDir():
		return "", fmt.Errorf("run %s: %s is not a run folder (%s)", runID, dir, fi.Mode().Type())
	}
	return dir, nil
}

// Create implements Store.
func (s *DirStore) Create(ctx context.Context, j *Journal, planSource []byte) error {
	dir, err := s.RunDir(j.RunID)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(s.Root, 0o755); err != nil {
		return err
	}
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
	dir, err := s.RunDir(j.RunID)
	if err != nil {
		return err
	}
	data, err := j.Encode()
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(filepath.Join(dir, journalFile), data, 0o644); err != nil {
		return err
	}
	s.journalWritten(dir, j.RunID, data)
	return nil
}

// journalFile is the name of a run's journal in its folder.
const journalFile = "journal.json"

// Load implements Store.
func (s *DirStore) Load(_ context.Context, runID string) (*Journal, error) {
	dir, err := s.existingRunDir(runID)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, journalFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (%s has no %s)", ErrRunNotFound, runID, dir, journalFile)
	}
	if err != nil {
		return nil, err
	}
	j, err := DecodeJournal(data)
	if err == nil && j.RunID != runID {
		// A journal copied or forged from another run would make planrun write that run's folder.
		err = fmt.Errorf("%w: it names run %q", ErrCorruptJournal, j.RunID)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	logPath := filepath.Join(dir, stepLogFile)
	if err := applyStepLog(logPath, data, j); err != nil {
		return nil, fmt.Errorf("%s: %w", logPath, err)
	}
	return j, nil
}

// PlanSource implements Store.
func (s *DirStore) PlanSource(_ context.Context, runID string) ([]byte, error) {
	dir, err := s.existingRunDir(runID)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(filepath.Join(dir, "plan.yaml"))
}

// List implements Store. A folder is a run when it is a real folder with a journal file and a
// usable name; any other entry (a stray file, a symlink, a folder of someone else) is not.
func (s *DirStore) List(ctx context.Context) ([]RunEntry, error) {
	entries, err := os.ReadDir(s.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []RunEntry
	for _, e := range entries {
		if !e.IsDir() || safepath.Name("run id", e.Name()) != nil {
			continue
		}
		fi, err := os.Lstat(filepath.Join(s.Root, e.Name(), journalFile))
		if err != nil || !fi.Mode().IsRegular() {
			continue // a half-created run folder or a foreign folder is not a run
		}
		entry := RunEntry{RunID: e.Name(), Time: fi.ModTime()}
		entry.Journal, entry.Err = s.Load(ctx, e.Name())
		if entry.Journal != nil {
			entry.Time = entry.Journal.Started
		}
		out = append(out, entry)
	}
	SortRunEntries(out)
	return out, nil
}

// SortRunEntries orders runs oldest first, as Store.List returns them.
func SortRunEntries(out []RunEntry) {
	sort.SliceStable(out, func(i, k int) bool { return out[i].Time.Before(out[k].Time) })
}

// ArtifactDir implements Store.
func (s *DirStore) ArtifactDir(runID, stepID string) (string, error) {
	dir, err := s.existingRunDir(runID)
	if err != nil {
		return "", err
	}
	return makeArtifactDir(dir, stepID)
}

// makeArtifactDir creates the artifact folder of a step in a run folder; the step id is checked
// first, as it names the folder.
func makeArtifactDir(runDir, stepID string) (string, error) {
	dir, err := safepath.Join(filepath.Join(runDir, "steps"), "step id", stepID)
	if err != nil {
		return "", err
	}
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
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := writeSyncClose(tmp, data); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// writeSyncClose writes data to f, makes it durable and closes f, checking each step: a full
// disk shows at the write, the sync or the close, depending on the file system.
func writeSyncClose(f *os.File, data []byte) error {
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
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
