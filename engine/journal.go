package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// StepStatus is where a step stands in a run.
type StepStatus string

// Step statuses. A step found Running when a run is resumed died mid-way and runs again.
const (
	StepPending    StepStatus = "Pending"
	StepRunning    StepStatus = "Running"
	StepSucceeded  StepStatus = "Succeeded"
	StepFailed     StepStatus = "Failed"
	StepSkipped    StepStatus = "Skipped"
	StepRolledBack StepStatus = "RolledBack"
)

// done reports whether the step's outcome is final for resume: it will not run again.
func (s StepStatus) done() bool {
	return s == StepSucceeded || s == StepSkipped || s == StepRolledBack
}

// RunStatus is where a run stands.
type RunStatus string

// Run statuses.
const (
	RunPending        RunStatus = "Pending" // submitted (Runner.Submit) for a runner elsewhere: resume runs it
	RunRunning        RunStatus = "Running"
	RunSucceeded      RunStatus = "Succeeded"
	RunFailed         RunStatus = "Failed"      // failed and not rolled back (--no-rollback): resume or rollback
	RunInterrupted    RunStatus = "Interrupted" // stopped by a signal: resume or rollback
	RunRollingBack    RunStatus = "RollingBack"
	RunRolledBack     RunStatus = "RolledBack"
	RunRollbackFailed RunStatus = "RollbackFailed" // some rollback failed: repair, then `planrun rollback`
)

// JournalVersion is the version of the journal's JSON layout.
const JournalVersion = 1

// Journal is the checkpoint of a run: everything resume, rollback and status need.
type Journal struct {
	Version int            `json:"version"`
	RunID   string         `json:"runID"`
	Plan    PlanRecord     `json:"plan"`
	Params  map[string]any `json:"params"`
	DryRun  bool           `json:"dryRun,omitempty"`
	// NoRollback: the run was started (or resumed) to stay as it is when a step fails, for
	// repair; a resume from anywhere (another terminal, the console) keeps to it.
	NoRollback bool          `json:"noRollback,omitempty"`
	Status     RunStatus     `json:"status"`
	Error      string        `json:"error,omitempty"`
	Started    time.Time     `json:"started"`
	Updated    time.Time     `json:"updated"`
	Finished   *time.Time    `json:"finished,omitempty"`
	Steps      []*StepRecord `json:"steps"`
	// Actions says who applied, resumed, rolled back or cancelled the run, and when.
	Actions []OperatorAction `json:"actions,omitempty"`
}

// PlanRecord identifies the plan a run was started from.
type PlanRecord struct {
	Name    string `json:"name"`
	Version int    `json:"version,omitempty"`
	File    string `json:"file"`
	Digest  string `json:"digest"`
}

// StepRecord is the checkpoint of one step.
type StepRecord struct {
	ID         string     `json:"id"`
	Type       string     `json:"type"`
	Phase      string     `json:"phase,omitempty"`
	Hook       string     `json:"hook,omitempty"`
	RollbackOf string     `json:"rollbackOf,omitempty"`
	Digest     string     `json:"digest"`
	Status     StepStatus `json:"status"`
	// When is the recorded result of the step's condition; resume reuses it.
	When     *bool      `json:"when,omitempty"`
	Attempts int        `json:"attempts,omitempty"`
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
	Outputs  Outputs    `json:"outputs,omitempty"`
	// State is a long step's own progress marker (RunContext.SaveState), so that a step that
	// died mid-way can continue instead of starting over.
	State json.RawMessage `json:"state,omitempty"`
	Error string          `json:"error,omitempty"`
	// RollbackError says why undoing this step failed; the step stays Succeeded until a later
	// `planrun rollback` manages it.
	RollbackError string `json:"rollbackError,omitempty"`
}

// Step returns the record of a step, or nil.
func (j *Journal) Step(id string) *StepRecord {
	for _, r := range j.Steps {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// Encode writes the journal as compact JSON: it is rewritten whole every so often (see
// steplog.go), and indenting doubles the encoding time of a large plan's journal. `planrun status -o json` pretty-prints it.
func (j *Journal) Encode() ([]byte, error) {
	return json.Marshal(j)
}

// DecodeJournal parses a journal, keeping integers integers (JSON numbers would otherwise
// come back as float64 and change how outputs look to expressions after a resume).
func DecodeJournal(data []byte) (*Journal, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var j Journal
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorruptJournal, err)
	}
	if j.Version != JournalVersion {
		return nil, fmt.Errorf("%w %d (this planrun reads version %d)", ErrJournalVersion, j.Version, JournalVersion)
	}
	if err := j.check(); err != nil {
		return nil, err
	}
	j.Params = fixNumbers(j.Params).(map[string]any)
	for _, r := range j.Steps {
		if r.Outputs != nil {
			r.Outputs = fixNumbers(map[string]any(r.Outputs)).(map[string]any)
		}
	}
	return &j, nil
}

// normalizeOutputs gives fresh outputs the shape they will have after a checkpoint round trip,
// so that a resumed run sees exactly what an uninterrupted one saw.
func normalizeOutputs(o Outputs) (Outputs, error) {
	if o == nil {
		return nil, nil
	}
	b, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("outputs cannot be recorded: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return fixNumbers(m).(map[string]any), nil
}

// fixNumbers replaces json.Number by int64-sized int when integral, float64 otherwise.
func fixNumbers(v any) any {
	switch v := v.(type) {
	case nil:
		return map[string]any{}
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return int(i)
		}
		f, _ := v.Float64()
		return f
	case map[string]any:
		for k, x := range v {
			if x == nil {
				continue
			}
			v[k] = fixNumbers(x)
		}
		return v
	case []any:
		for i, x := range v {
			if x == nil {
				continue
			}
			v[i] = fixNumbers(x)
		}
		return v
	}
	return v
}
