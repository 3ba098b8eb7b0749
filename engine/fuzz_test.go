package engine_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"planrun.dev/planrun/engine"
)

// fuzzSeeds are valid and invalid plans; the fuzzer mutates them.
var fuzzSeeds = []string{
	ltHeader + ltValidPlan,
	ltHeader + ltParamsPlan,
	ltHeader + ltDigestBase,
	ltHeader + "steps:\n  - {id: a, type: exec, with: {command: [echo, hi]}}\n",
	ltHeader + "steps:\n  - id: a: b\n",
	ltHeader + "notes: x\nsteps: []\n",
	ltHeader + "steps:\n  - {id: a, type: nope, phase: Foo, onError: maybe, retry: {attempts: -1, on: x}}\n",
	ltHeader + "steps:\n  - {id: a, type: exec, when: 'steps.a.status == (1', with: {command: [\"${{ params.x\"]}}\n",
	ltHeader + "params:\n  n: {type: int, default: 2}\nsteps:\n  - {id: a, type: test.ints, with: {n: \"${{ params.n * 2 }}\", name: \"x ${{ params.n }} y\"}}\n",
	ltHeader + "hooks:\n  PreRestore:\n    - {id: h, type: exec, with: {command: [x]}}\nsteps:\n  - {id: a, type: exec, phase: Backup, with: {command: [x]}}\n  - {id: b, type: exec}\n  - {id: c, type: exec, phase: Backup, with: {command: [x]}}\n",
	ltHeader + "steps:\n  - id: a\n    type: assert\n    with: {that: steps.b.outputs.n > 1, message: \"${{ steps.b.outputs.n }}\"}\n  - id: b\n    type: exec\n    with: {command: [x]}\n    rollback: [{id: c, type: exec, with: {command: [y]}, rollback: [{id: d}]}]\n",
	// Crashers (panics, and an exponential blow-up through nested aliases): aliases and empty
	// list items where steps are expected.
	ltHeader + "steps:\n  - {id: a, type: exec, with: {command: [x]}, rollback: [~]}\n",
	ltHeader + "steps: [~]\n",
	ltHeader + "hooks: {PreBackup: [~]}\nsteps:\n  - {id: a, type: exec, phase: Backup, with: {command: [x]}}\n",
	ltHeader + "steps:\n  - &s {id: a, type: nope, phase: Foo}\n  - *s\n",
	ltHeader + "x: &p {n: {type: int}}\nparams: *p\nsteps: *p\n",
	ltHeader + "hooks: &h {PostBackup: [{id: h, type: exec, with: {command: [x]}}]}\nsteps:\n  - &a {id: a, type: exec, phase: Backup, with: {command: [x]}, retry: &r {attempts: -1}, onError: x}\n  - {id: b, type: exec, retry: *r, onError: *h, with: *a}\n",
	ltHeader + "steps:\n  - id: a\n    type: exec\n    when: |\n      steps.x ==\n        (1\n    with: {command: [x]}\n",
	ltHeader + "x0: &l0 {id: a, type: exec}\nx1: &l1 {id: a, rollback: [*l0, *l0, *l0, *l0]}\nx2: &l2 {id: a, rollback: [*l1, *l1, *l1, *l1]}\nsteps: [*l2, *l2]\n",
	"",
	"---\n",
	"# only a comment\n",
	"[]\n",
	"apiVersion: 1\nkind: [Plan]\nmetadata: x\nsteps: {a: b}\n",
	"{{{{",
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(ltHeader + ltAliasBomb()))
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz.yaml"
		p, err := engine.Parse(name, data, engine.LoadOptions{})
		if err != nil {
			if p != nil {
				t.Errorf("Parse returned a plan and an error")
			}
			var list engine.ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, not an ErrorList: %v", err, err)
			}
			if len(list) == 0 {
				t.Fatalf("empty ErrorList")
			}
			for _, e := range list {
				if e == nil {
					t.Fatalf("nil entry in ErrorList")
				}
				if e.Pos.File != name || e.Pos.Line < 0 || e.Pos.Col < 0 {
					t.Errorf("bad position %+v in %q", e.Pos, e.Error())
				}
			}
			_ = err.Error()
			return
		}
		if len(p.Order()) == 0 {
			t.Fatalf("plan loaded without steps")
		}
		for _, s := range p.Order() {
			if s == nil {
				t.Fatalf("nil step in Order()")
			}
			if s.Digest == "" {
				t.Errorf("step %q has no digest", s.ID)
			}
			if p.Step(s.ID) != s {
				t.Errorf("Step(%q) is not the step of Order()", s.ID)
			}
			for _, r := range s.Rollback {
				if r == nil || r.Digest == "" || r.Parent != s {
					t.Errorf("bad rollback step of %q: %+v", s.ID, r)
				}
			}
		}
	})
}

// valuesFuzzPlan declares a param of every type, so that a values file can set any of them.
const valuesFuzzPlan = ltHeader + `params:
  s: {type: string}
  n: {type: int}
  b: {type: bool}
  l: {type: list}
  m: {type: map}
steps: [{id: a, type: test.op}]
`

// FuzzValues loads a plan with a fuzzed --values file: it must either load, with values of the
// declared types, or fail with an ErrorList whose every entry has a position in a known file.
func FuzzValues(f *testing.F) {
	for _, s := range []string{
		"s: x\nn: 1\nb: true\nl: [1, a]\nm: {k: v}\n",
		"",
		"---\n",
		"n: 1\n---\nn: 2\n",
		"n: 1\nn: 2\n",
		"x: &a [1, 2]\nl: [*a, *a]\n",
		"m: {<<: {a: 1}, b: 2}\n",
		"m: {a: 1, a: 2}\n",
		"l: *nope\n",
		"n: 99999999999999999999\n",
		"s: \"\x1b\"\n",
		"s: caf\xe9\n",
		"[1, 2]\n",
		"n: [1\n",
		"l: !!binary aGk=\n",
		"m: {? [a]: 1}\n",
	} {
		f.Add([]byte(s))
	}
	f.Add([]byte(ltValuesBomb()))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := engine.Parse("plan.yaml", []byte(valuesFuzzPlan), engine.LoadOptions{Params: engine.ParamValues{Files: []string{path}}})
		if err != nil {
			var list engine.ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error is %T, not a non-empty ErrorList: %v", err, err)
			}
			for _, e := range list {
				if e == nil || e.Pos.File != path || e.Pos.Line < 0 || e.Pos.Col < 0 {
					t.Errorf("bad entry %+v", e)
				}
			}
			return
		}
		for name, want := range map[string]string{"s": "string", "n": "int", "b": "bool", "l": "[]interface {}", "m": "map[string]interface {}"} {
			if got := fmt.Sprintf("%T", p.Values[name]); got != want {
				t.Errorf("param %s is %s (%v), want %s", name, got, p.Values[name], want)
			}
		}
	})
}
