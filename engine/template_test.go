package engine_test

import (
	"context"
	"reflect"
	"testing"

	"planrun.dev/planrun/engine"
)

// typed is a test step type with fields of every shape a template may fill.
type typed struct {
	List  []string          `yaml:"list"`
	Map   map[string]string `yaml:"map"`
	Int   int               `yaml:"int"`
	Bool  bool              `yaml:"bool"`
	Str   string            `yaml:"str"`
	Check engine.Expr       `yaml:"check"`
	Free  any               `yaml:"free"`
}

var lastTyped *typed

func (t *typed) Run(_ context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	lastTyped = t
	ok := true
	if t.Check.Compiled() {
		var err error
		if ok, err = rc.EvalBool(&t.Check); err != nil {
			return nil, err
		}
	}
	return engine.Outputs{"list": t.List, "ok": ok}, nil
}

func init() {
	engine.Register(engine.StepType{Name: "test.typed", Doc: "test step", New: func() engine.Action { return new(typed) }})
}

// typedPlan fills every shape of field from templates.
const typedPlan = `
params:
  names: {type: list, default: [a, b]}
  labels: {type: map, default: {app: web}}
  n: {type: int, default: 7}
  on: {type: bool, default: true}
steps:
  - id: first
    type: test.typed
    with:
      list: ${{ params.names }}
      map: ${{ params.labels }}
      int: ${{ params.n * 2 }}
      bool: ${{ params.on }}
      str: "n=${{ params.n }} names=${{ params.names }} on=${{ params.on }}"
      free: {spec: {replicas: "${{ params.n }}", names: "${{ params.names }}", note: "x${{ params.n }}"}, items: [1, "${{ params.on }}"], plain: {a: b}}
`

func TestWholeTemplateKeepsItsType(t *testing.T) {
	f := newFixture(t)
	_, err := f.apply(typedPlan+`
  - id: second
    type: test.typed
    with:
      list: ${{ steps.first.outputs.list }}
      check: steps.first.outputs.ok && len(steps.first.outputs.list) == 2
`, engine.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := &typed{List: []string{"a", "b"}}
	if !reflect.DeepEqual(lastTyped.List, want.List) || !lastTyped.Check.Compiled() {
		t.Fatalf("second step got %+v", lastTyped)
	}
	j, _ := f.store.Load(context.Background(), "run-1")
	if j.Step("second").Outputs["ok"] != true {
		t.Fatalf("check expression was false: %v", j.Step("second").Outputs)
	}
}

func TestTemplateValuesReachTheStep(t *testing.T) {
	f := newFixture(t)
	_, err := f.apply(typedPlan, engine.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := &typed{List: []string{"a", "b"}, Map: map[string]string{"app": "web"}, Int: 14, Bool: true, Str: `n=7 names=["a","b"] on=true`,
		Free: map[string]any{
			"spec":  map[string]any{"replicas": 7, "names": []any{"a", "b"}, "note": "x7"},
			"items": []any{1, true},
			"plain": map[string]any{"a": "b"},
		}}
	got := *lastTyped
	got.Check = engine.Expr{}
	if !reflect.DeepEqual(&got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, *want)
	}
}

// TestTemplateUnderAlias: a ${{ }} reached through an alias is filled like any other (it was
// passed on as its literal text: rendering did not follow aliases).
func TestTemplateUnderAlias(t *testing.T) {
	f := newFixture(t)
	_, err := f.apply(`
params:
  n: {type: int, default: 7}
steps:
  - id: first
    type: test.typed
    with:
      str: &s "n=${{ params.n }}"
      free: {spec: &spec {replicas: "${{ params.n }}"}, again: *spec, str: *s}
`, engine.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"spec": map[string]any{"replicas": 7}, "again": map[string]any{"replicas": 7}, "str": "n=7"}
	if lastTyped.Str != "n=7" || !reflect.DeepEqual(lastTyped.Free, want) {
		t.Fatalf("got str %q free %#v\nwant free %#v", lastTyped.Str, lastTyped.Free, want)
	}
}
