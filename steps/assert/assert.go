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
		Doc:  "Fail unless an expression holds; use it for preconditions and sanity checks.",
		New:  func() engine.Action { return new(Assert) },
	})
}

// Assert fails the step unless That evaluates to true.
type Assert struct {
	That    engine.Expr `yaml:"that" plan:"required" doc:"Expression that must be true, such as steps.count.outputs.items > 0."`
	Message string      `yaml:"message" doc:"Said when the expression is false; may use ${{ }}."`
}

// Describe implements engine.Describer.
func (a *Assert) Describe() string { return "assert " + a.That.Source }

// Run implements engine.Action. It runs in dry runs too: it changes nothing.
func (a *Assert) Run(_ context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	ok, err := rc.EvalBool(&a.That)
	if err != nil {
		return nil, err
	}
	if !ok {
		if a.Message != "" {
			return nil, fmt.Errorf("assertion failed: %s (%s)", a.Message, a.That.Source)
		}
		return nil, fmt.Errorf("assertion failed: %s", a.That.Source)
	}
	return engine.Outputs{}, nil
}
