package engine

import (
	"context"
	"fmt"
	"sort"
	"sync"
)

// Action is what a step type does. The value is the step's own config: the loader decodes the
// step's `with:` into a fresh value from StepType.New, strictly, so a step type declares its
// config simply as the fields of its struct (with `yaml` tags). Like a GoReleaser pipe, one
// method is all the engine needs.
type Action interface {
	Run(ctx context.Context, rc *RunContext) (Outputs, error)
}

// Outputs are what a step hands to later steps' expressions: steps["id"].outputs.name.
// They must survive a JSON round trip (they are kept in the checkpoint).
type Outputs map[string]any

// The contract of a step's config, in the order the engine calls it. A config is decoded from
// `with:` into a fresh value of StepType.New; then Provision (if implemented) derives what Run
// needs from the fields, then Validate (if implemented) checks the result. Both run once per
// decoded value: at load time for a step without ${{ }}, at run time after the values are filled
// in otherwise (and again for its undo). Run, Undo and Describe are only ever called on a value
// that passed both, so they never provision or validate again defensively.

// Provisioner is implemented by actions that derive state from their config: parse a selector,
// compile a pattern, resolve a location. Provision may change the action (unexported fields);
// a returned error names the field, like Validate's.
type Provisioner interface {
	Provision() error
}

// Validator is implemented by actions that check their config beyond types, after Provision.
// Validate is read-only: it changes nothing, so calling it twice is harmless and it may be
// called on its own. A returned error names the field: "command: must not be empty".
type Validator interface {
	Validate() error
}

// Undoer is implemented by actions that know how to undo themselves from their own outputs:
// apply deletes what it created, scale puts the replicas back, patch restores prior values.
// When such a step completed and the run rolls back, Undo runs unless the step has a rollback
// block of its own (an explicit `rollback: []` turns undoing off). Undo must be idempotent.
type Undoer interface {
	Undo(ctx context.Context, rc *RunContext, outputs Outputs) error
}

// Describer is implemented by actions that can say in one line what they will do; dry runs and
// progress lines use it.
type Describer interface {
	Describe() string
}

// StepType registers an action under the name plans use in `type:`.
type StepType struct {
	Name string
	// Doc is one line for `planrun schema` and error messages.
	Doc string
	// New returns a zero config, ready to be decoded into.
	New func() Action
}

var registry = struct {
	sync.RWMutex
	types map[string]StepType
}{types: map[string]StepType{}}

// Register makes a step type available to plans. It is called from the init function of the
// package that implements it; registering a name twice is a programming error and panics.
func Register(t StepType) {
	registry.Lock()
	defer registry.Unlock()
	if t.Name == "" || t.New == nil {
		panic("engine.Register: a step type needs a name and a constructor")
	}
	if _, dup := registry.types[t.Name]; dup {
		panic(fmt.Sprintf("engine.Register: step type %q registered twice", t.Name))
	}
	registry.types[t.Name] = t
}

// LookupStepType returns the step type registered under name.
func LookupStepType(name string) (StepType, bool) {
	registry.RLock()
	defer registry.RUnlock()
	t, ok := registry.types[name]
	return t, ok
}

// StepTypes lists the registered step types, sorted by name.
func StepTypes() []StepType {
	registry.RLock()
	defer registry.RUnlock()
	out := make([]StepType, 0, len(registry.types))
	for _, t := range registry.types {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func stepTypeNames() []string {
	types := StepTypes()
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = t.Name
	}
	return names
}
