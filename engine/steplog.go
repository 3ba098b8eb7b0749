package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// A checkpoint after every step used to rewrite the whole journal: a run of n steps wrote n
// journals of n records, quadratic in the plan's size (10,000 steps: tens of gigabytes encoded).
// A checkpoint that changes one step record now appends that record to a step log beside the
// journal instead; loading the journal applies the log. The guarantee is the same: after a
// crash, the journal plus its log hold either the old or the new state of the record (a line
// cut short by the crash is ignored), never a mix. Every so often (maxStepLines) the whole
// journal is written again and the log starts over, so reading a journal stays linear too.

// stepSaver is implemented by stores that can checkpoint one step record on its own.
type stepSaver interface {
	saveStep(ctx context.Context, j *Journal, rec *StepRecord) error
}

// stepLine is one line of a step log: the record as it is now, and the journal's Updated.
type stepLine struct {
	Updated time.Time   `json:"updated"`
	Step    *StepRecord `json:"step"`
}

// maxStepLines is how many step lines a log may hold before the journal is written again: as
// many as the journal has records, so the rewrites cost no more than the lines.
func maxStepLines(j *Journal) int { return len(j.Steps) + 16 }

func encodeStepLine(j *Journal, rec *StepRecord) ([]byte, error) {
	b, err := json.Marshal(stepLine{Updated: j.Updated, Step: rec})
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// applyStepLines applies the complete lines of a step log to j, in order. A record is replaced
// by id, or appended (a rollback record created after the journal was written). The last line
// may have been cut short by a crash: without its newline it is ignored.
func applyStepLines(j *Journal, lines []byte) error {
	index := make(map[string]int, len(j.Steps))
	for i, r := range j.Steps {
		index[r.ID] = i
	}
	for len(lines) > 0 {
		end := bytes.IndexByte(lines, '\n')
		if end < 0 {
			break // cut short by a crash: that checkpoint never happened
		}
		line := lines[:end]
		lines = lines[end+1:]
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.UseNumber()
		var l stepLine
		if err := dec.Decode(&l); err != nil || l.Step == nil {
			return fmt.Errorf("%w: step log line %s: %v", ErrCorruptJournal, quoteLong(string(line)), err)
		}
		if l.Step.Outputs != nil {
			l.Step.Outputs = fixNumbers(map[string]any(l.Step.Outputs)).(map[string]any)
		}
		if i, ok := index[l.Step.ID]; ok {
			j.Steps[i] = l.Step
		} else {
			index[l.Step.ID] = len(j.Steps)
			j.Steps = append(j.Steps, l.Step)
		}
		j.Updated = l.Updated
	}
	return j.check() // a forged line is as untrusted as a forged journal
}

// saveStepLocked checkpoints rec, which is the only change since the last checkpoint besides
// j.Updated. x.mu is held.
func (x *execution) saveStepLocked(ctx context.Context, rec *StepRecord) error {
	x.views.changed(rec)
	ss, ok := x.store.(stepSaver)
	if !ok {
		return x.writeJournal(ctx)
	}
	x.j.Updated = time.Now().UTC()
	if err := ss.saveStep(context.WithoutCancel(ctx), x.j, rec); err != nil {
		return fmt.Errorf("checkpoint of run %s: %w", x.j.RunID, err)
	}
	return nil
}

func (x *execution) saveStep(ctx context.Context, rec *StepRecord) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.saveStepLocked(ctx, rec)
}

// stepViews is the expression environment's view of the steps, kept up to date record by
// record: rebuilding it for every step was quadratic. It is only changed between steps (in
// env), so the map a running step evaluates against does not change under it.
type stepViews struct {
	views   map[string]StepView
	pending map[*StepRecord]bool // checkpointed since the last env
	all     bool                 // the journal was written whole: rebuild
}

func (v *stepViews) changed(rec *StepRecord) {
	if v.pending == nil {
		v.pending = map[*StepRecord]bool{}
	}
	v.pending[rec] = true
}

func (v *stepViews) invalidate() { v.all = true }

// current returns the views as the journal stands now. x.mu is held.
func (v *stepViews) current(j *Journal) map[string]StepView {
	if v.views == nil || v.all {
		v.views = make(map[string]StepView, len(j.Steps))
		for _, rec := range j.Steps {
			v.views[rec.ID] = StepView{Status: string(rec.Status), Outputs: rec.Outputs}
		}
	} else {
		for rec := range v.pending {
			v.views[rec.ID] = StepView{Status: string(rec.Status), Outputs: rec.Outputs}
		}
	}
	v.pending, v.all = nil, false
	return v.views
}

// dirStepLogs is what a DirStore knows of the step logs it writes: per run, the sha256 of the
// journal the log applies to and how many lines it has. A log whose first line names another
// journal (a crash between writing a new journal and removing the old log) is ignored.
type dirStepLogs struct {
	mu   sync.Mutex
	runs map[string]*dirStepLog
}

type dirStepLog struct {
	base  string
	lines int
}

// stepLogHeader is the first line of a step log.
type stepLogHeader struct {
	Journal string `json:"journal"` // sha256 of the journal file the lines apply to
}

// stepLogFile is the name of a run's step log in its folder, beside journalFile.
const stepLogFile = "journal.steps"

// journalWritten is called after the journal of the run in dir was written whole: its log is
// obsolete.
func (s *DirStore) journalWritten(dir, runID string, data []byte) {
	sum := sha256.Sum256(data)
	s.steplogs.mu.Lock()
	if s.steplogs.runs == nil {
		s.steplogs.runs = map[string]*dirStepLog{}
	}
	s.steplogs.runs[runID] = &dirStepLog{base: hex.EncodeToString(sum[:])}
	s.steplogs.mu.Unlock()
	// Stale once the journal is written; removing it is tidiness, not correctness.
	_ = os.Remove(filepath.Join(dir, stepLogFile))
}

// saveStep implements stepSaver: it appends rec to the run's step log and syncs it.
func (s *DirStore) saveStep(ctx context.Context, j *Journal, rec *StepRecord) error {
	s.steplogs.mu.Lock()
	st := s.steplogs.runs[j.RunID]
	s.steplogs.mu.Unlock()
	if st == nil || st.lines >= maxStepLines(j) {
		// This store has not written this journal (a resume in a new process) or the log is
		// long: write the journal whole, which starts a new log.
		return s.Save(ctx, j)
	}
	line, err := encodeStepLine(j, rec)
	if err != nil {
		return err
	}
	dir, err := s.RunDir(j.RunID)
	if err != nil {
		return err
	}
	path := filepath.Join(dir, stepLogFile)
	if st.lines == 0 {
		header, _ := json.Marshal(stepLogHeader{Journal: st.base})
		line = append(append(header, '\n'), line...)
	}
	if err := appendSynced(path, line, st.lines == 0); err != nil {
		// A write that failed part-way may have left a piece of a line at the end of the log;
		// the next line would merge with it. Forget the log: the next checkpoint writes the
		// journal whole, which starts a new one.
		s.steplogs.mu.Lock()
		delete(s.steplogs.runs, j.RunID)
		s.steplogs.mu.Unlock()
		return err
	}
	st.lines++
	return nil
}

// appendSynced appends data to the file at path and syncs it; fresh truncates the file first (a
// log left behind by an older journal) and makes its name durable. A symlink planted in the run
// folder is not followed.
func appendSynced(path string, data []byte, fresh bool) error {
	flags := os.O_WRONLY | os.O_APPEND | os.O_CREATE | syscall.O_NOFOLLOW
	if fresh {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return err
	}
	if err := writeSyncClose(f, data); err != nil {
		return err
	}
	if fresh {
		return syncDir(filepath.Dir(path))
	}
	return nil
}

// applyStepLog applies the step log at path to j, decoded from the journal file data, and checks
// the result as DecodeJournal checks a journal: a forged line is as untrusted as a forged journal.
func applyStepLog(path string, data []byte, j *Journal) error {
	log, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	first := bytes.IndexByte(log, '\n')
	if first < 0 {
		return nil // the header itself was cut short: no line was ever complete
	}
	var h stepLogHeader
	if err := json.Unmarshal(log[:first], &h); err != nil {
		return fmt.Errorf("%w: step log header: %w", ErrCorruptJournal, err)
	}
	sum := sha256.Sum256(data)
	if h.Journal != hex.EncodeToString(sum[:]) {
		return nil // the log of an older journal: its lines are in this one already
	}
	return applyStepLines(j, log[first+1:])
}

// saveStep implements stepSaver: the line is kept beside the encoded journal.
func (m *MemStore) saveStep(ctx context.Context, j *Journal, rec *StepRecord) error {
	m.mu.Lock()
	lines := len(m.steplogs[j.RunID])
	m.mu.Unlock()
	if lines >= maxStepLines(j) {
		return m.Save(ctx, j)
	}
	line, err := encodeStepLine(j, rec)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.steplogs == nil {
		m.steplogs = map[string][][]byte{}
	}
	m.steplogs[j.RunID] = append(m.steplogs[j.RunID], line)
	return nil
}

// decodeWithSteps decodes a MemStore journal and applies its step lines. m.mu is held.
func (m *MemStore) decodeWithSteps(runID string, data []byte) (*Journal, error) {
	j, err := DecodeJournal(data)
	if err != nil {
		return nil, err
	}
	if err := applyStepLines(j, bytes.Join(m.steplogs[runID], nil)); err != nil {
		return nil, err
	}
	return j, nil
}
