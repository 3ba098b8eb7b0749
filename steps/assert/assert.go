// Package assert implements the assert step: an expression that must hold.
package assert

import (
	"context"
	"fmt"

	"planrun.dev/planrun/engine"
)

func init() {
	engine.Register(engine.StepType{
		Name: "assert",
		Doc:  "Fail unless an expression holds (or, with warn: true, log a warning); use it for preconditions and sanity checks.",
		New:  func() engine.Action { return new(Assert) },
	})
}

// Assert fails the step unless That evaluates to true. With Warn, a false expression is logged
// as a warning and kept in outputs.warning instead, and the step succeeds.
type Assert struct {
	That    engine.Expr `yaml:"that" plan:"required" doc:"Expression that must be true, such as steps.count.outputs.items > 0."`
	Message string      `yaml:"message" doc:"Said when the expression is false; may use ${{ }}."`
	Warn    bool        `yaml:"warn" doc:"A false expression does not fail the step: the message is logged as a warning and kept in outputs.warning (outputs.ok is false), and the run goes on."`
}

var (
	_ engine.Action    = (*Assert)(nil)
	_ engine.Describer = (*Assert)(nil)
)

// Describe implements engine.Describer.
func (a *Assert) Describe() string {
	if a.Warn {
		return "check " + a.That.Source + " (warning only)"
	}
	return "assert " + a.That.Source
}

// Run implements engine.Action. It runs in dry runs too: it changes nothing.
func (a *Assert) Run(_ context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	ok, err := rc.EvalBool(&a.That)
	if err != nil {
		return nil, err
	}
	if ok {
		if a.Warn {
			return engine.Outputs{"ok": true}, nil
		}
		return engine.Outputs{}, nil
	}
	msg := a.That.Source
	if a.Message != "" {
		msg = fmt.Sprintf("%s (%s)", a.Message, a.That.Source)
	}
	if a.Warn {
		rc.Warn(msg)
		return engine.Outputs{"ok": false, "warning": msg}, nil
	}
	return nil, fmt.Errorf("assertion failed: %s", msg)
}
