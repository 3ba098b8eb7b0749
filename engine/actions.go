package engine

import (
	"fmt"
	"os"
	"os/user"
	"time"
)

// Operator actions recorded in a run's journal: who started, resumed, rolled back or cancelled
// it, and when. Runs last hours and change hands between shifts; the journal says who did what.
const (
	ActionApply    = "apply"
	ActionResume   = "resume"
	ActionRollback = "rollback"
	ActionCancel   = "cancel"
)

// OperatorAction is one thing an operator did to a run.
type OperatorAction struct {
	Action string    `json:"action"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	// Target is the runner a stop request was made for (its lock holder): a runner that took
	// the run over later does not act on a request meant for the one before it.
	Target string `json:"target,omitempty"`
}

// maxActions bounds the journal's record: a run resumed in a loop by a script must not grow its
// checkpoint without end. The first action (who started it) is always kept.
const maxActions = 100

// recordAction appends an action to the journal; the caller saves it.
func (j *Journal) recordAction(action, by string) {
	a := OperatorAction{Action: action, By: by, At: time.Now().UTC()}
	if len(j.Actions) >= maxActions {
		j.Actions = append(j.Actions[:1], j.Actions[len(j.Actions)-maxActions+2:]...)
	}
	j.Actions = append(j.Actions, a)
}

// CurrentActor names whoever runs this process, for the journal: $PLANRUN_ACTOR (set by
// automation, and by the console for the runner it starts on an operator's behalf), else
// "alice@host".
func CurrentActor() string {
	if v := os.Getenv("PLANRUN_ACTOR"); v != "" {
		return cut(v, 200)
	}
	name := "unknown"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	} else if v := os.Getenv("USER"); v != "" {
		name = v
	}
	host, _ := os.Hostname()
	if host == "" {
		return name
	}
	return fmt.Sprintf("%s@%s", name, host)
}

// recordAction records an action of this execution's runner; a stop request may be recorded
// from another goroutine meanwhile.
func (x *execution) recordAction(action string) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.j.recordAction(action, x.r.actor())
}
