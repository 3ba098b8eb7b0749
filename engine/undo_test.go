package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"planrun.dev/planrun/engine"
)

// undoable is a test step that undoes itself from its outputs.
type undoable struct {
	Value string `yaml:"value"`
}

var undone []string

func (u *undoable) Run(_ context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	return engine.Outputs{"did": u.Value}, nil
}

func (u *undoable) Undo(_ context.Context, rc *engine.RunContext, out engine.Outputs) error {
	undone = append(undone, fmt.Sprint(rc.StepID, "=", out["did"]))
	return nil
}

func init() {
	engine.Register(engine.StepType{Name: "test.undoable", Doc: "test step", New: func() engine.Action { return new(undoable) }})
}

func TestBuiltinUndo(t *testing.T) {
	f := newFixture(t)
	undone = nil
	j, err := f.apply(`
steps:
  - {id: a, type: test.undoable, with: {value: one}}
  - {id: b, type: test.undoable, with: {value: two}, rollback: []}
  - {id: c, type: test.undoable, with: {value: three}, rollback: [{id: custom, type: test.op}]}
  - {id: d, type: test.undoable, with: {value: four}}
  - {id: boom, type: test.op, with: {always: true}}
`, engine.ApplyOptions{})
	var re *engine.RunError
	if !errors.As(err, &re) || re.Status != engine.RunRolledBack {
		t.Fatalf("want rolled back, got %v", err)
	}
	if !equal(undone, []string{"d:undo=four", "a:undo=one"}) {
		t.Fatalf("undone %v", undone)
	}
	if !equal(ran(), []string{"boom", "custom"}) {
		t.Fatalf("ran %v", ran())
	}
	st := statuses(j)
	if st["a"] != engine.StepRolledBack || st["b"] != engine.StepSucceeded || st["a:undo"] != engine.StepSucceeded {
		t.Fatalf("statuses %v", st)
	}
}
