package clusterstore

import (
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
)

// TestStopRequestThroughThePlanRun: `planrun cancel` from another machine (another store)
// stops a run kept in the cluster at a safe point; the request does not break the runner's
// checkpoints, is recorded in the journal, and is gone once acted on.
func TestStopRequestThroughThePlanRun(t *testing.T) {
	s, url := open(t, 6*time.Second)
	other := openURL(t, url)
	p := loadPlan(t, "  - {id: a, type: clusterstoretest.step}\n  - {id: b, type: clusterstoretest.step, with: {wait: 2m}}\n  - {id: c, type: clusterstoretest.step}\n")
	asked := make(chan error, 1)
	r := &engine.Runner{Store: s, Actor: "alice", Observer: engine.ObserverFunc(func(e engine.Event) {
		if e.Type == engine.EventStepStarted && e.StepID == "b" {
			go func() { asked <- engine.CancelRun(t.Context(), other, "stop-1", "bob") }()
		}
	})}
	start := time.Now()
	j, err := r.Apply(t.Context(), p, engine.ApplyOptions{RunID: "stop-1"})
	if !errors.Is(err, engine.ErrInterrupted) {
		t.Fatalf("apply: %v; want interrupted", err)
	}
	if err := <-asked; err != nil {
		t.Fatalf("cancel: %v", err)
	}
	if took := time.Since(start); took > time.Minute {
		t.Fatalf("the run took %s to stop", took)
	}
	if j.Status != engine.RunInterrupted || j.Step("b").Status != engine.StepRunning {
		t.Fatalf("status %s, b %s", j.Status, j.Step("b").Status)
	}
	stored, err := other.Load(t.Context(), "stop-1")
	if err != nil || len(stored.Actions) != 2 || stored.Actions[1].Action != "cancel" || stored.Actions[1].By != "bob" {
		t.Fatalf("journal actions %+v, %v", stored.Actions, err)
	}
	obj, err := other.runs().Get(t.Context(), "stop-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := obj.GetAnnotations()[stopAnnotation]; ok {
		t.Errorf("the request outlived the run it stopped")
	}
	if err := engine.CancelRun(t.Context(), other, "stop-1", "bob"); !errors.Is(err, engine.ErrNotRunning) {
		t.Errorf("cancel of a stopped run: %v", err)
	}
	if err := other.RequestStop(t.Context(), "nope", engine.OperatorAction{By: "bob"}); !errors.Is(err, engine.ErrRunNotFound) {
		t.Errorf("a request for an unknown run: %v", err)
	}
}
