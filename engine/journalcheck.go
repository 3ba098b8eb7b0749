package engine

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"planrun.dev/planrun/internal/safepath"
)

// A journal decides what resume skips and what rollback undoes, so one that was damaged or
// written by hand must be refused, never acted on: an unknown status would fall through to
// "run it again", a missing step would be rerun, a forged run id would send writes elsewhere.

// ErrCorruptJournal is matched (errors.Is) by the errors of journals that cannot be trusted.
var ErrCorruptJournal = errors.New("corrupt journal")

// ErrJournalVersion is matched by the error of a journal of another layout version (written by
// another planrun release).
var ErrJournalVersion = errors.New("unsupported journal version")

var (
	runStatuses  = []RunStatus{RunPending, RunRunning, RunSucceeded, RunFailed, RunInterrupted, RunRollingBack, RunRolledBack, RunRollbackFailed}
	stepStatuses = []StepStatus{StepPending, StepRunning, StepSucceeded, StepFailed, StepSkipped, StepRolledBack}
)

// check reports the first inconsistency of a decoded journal as an ErrCorruptJournal.
func (j *Journal) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrCorruptJournal, fmt.Sprintf(format, args...))
	}
	if err := safepath.Name("run id", j.RunID); err != nil {
		return bad("%v", err)
	}
	if !slices.Contains(runStatuses, j.Status) {
		return bad("unknown run status %q", j.Status)
	}
	seen := map[string]bool{}
	for i, r := range j.Steps {
		switch {
		case r == nil:
			return bad("step %d is null", i+1)
		case safepath.Name("step id", r.ID) != nil:
			return bad("step %d: %v", i+1, safepath.Name("step id", r.ID))
		case seen[r.ID]:
			return bad("step %q is recorded twice", r.ID)
		case !slices.Contains(stepStatuses, r.Status):
			return bad("step %q has unknown status %q", r.ID, r.Status)
		case r.RollbackOf != "" && !seen[r.RollbackOf]:
			return bad("rollback step %q undoes %q, which is not recorded before it", r.ID, r.RollbackOf)
		}
		seen[r.ID] = true
	}
	return nil
}

// checkMatches refuses a journal whose steps are not those of the plan it says it ran: when the
// plan's digest is the one recorded, its steps must be recorded exactly, in plan order. (A plan
// changed since is lined up by adopt, which keeps the completed steps.)
func (j *Journal) checkMatches(p *Plan) error {
	if j.Plan.Digest != p.Digest {
		return nil
	}
	var got []string
	for _, r := range j.Steps {
		if r.RollbackOf == "" {
			got = append(got, r.ID)
		}
	}
	want := make([]string, len(p.order))
	for i, s := range p.order {
		want[i] = s.ID
	}
	if slices.Equal(got, want) {
		return nil
	}
	return fmt.Errorf("%w: run %s records steps [%s], but its plan (digest %.12s) has [%s]; it will not be resumed or rolled back from this journal",
		ErrCorruptJournal, j.RunID, strings.Join(got, " "), p.Digest, strings.Join(want, " "))
}
