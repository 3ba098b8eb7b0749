// Package set implements the set step: values computed once from params and earlier steps,
// named, for the steps after it. A plan that derives the same thing in several places (where a
// seed's backups are, which Secret holds their credentials) computes it here and reads
// steps.<id>.outputs.<name> instead of repeating the expression.
package set

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"planrun.dev/planrun/engine"
)

func init() {
	engine.Register(engine.StepType{
		Name: "set",
		Doc:  "Name values computed from params and earlier steps (${{ }}) for the steps after it: they become this step's outputs.",
		New:  func() engine.Action { return new(Set) },
	})
}

// Set records its values as outputs. It changes nothing, so it runs in dry runs too.
type Set struct {
	Values map[string]any `yaml:"values" plan:"required" doc:"Name → value (any YAML value; ${{ }} expressions are evaluated when the step runs). Read them as steps.<id>.outputs.<name>."`
}

var (
	_ engine.Action    = (*Set)(nil)
	_ engine.Validator = (*Set)(nil)
	_ engine.Describer = (*Set)(nil)
)

// Validate implements engine.Validator.
func (s *Set) Validate() error {
	if len(s.Values) == 0 {
		return errors.New("values: name at least one value")
	}
	for name := range s.Values {
		if name == "" || strings.ContainsAny(name, ".[] ") {
			return fmt.Errorf("values: %q is not a name that steps.<id>.outputs.<name> can read (no dots, brackets or spaces)", name)
		}
	}
	return nil
}

// Describe implements engine.Describer.
func (s *Set) Describe() string {
	names := make([]string, 0, len(s.Values))
	for n := range s.Values {
		names = append(names, n)
	}
	sort.Strings(names)
	return "set " + strings.Join(names, ", ")
}

// Run implements engine.Action.
func (s *Set) Run(context.Context, *engine.RunContext) (engine.Outputs, error) {
	out := make(engine.Outputs, len(s.Values))
	for k, v := range s.Values {
		out[k] = v
	}
	return out, nil
}
