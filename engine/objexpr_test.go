package engine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
)

// objVars are the variables of objFilter's where.
type objVars struct {
	Object map[string]any `expr:"object"`
	Index  int            `expr:"index"`
}

// objFilter keeps the objects for which where holds, as kube.patch does with its where.
type objFilter struct {
	Objects []map[string]any           `yaml:"objects"`
	Where   engine.ObjectExpr[objVars] `yaml:"where"`
}

func (f *objFilter) Run(_ context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	var kept []any
	for i, o := range f.Objects {
		ok, err := f.Where.EvalBool(rc, objVars{Object: o, Index: i})
		if err != nil {
			return nil, err
		}
		if ok {
			kept = append(kept, o["name"])
		}
	}
	return engine.Outputs{"kept": kept}, nil
}

func init() {
	engine.Register(engine.StepType{Name: "test.objfilter", Doc: "test step", New: func() engine.Action { return new(objFilter) }})
}

const objParams = `
params:
  want: {type: string, default: b}
  objs: {type: list, default: [{name: a}, {name: b, n: 2}]}
steps:
  - {id: first, type: test.op}
`

func TestObjectExprLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, where, want string
	}{
		{"unknown variable", `"objct.name == 'a'"`, `plan.yaml:10:50: step "s": with: invalid expression "objct.name == 'a'": unknown name objct`},
		{"not a boolean", `"index + 1"`, `plan.yaml:10:50: step "s": with: expression "index + 1" gives int, not true or false`},
		{"unknown param", `"object.name == params.nope"`, `plan.yaml:10:72: step "s": with: invalid expression "object.name == params.nope": unknown param "nope" (params: objs, want)`},
		{"unknown step", `"steps.nope.status == 'Succeeded'"`, `plan.yaml:10:50: step "s": with: unknown step "nope" in expression`},
		{"spliced template", `"object.name == ${{ params.want }}"`, `plan.yaml:10:65: step "s": with: ${{ inside an expression: params, steps and run are variables here`},
		{"not a string", `{a: b}`, `plan.yaml:10:49: step "s": with: expected an expression, got a mapping`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writePlan(t, t.TempDir(), objParams+"  - {id: s, type: test.objfilter, with: {where: "+tc.where+"}}\n")
			_, err := engine.Load(path, engine.LoadOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %q", err, tc.want)
			}
		})
	}
}

func TestObjectExprEval(t *testing.T) {
	for _, tc := range []struct {
		name, with string
		kept       string // outputs.kept, or
		err        string // the step's error
	}{
		{"params and object", `{objects: [{name: a}, {name: b}], where: "object.name == params.want"}`, "[b]", ""},
		{"step outputs and index", `{objects: [{name: a}, {name: b}], where: "index == 0 && steps.first.status == 'Succeeded'"}`, "[a]", ""},
		// Decoded again at run time (objects is a template): the compiled where is reused.
		{"templated config", `{objects: "${{ params.objs }}", where: "object.name != params.want"}`, "[a]", ""},
		{"nil is not false", `{objects: [{name: a}], where: "object.missing"}`, "",
			`plan.yaml:10:72: object.missing: expected true or false, got nil (is a name misspelled?)`},
		{"a string is not true", `{objects: [{name: a}], where: "object.name"}`, "",
			`plan.yaml:10:72: object.name: expected true or false, got string a`},
		{"run-time error", `{objects: [{name: a, n: x}], where: "object.n > 1"}`, "",
			`plan.yaml:10:78: object.n > 1: invalid operation: string > int`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			j, err := f.apply(objParams+"  - {id: s, type: test.objfilter, with: "+tc.with+"}\n", engine.ApplyOptions{})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v\nwant %q", err, tc.err)
				}
				var pe *engine.PosError
				if !errors.As(err, &pe) || pe.Pos.Line != 10 {
					t.Fatalf("%v: want a PosError at line 10", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprint(j.Step("s").Outputs["kept"]); got != tc.kept {
				t.Fatalf("kept %s, want %s", got, tc.kept)
			}
		})
	}
}
