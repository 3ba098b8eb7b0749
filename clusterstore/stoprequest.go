package clusterstore

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"planrun.dev/planrun/engine"
)

// A stop request (planrun cancel, the console) is an annotation on the run's PlanRun: any process
// with patch access asks, and the runner, wherever it runs, reads it. The runner's checkpoints
// keep it: a write that conflicts with the patch is made again over the object as it now is.
const stopAnnotation = "planrun.dev/stop-requested"

// stopCheckEvery bounds how often a runner reads its PlanRun for a request: the engine asks
// twice a second, and a fleet runs many runs against one API server.
const stopCheckEvery = 2 * time.Second

var _ engine.StopRequester = (*Store)(nil)

// stopChecks remembers, per run, when the PlanRun was last read for a request, and what it said.
type stopChecks struct {
	mu   sync.Mutex
	last map[string]stopCheck
}

type stopCheck struct {
	at  time.Time
	req *engine.OperatorAction
}

// RequestStop implements engine.StopRequester.
func (s *Store) RequestStop(ctx context.Context, runID string, action engine.OperatorAction) error {
	req, err := json.Marshal(action)
	if err != nil {
		return err
	}
	return s.patchStop(ctx, runID, string(req))
}

// ClearStopRequest implements engine.StopRequester.
func (s *Store) ClearStopRequest(ctx context.Context, runID string) error {
	obj, err := s.get(ctx, runID)
	if err != nil {
		return err
	}
	if _, ok := obj.GetAnnotations()[stopAnnotation]; !ok {
		return nil // nothing to clear: no write, no conflict for the runner's next checkpoint
	}
	s.stops.mu.Lock()
	delete(s.stops.last, runID)
	s.stops.mu.Unlock()
	return s.patchStop(ctx, runID, nil)
}

// patchStop sets (a JSON string) or removes (nil) the request.
func (s *Store) patchStop(ctx context.Context, runID string, value any) error {
	if err := checkRunID(runID); err != nil {
		return fmt.Errorf("%w: %s (%v)", engine.ErrRunNotFound, runID, err)
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{stopAnnotation: value}}})
	if err != nil {
		return err
	}
	_, err = s.runs().Patch(ctx, runID, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: fieldManager})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: %s (no PlanRun %s in %s)", engine.ErrRunNotFound, runID, runID, s.where)
	}
	if err != nil {
		return s.apiErr("asking run "+runID+" to stop", err)
	}
	return nil
}

// StopRequest implements engine.StopRequester. It reads the PlanRun at most every
// stopCheckEvery; in between it says what it read last.
func (s *Store) StopRequest(ctx context.Context, runID string) (*engine.OperatorAction, error) {
	s.stops.mu.Lock()
	if s.stops.last == nil {
		s.stops.last = map[string]stopCheck{}
	}
	if c, ok := s.stops.last[runID]; ok && time.Since(c.at) < stopCheckEvery {
		s.stops.mu.Unlock()
		return c.req, nil
	}
	s.stops.mu.Unlock()
	obj, err := s.get(ctx, runID)
	if err != nil {
		return nil, err
	}
	var req *engine.OperatorAction
	if raw, ok := obj.GetAnnotations()[stopAnnotation]; ok {
		req = &engine.OperatorAction{}
		if len(raw) > 4096 || json.Unmarshal([]byte(raw), req) != nil || req.By == "" {
			req = &engine.OperatorAction{Action: engine.ActionCancel, By: "someone (an unreadable request)", At: time.Now().UTC()}
		}
	}
	s.stops.mu.Lock()
	s.stops.last[runID] = stopCheck{at: time.Now(), req: req}
	s.stops.mu.Unlock()
	return req, nil
}
