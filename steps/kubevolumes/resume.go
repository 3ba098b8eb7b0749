package kubevolumes

import (
	"context"
	"sync"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/mover"
)

// A step run again after planrun died (SIGKILL, a lost node, Ctrl-C) continues from what it
// recorded with rc.SaveState, per claim: a claim whose restore finished is skipped; a claim
// whose backup finished goes on with its snapshot; otherwise the mover pod of the same name is
// found again (followed if running, its result taken if it succeeded) or made again, and the
// mover resumes from kopia's own checkpoint in the repository.

// maxRecreate bounds how often a claim's mover pod is made again after it disappeared
// (deleted, evicted, killed) before the step gives up with the reason.
const maxRecreate = 3

// stepState is what the step records.
type stepState struct {
	// Identity tells a state recorded for another copy (the plan was changed before resume:
	// another repository, source cluster, or a stage turned final): it is then ignored.
	Identity string                 `json:"identity"`
	Claims   map[string]*claimState `json:"claims"`
}

// claimState is how far one claim got.
type claimState struct {
	// Target is where the claim goes ("cluster/namespace/claim"): a state recorded for
	// another target (the mapping was changed before resume) is ignored.
	Target string `json:"target,omitempty"`
	// Backup is the backup's result once it finished: its Snapshot is what the restore reads.
	Backup *mover.BackupResult `json:"backup,omitempty"`
	// Restore is the restore's result: the claim is copied.
	Restore *mover.RestoreResult `json:"restore,omitempty"`
	// Verify is the result of kube.verifyVolumes' verify: the claim is checked.
	Verify *mover.VerifyResult `json:"verify,omitempty"`
	// Recreated counts the mover pods made again after one disappeared, against maxRecreate.
	Recreated int `json:"recreated,omitempty"`
	// CreatedClaim: the step created the target claim.
	CreatedClaim bool `json:"createdClaim,omitempty"`
}

// stateStore is the step's state, saved whole after every change (a few per claim).
type stateStore struct {
	rc     *engine.RunContext
	dryRun bool
	mu     sync.Mutex // held while saving, so that saves do not overtake each other
	st     stepState
}

// loadState reads what an earlier attempt recorded, unless it was for another copy: identity
// says which (repository, source cluster, stage or final).
func loadState(rc *engine.RunContext, identity string) (*stateStore, error) {
	s := &stateStore{rc: rc, dryRun: rc.DryRun}
	ok, err := rc.LoadState(&s.st)
	if err != nil {
		return nil, err
	}
	if !ok || s.st.Identity != identity {
		s.st = stepState{Identity: identity}
	}
	if s.st.Claims == nil {
		s.st.Claims = map[string]*claimState{}
	}
	return s, nil
}

// get returns a copy of a claim's state.
func (s *stateStore) get(key string) claimState {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.st.Claims[key]; c != nil {
		return *c
	}
	return claimState{}
}

// target forgets what was recorded for a claim going elsewhere, and records where it goes.
func (s *stateStore) target(ctx context.Context, key, target string) error {
	s.mu.Lock()
	c := s.st.Claims[key]
	s.mu.Unlock()
	if c != nil && c.Target == target {
		return nil
	}
	return s.update(ctx, key, func(c *claimState) { *c = claimState{Target: target} })
}

// update changes a claim's state and saves the step's.
func (s *stateStore) update(ctx context.Context, key string, change func(*claimState)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.st.Claims[key]
	if c == nil {
		c = &claimState{}
		s.st.Claims[key] = c
	}
	change(c)
	if s.dryRun {
		return nil
	}
	return s.rc.SaveState(context.WithoutCancel(ctx), s.st)
}
