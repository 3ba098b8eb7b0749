package engine

import "time"

// EventType names what happened in a run.
type EventType string

// Event types, in the order a run emits them.
const (
	EventRunStarted       EventType = "run.started"
	EventStepStarted      EventType = "step.started"
	EventStepProgress     EventType = "step.progress"
	EventStepRetrying     EventType = "step.retrying"
	EventStepWarning      EventType = "step.warning" // something the operator should know; the step goes on
	EventStepSucceeded    EventType = "step.succeeded"
	EventStepFailed       EventType = "step.failed"
	EventStepSkipped      EventType = "step.skipped"
	EventStepReused       EventType = "step.reused" // done in an earlier attempt of the run; not run again
	EventRollbackStarted  EventType = "rollback.started"
	EventRunStopRequested EventType = "run.stopRequested" // an operator asked the run to stop (planrun cancel, the console)
	EventRunFinished      EventType = "run.finished"
)

// Event is one thing that happened in a run. The CLI renders events as lines, a live bar or JSON;
// steps never print.
type Event struct {
	Time     time.Time  `json:"time"`
	Type     EventType  `json:"type"`
	RunID    string     `json:"runID"`
	StepID   string     `json:"stepID,omitempty"`
	StepType string     `json:"stepType,omitempty"`
	Hook     string     `json:"hook,omitempty"`
	Rollback bool       `json:"rollback,omitempty"`
	Attempt  int        `json:"attempt,omitempty"`
	Status   string     `json:"status,omitempty"`
	Message  string     `json:"message,omitempty"`
	Error    string     `json:"error,omitempty"`
	Progress *Progress  `json:"progress,omitempty"`
	Elapsed  Duration   `json:"elapsed,omitempty"`
	Outputs  Outputs    `json:"outputs,omitempty"`
	Retry    *RetryInfo `json:"retry,omitempty"`
}

// RetryInfo says when a failed attempt will be retried.
type RetryInfo struct {
	After       Duration `json:"after"`
	MaxAttempts int      `json:"maxAttempts"`
}

// Progress is how far a long step is: items done of total (0 when unknown) and bytes moved, of
// TotalBytes when the step knows how many it will move (then rate and ETA are in bytes: a
// volume's files differ in size by orders of magnitude, so counting them says little).
type Progress struct {
	Done       int64  `json:"done"`
	Total      int64  `json:"total,omitempty"`
	Bytes      int64  `json:"bytes,omitempty"`
	TotalBytes int64  `json:"totalBytes,omitempty"`
	Unit       string `json:"unit,omitempty"` // what is counted: "objects", "keys", "files"
}

// Observer receives a run's events, in order, from one goroutine at a time.
type Observer interface {
	Observe(Event)
}

// ObserverFunc adapts a function to Observer.
type ObserverFunc func(Event)

// Observe implements Observer.
func (f ObserverFunc) Observe(e Event) { f(e) }
