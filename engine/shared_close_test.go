package engine_test

import (
	"context"
	"testing"

	"planrun.dev/planrun/engine"
)

// sharedCloser is a step that makes a shared value that must be closed when the run ends.
type sharedCloser struct{}

type runResource struct{ closed *bool }

func (r *runResource) Close() error { *r.closed = true; return nil }

var resourceClosed bool

func (*sharedCloser) Run(_ context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	_, err := rc.Shared("test.resource", func() (any, error) { return &runResource{closed: &resourceClosed}, nil })
	return engine.Outputs{"closedYet": resourceClosed}, err
}

func init() {
	engine.Register(engine.StepType{Name: "test.sharedcloser", Doc: "test step", New: func() engine.Action { return new(sharedCloser) }})
}

// A shared value that holds a resource is closed when the run ends, not before.
func TestSharedValueClosedAtTheEnd(t *testing.T) {
	f := newFixture(t)
	resourceClosed = false
	j, err := f.apply("steps:\n  - {id: a, type: test.sharedcloser}\n  - {id: b, type: test.sharedcloser}\n", engine.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if j.Step("b").Outputs["closedYet"] != false {
		t.Error("closed while the run was going on")
	}
	if !resourceClosed {
		t.Error("not closed when the run ended")
	}
}
