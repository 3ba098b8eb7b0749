package engine_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
	_ "planrun.dev/planrun/steps" // registers exec and assert; steps imports engine, engine_test may import steps
)

// ltInts is a test-only step type with integer fields, for static type checks of ${{ }} values:
// exec and assert have no integer field in `with`.
type ltInts struct {
	N     int    `yaml:"n"`
	Count int64  `yaml:"count"`
	Name  string `yaml:"name"`
}

func (*ltInts) Run(context.Context, *engine.RunContext) (engine.Outputs, error) {
	return engine.Outputs{}, nil
}

func init() {
	engine.Register(engine.StepType{Name: "test.ints", Doc: "test step with integer fields", New: func() engine.Action { return new(ltInts) }})
}

// ltHeader takes lines 1 to 3 of every plan below, so that their bodies start on line 4.
const ltHeader = "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: t, version: 1}\n"

func ltParse(body string, set ...string) (*engine.Plan, error) {
	return engine.Parse("plan.yaml", []byte(ltHeader+body), engine.LoadOptions{Params: engine.ParamValues{Set: set}})
}

// ltErrors returns the error lines of a failed load, checking that err is an ErrorList sorted by
// position whose Error() prints one entry per line.
func ltErrors(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		t.Fatal("plan loaded; want errors")
	}
	var list engine.ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error is %T, not an engine.ErrorList: %v", err, err)
	}
	lines := make([]string, len(list))
	for i, e := range list {
		lines[i] = e.Error()
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, lines) {
		t.Errorf("Error() = %q; want one line per entry %q", got, lines)
	}
	return lines
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		set  []string
		// want is the exact start of the only error: "file:line:col: message...".
		want string
	}{
		{
			name: "invalid YAML syntax",
			body: `steps:
  - id: a: b
`,
			want: `plan.yaml:5:10: invalid YAML: mapping values are not allowed in this context`,
		},
		{
			name: "unknown top-level field",
			body: `notes: hi
steps:
  - {id: a, type: exec, with: {command: [x]}}
`,
			want: `plan.yaml:4:1: unknown field "notes" (known: apiVersion, clusters, datastores, hooks, kind, metadata, params, steps)`,
		},
		{
			name: "unknown field in a step",
			body: `steps:
  - id: a
    type: exec
    retries: 3
    with: {command: [x]}
`,
			want: `plan.yaml:7:5: unknown field "retries" (known: description, id, onError, phase, retry, rollback, timeout, type, when, with)`,
		},
		{
			name: "unknown field in with of an exec step",
			body: `steps:
  - id: a
    type: exec
    with:
      command: [x]
      workdir: /tmp
`,
			want: `plan.yaml:9:7: step "a": with: unknown field "workdir" (known: command, dir, dryRun, env, stdin, timeout)`,
		},
		{
			name: "duplicate step id",
			body: `steps:
  - {id: a, type: exec, with: {command: [x]}}
  - {id: a, type: exec, with: {command: [y]}}
`,
			want: `plan.yaml:6:5: duplicate step id "a" (first at plan.yaml:5:5)`,
		},
		{
			name: "duplicate step id between a hook and a step",
			body: `hooks:
  PreBackup:
    - {id: a, type: exec, with: {command: [x]}}
steps:
  - {id: a, type: exec, phase: Backup, with: {command: [x]}}
`,
			want: `plan.yaml:8:5: duplicate step id "a" (first at plan.yaml:6:7)`,
		},
		{
			name: "duplicate step id between a rollback step and a step",
			body: `steps:
  - id: a
    type: exec
    with: {command: [x]}
    rollback:
      - {id: b, type: exec, with: {command: [x]}}
  - {id: b, type: exec, with: {command: [x]}}
`,
			want: `plan.yaml:10:5: duplicate step id "b" (first at plan.yaml:9:9)`,
		},
		{
			name: "unknown step type",
			body: `steps:
  - id: a
    type: kubectl
`,
			want: `plan.yaml:6:11: step "a": unknown step type "kubectl" (known: assert, `,
		},
		{
			name: "string where an integer is expected",
			body: `steps:
  - id: a
    type: exec
    with: {command: [x]}
    retry: {attempts: "x"}
`,
			want: `plan.yaml:8:23: expected an integer, got string "x"`,
		},
		{
			name: "bool where a string list item is expected",
			body: `steps:
  - id: a
    type: exec
    with: {command: [echo, true]}
`,
			want: `plan.yaml:7:28: step "a": with: expected a string, got boolean true (quote it to make it a string)`,
		},
		{
			name: "step without id",
			body: `steps:
  - type: exec
    with: {command: [x]}
`,
			want: `plan.yaml:5:5: missing required field "id"`,
		},
		{
			name: "with without the command of exec",
			body: `steps:
  - id: a
    type: exec
    with:
      dir: /tmp
`,
			want: `plan.yaml:8:7: step "a": with: missing required field "command"`,
		},
		{
			name: "exec without with",
			body: `steps:
  - id: a
    type: exec
`,
			want: `plan.yaml:5:5: step "a": with: missing required field "command"`,
		},
		{
			name: "missing required param",
			body: `params:
  cluster: {type: string, required: true}
steps:
  - {id: a, type: exec, with: {command: [x]}}
`,
			want: `plan.yaml:5:3: param "cluster" is required: give it with --set cluster=... or --values FILE`,
		},
		{
			name: "--set of an unknown param",
			body: `params:
  n: {type: int, default: 1}
steps:
  - {id: a, type: exec, with: {command: [x]}}
`,
			set:  []string{"nope=1"},
			want: `--set: --set nope=1: the plan has no param "nope" (params: n)`,
		},
		{
			name: "--set of a bad integer",
			body: `params:
  n: {type: int, default: 1}
steps:
  - {id: a, type: exec, with: {command: [x]}}
`,
			set:  []string{"n=abc"},
			want: `--set: --set n=abc: expected an integer, got "abc"`,
		},
		{
			name: "--set without =",
			body: `params:
  n: {type: int, default: 1}
steps:
  - {id: a, type: exec, with: {command: [x]}}
`,
			set:  []string{"n"},
			want: `--set: --set n: expected name=value`,
		},
		{
			name: "invalid expression in when",
			body: `steps:
  - {id: a, type: exec, with: {command: [x]}}
  - id: b
    type: exec
    when: steps.a.status == "ok" && && true
    with: {command: [x]}
`,
			// Column 37 is the second && inside the expression, which starts at column 11.
			want: `plan.yaml:8:37: invalid expression "steps.a.status == \"ok\" && && true": unexpected token Operator("&&")`,
		},
		{
			name: "invalid expression in a quoted when",
			body: `steps:
  - {id: a, type: exec, with: {command: [x]}}
  - {id: b, type: exec, when: "steps.a.status == (1 +", with: {command: [x]}}
`,
			want: `plan.yaml:6:53: invalid expression "steps.a.status == (1 +": unexpected token EOF`,
		},
		{
			name: "unknown param in an expression",
			body: `params:
  name: {type: string, default: x}
steps:
  - id: a
    type: exec
    when: params.nope == "x"
    with: {command: [x]}
`,
			// Column 18 is "nope".
			want: `plan.yaml:9:18: invalid expression "params.nope == \"x\"": unknown param "nope" (params: name)`,
		},
		{
			name: "unknown param in a template",
			body: `steps:
  - id: a
    type: exec
    with: {command: [echo, "${{ params.nope }}"]}
`,
			want: `plan.yaml:7:40: step "a": with: invalid expression " params.nope ": unknown param "nope" (the plan has no params)`,
		},
		{
			name: "unknown step in an expression",
			body: `steps:
  - {id: a, type: exec, with: {command: [x]}}
  - id: b
    type: exec
    when: steps.nope.outputs.x == 1
    with: {command: [x]}
`,
			want: `plan.yaml:8:11: unknown step "nope" in expression`,
		},
		{
			name: "when that is not a condition",
			body: `params:
  n: {type: int, default: 1}
steps:
  - {id: a, type: exec, when: "${{ params.n + 1 }}", with: {command: [x]}}
`,
			want: `plan.yaml:7:35: expression " params.n + 1 " gives int, not true or false`,
		},
		{
			name: "template of the wrong static type into an integer field",
			body: `params:
  name: {type: string, default: x}
steps:
  - id: a
    type: test.ints
    with: {n: "${{ params.name }}"}
`,
			want: `plan.yaml:9:15: step "a": with: ${{ params.name }} is string but this field takes an integer`,
		},
		{
			name: "template of the wrong static type into a duration",
			body: `params:
  n: {type: int, default: 3}
steps:
  - id: a
    type: exec
    with: {command: [x], timeout: "${{ params.n }}"}
`,
			want: `plan.yaml:9:35: step "a": with: ${{ params.n }} is int but this field takes a duration such as 30s`,
		},
		{
			name: "bad phase",
			body: `steps:
  - id: a
    type: exec
    phase: Backups
    with: {command: [x]}
`,
			want: `plan.yaml:7:12: step "a": unknown phase "Backups" (known: Backup, Restore)`,
		},
		{
			name: "bad onError",
			body: `steps:
  - id: a
    type: exec
    onError: ignore
    with: {command: [x]}
`,
			want: `plan.yaml:7:14: step "a": onError must be fail or continue, not "ignore"`,
		},
		{
			name: "hook phase without steps of that phase",
			body: `hooks:
  PreRestore:
    - {id: h, type: exec, with: {command: [x]}}
steps:
  - {id: a, type: exec, phase: Backup, with: {command: [x]}}
`,
			want: `plan.yaml:6:5: hooks.PreRestore: no step has phase Restore, so these hooks would never run`,
		},
		{
			name: "non-consecutive phase steps",
			body: `steps:
  - {id: a, type: exec, phase: Backup, with: {command: [x]}}
  - {id: b, type: exec, with: {command: [x]}}
  - {id: c, type: exec, phase: Backup, with: {command: [x]}}
`,
			want: `plan.yaml:7:5: step "c": the steps of phase Backup must be consecutive (hooks run once around them)`,
		},
		{
			name: "unterminated template",
			body: `params:
  x: {type: string, default: x}
steps:
  - id: a
    type: exec
    with: {command: [echo, "${{ params.x"]}
`,
			want: `plan.yaml:9:29: step "a": with: unterminated ${{: missing }}`,
		},
		{
			name: "empty step",
			body: `steps:
  - {id: a, type: exec, with: {command: [x]}}
  -
`,
			want: `plan.yaml:6:4: empty step`,
		},
		{
			name: "empty rollback step",
			body: `steps:
  - id: a
    type: exec
    with: {command: [x]}
    rollback: [~]
`,
			want: `plan.yaml:8:16: empty step`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ltParse(tt.body, tt.set...)
			lines := ltErrors(t, err)
			if len(lines) != 1 {
				t.Fatalf("got %d errors, want 1:\n%s", len(lines), err)
			}
			if !strings.HasPrefix(lines[0], tt.want) {
				t.Errorf("error:\n  %s\nwant it to start with:\n  %s", lines[0], tt.want)
			}
		})
	}
}

// TestLoadReportsEveryError checks that one load reports all the problems of a file at once,
// sorted by position, not just the first.
func TestLoadReportsEveryError(t *testing.T) {
	body := `params:
  n: {type: int, default: nope}
steps:
  - id: a
    type: exec
    with: {command: [x], stdn: x}
  - id: a
    type: exec
    phase: Middle
    with: {command: [x]}
  - id: c
    type: assert
    with: {that: steps.zz.outputs.n > 1}
  - id: d
    type: exec
    onError: sometimes
    when: steps.a.status ==
    with: {command: [x]}
bogus: true
`
	_, err := ltParse(body)
	got := ltErrors(t, err)
	want := []string{
		`plan.yaml:5:27: default of param "n": expected an integer, got string "nope"`,
		`plan.yaml:9:26: step "a": with: unknown field "stdn"`,
		`plan.yaml:10:5: duplicate step id "a" (first at plan.yaml:7:5)`,
		`plan.yaml:12:12: step "a": unknown phase "Middle"`,
		`plan.yaml:16:18: step "c": with: unknown step "zz" in expression`,
		`plan.yaml:19:14: step "d": onError must be fail or continue, not "sometimes"`,
		`plan.yaml:20:27: invalid expression "steps.a.status ==": unexpected token EOF`,
		`plan.yaml:22:1: unknown field "bogus"`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(got), len(want), err)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("error %d:\n  %s\nwant it to start with:\n  %s", i, got[i], want[i])
		}
	}
}

func TestLoadErrorListIsSorted(t *testing.T) {
	// Errors are found in several passes (decoding, ids, expressions); the list comes out sorted.
	body := `steps:
  - {id: b, type: exec, when: "steps.nope.status == 1", with: {command: [x]}}
  - {id: b, type: nope}
  - {id: c, type: exec, with: {command: [1]}}
extra: 1
`
	_, err := ltParse(body)
	list := engine.AsErrorList(err)
	if len(list) != 5 {
		t.Fatalf("got %d errors, want 5:\n%v", len(list), err)
	}
	for i := 1; i < len(list); i++ {
		a, b := list[i-1].Pos, list[i].Pos
		if a.Line > b.Line || a.Line == b.Line && a.Col > b.Col {
			t.Errorf("errors not sorted: %s before %s", a, b)
		}
	}
}

func TestLoadAliases(t *testing.T) {
	// Anchors shared by steps are fine.
	valid := `steps:
  - {id: a, type: exec, retry: &retry {attempts: 3, on: any}, with: &w {command: [echo, hi]}}
  - {id: b, type: exec, retry: *retry, with: *w}
`
	p, err := ltParse(valid)
	if err != nil {
		t.Fatal(err)
	}
	if b := p.Step("b"); b.Retry == nil || b.Retry.Attempts != 3 || b.Digest == "" || b.Digest == p.Step("a").Digest {
		t.Errorf("step b: retry %+v, digest %q", b.Retry, b.Digest)
	}
	// An error inside an anchor is reported where the anchored value is written.
	invalid := `steps:
  - {id: a, type: exec, with: &w {command: [echo, hi]}}
  - {id: b, type: exec, with: {command: *w}}
`
	_, err = ltParse(invalid)
	got := ltErrors(t, err)
	if want := `plan.yaml:5:31: step "b": with: expected a list, got a mapping`; len(got) != 1 || got[0] != want {
		t.Errorf("errors = %q\nwant %q", got, want)
	}
}

// TestLoadAliasBomb: a bomb of steps is refused. That it is refused early, not after expanding
// it, is TestValueStopsEarly's; BenchmarkAliasBombRefused measures it.
func TestLoadAliasBomb(t *testing.T) {
	_, err := ltParse(ltAliasBomb())
	if !errors.Is(err, engine.ErrTooManyAliases) || !strings.Contains(err.Error(), ": too many aliases: they expand to more than 100000 values") {
		t.Errorf("err = %.300v...; want too many aliases", err)
	}
}

const ltValidPlan = `params:
  ns: {type: string, default: apps}
  replicas: {type: int, default: 2}
hooks:
  PreBackup:
    - {id: pre-backup, type: exec, with: {command: [echo, pre-backup]}}
  PostBackup:
    - {id: post-backup-1, type: exec, with: {command: [echo, post-backup]}}
    - {id: post-backup-2, type: exec, with: {command: [echo, post-backup]}}
  PreRestore:
    - {id: pre-restore, type: exec, with: {command: [echo, pre-restore]}}
  PostRestore:
    - {id: post-restore, type: exec, with: {command: [echo, post-restore]}}
steps:
  - id: check
    type: assert
    with: {that: "params.replicas > 0", message: "need replicas in ${{ params.ns }}"}
  - id: backup-1
    type: exec
    phase: Backup
    with: {command: [echo, "${{ params.ns }}"]}
    rollback:
      - {id: undo-backup-1, type: exec, with: {command: [echo, undo]}}
  - id: backup-2
    type: exec
    phase: Backup
    when: steps["backup-1"].status == "Succeeded"
    with: {command: [echo, b2]}
  - id: between
    type: exec
    with: {command: [echo, between]}
  - id: restore
    type: exec
    phase: Restore
    retry: {attempts: 3, backoff: 1s, on: any}
    timeout: 5m
    onError: continue
    with: {command: [echo, "${{ params.replicas }}"], timeout: 1m}
  - id: final
    type: exec
    with: {command: [echo, done]}
`

func TestLoadValidPlanOrder(t *testing.T) {
	p, err := ltParse(ltValidPlan)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range p.Order() {
		ids = append(ids, s.ID)
		if s.Digest == "" {
			t.Errorf("step %s has no digest", s.ID)
		}
	}
	want := []string{"check", "pre-backup", "backup-1", "backup-2", "post-backup-1", "post-backup-2",
		"between", "pre-restore", "restore", "post-restore", "final"}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("Order() = %v\nwant       %v", ids, want)
	}
	for id, hook := range map[string]string{"pre-backup": "PreBackup", "post-backup-2": "PostBackup", "pre-restore": "PreRestore", "post-restore": "PostRestore", "restore": ""} {
		if got := p.Step(id).Hook; got != hook {
			t.Errorf("step %s: Hook = %q, want %q", id, got, hook)
		}
	}
	undo := p.Step("undo-backup-1")
	if undo == nil || undo.Parent != p.Step("backup-1") || undo.Digest == "" {
		t.Errorf("rollback step: %+v", undo)
	}
	if s := p.Step("backup-1"); s.Pos != (engine.Pos{File: "plan.yaml", Line: 21, Col: 5}) {
		t.Errorf("backup-1 at %s, want plan.yaml:21:5", s.Pos)
	}
	r := p.Step("restore")
	if r.Retry == nil || r.Retry.Attempts != 3 || r.Retry.On != engine.RetryOnAny || r.OnError != engine.OnErrorContinue || r.Timeout.String() != "5m0s" {
		t.Errorf("restore: retry %+v, onError %q, timeout %s", r.Retry, r.OnError, r.Timeout)
	}
	if p.Name() != "t" || p.Metadata.Version != 1 || p.File != "plan.yaml" || p.Digest == "" {
		t.Errorf("plan: name %q version %d file %q digest %q", p.Name(), p.Metadata.Version, p.File, p.Digest)
	}
}

func TestLoadFromFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "migrate.yaml")
	if err := os.WriteFile(path, []byte(ltHeader+"steps:\n  - {id: a, type: exec, with: {comand: [x]}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := engine.Load(path, engine.LoadOptions{})
	// Two errors: the unknown field, and the missing command at the start of the mapping.
	if want := "\n" + path + ":5:32: step \"a\": with: unknown field \"comand\""; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v\nwant it to start with %s", err, want)
	}
	_, err = engine.Load(filepath.Join(t.TempDir(), "missing.yaml"), engine.LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), "cannot read plan") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

const ltParamsPlan = `params:
  s: {type: string, default: def}
  n: {type: int, default: 1}
  b: {type: bool, default: false}
  l: {type: list, default: [a]}
  m: {type: map, default: {k: v}}
  noDefault: {type: int}
steps:
  - id: a
    type: exec
    when: params.n > 0 && !params.b && len(params.l) > 0 && params.m.k != "" && params.s != ""
    with: {command: [echo, "${{ params.s }}"]}
`

func ltLoadParams(t *testing.T, pv engine.ParamValues) map[string]any {
	t.Helper()
	p, err := engine.Parse("plan.yaml", []byte(ltHeader+ltParamsPlan), engine.LoadOptions{Params: pv})
	if err != nil {
		t.Fatal(err)
	}
	return p.Values
}

func ltWriteValues(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestParamDefaults(t *testing.T) {
	got := ltLoadParams(t, engine.ParamValues{})
	want := map[string]any{"s": "def", "n": 1, "b": false, "l": []any{"a"}, "m": map[string]any{"k": "v"}, "noDefault": 0}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("values = %#v\nwant %#v", got, want)
	}
}

func TestParamValuesFileOverridesDefaults(t *testing.T) {
	f1 := ltWriteValues(t, "v1.yaml", "s: one\nn: 10\nl: [x, y]\n")
	f2 := ltWriteValues(t, "v2.yaml", "# later files win\nn: 20\nm: {a: 1}\n")
	got := ltLoadParams(t, engine.ParamValues{Files: []string{f1, f2}})
	want := map[string]any{"s": "one", "n": 20, "b": false, "l": []any{"x", "y"}, "m": map[string]any{"a": 1}, "noDefault": 0}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("values = %#v\nwant %#v", got, want)
	}
}

func TestParamSetOverridesValuesFile(t *testing.T) {
	f := ltWriteValues(t, "values.yaml", "s: file\nn: 10\nb: true\n")
	got := ltLoadParams(t, engine.ParamValues{Files: []string{f}, Set: []string{"s=cli", "n=42"}})
	if got["s"] != "cli" || got["n"] != 42 || got["b"] != true {
		t.Errorf("values = %#v; want s=cli (--set), n=42 (--set), b=true (file)", got)
	}
}

func TestParamSetTypes(t *testing.T) {
	got := ltLoadParams(t, engine.ParamValues{Set: []string{
		"s=a=b", "n=-7", "b=true", "l=[x, 2, {k: v}]", "m={k: [1, 2], j: yes}", "noDefault=0",
	}})
	want := map[string]any{
		"s": "a=b", "n": -7, "b": true,
		"l":         []any{"x", 2, map[string]any{"k": "v"}},
		"m":         map[string]any{"k": []any{1, 2}, "j": "yes"},
		"noDefault": 0,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("values = %#v\nwant %#v", got, want)
	}
}

func TestParamSetErrors(t *testing.T) {
	for set, want := range map[string]string{
		"b=maybe": `--set: --set b=maybe: expected true or false, got "maybe"`,
		"l=x":     `--set: --set l=x: expected a list, got string "x"`,
		"l=[x":    `--set: --set l=[x: expected a list in YAML flow syntax, got "[x"`,
		"m=[1]":   `--set: --set m=[1]: expected a mapping, got a list`,
		"n=1.5":   `--set: --set n=1.5: expected an integer, got "1.5"`,
	} {
		_, err := engine.Parse("plan.yaml", []byte(ltHeader+ltParamsPlan), engine.LoadOptions{Params: engine.ParamValues{Set: []string{set}}})
		if err == nil || err.Error() != want {
			t.Errorf("--set %s: err = %v\nwant %s", set, err, want)
		}
	}
}

func TestParamValuesFileErrors(t *testing.T) {
	f := ltWriteValues(t, "values.yaml", "s: ok\nnope: 1\nn: many\n")
	_, err := engine.Parse("plan.yaml", []byte(ltHeader+ltParamsPlan), engine.LoadOptions{Params: engine.ParamValues{Files: []string{f}}})
	got := ltErrors(t, err)
	want := []string{
		f + `:2:1: the plan has no param "nope"`,
		f + `:3:4: param "n": expected an integer, got string "many"`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("errors = %q\nwant %q", got, want)
	}
}

func TestParamFixedValues(t *testing.T) {
	// Values recorded by an earlier run (resume) replace defaults; unknown names are ignored.
	got := ltLoadParams(t, engine.ParamValues{Fixed: map[string]any{"s": "recorded", "n": 5, "gone": 1}})
	if got["s"] != "recorded" || got["n"] != 5 || got["b"] != false {
		t.Errorf("values = %#v", got)
	}
	if _, ok := got["gone"]; ok {
		t.Errorf("unknown fixed param kept: %#v", got)
	}
	// A required param is satisfied by a fixed value.
	body := "params:\n  r: {type: string, required: true}\nsteps:\n  - {id: a, type: exec, with: {command: [x]}}\n"
	p, err := engine.Parse("plan.yaml", []byte(ltHeader+body), engine.LoadOptions{Params: engine.ParamValues{Fixed: map[string]any{"r": "v"}}})
	if err != nil || p.Values["r"] != "v" {
		t.Errorf("fixed required param: %v %v", err, p)
	}
}

func TestParamRequiredSkipped(t *testing.T) {
	body := "params:\n  r: {type: string, required: true}\nsteps:\n  - {id: a, type: exec, with: {command: [x]}}\n"
	if _, err := engine.Parse("plan.yaml", []byte(ltHeader+body), engine.LoadOptions{SkipRequiredParams: true}); err != nil {
		t.Errorf("SkipRequiredParams: %v", err)
	}
}

func TestParamTypedExpressions(t *testing.T) {
	// Params are typed in expressions: comparing an int param with a string is a load error.
	body := `params:
  n: {type: int, default: 1}
steps:
  - {id: a, type: exec, when: params.n == "1", with: {command: [x]}}
`
	_, err := ltParse(body)
	got := ltErrors(t, err)
	if want := `plan.yaml:7:40: invalid expression "params.n == \"1\"": invalid operation: == (mismatched types int and string)`; len(got) != 1 || got[0] != want {
		t.Errorf("errors = %q\nwant %q", got, want)
	}
}

// Digests: a step's digest identifies what it does; resume refuses changed completed steps.

const ltDigestBase = `params:
  ns: {type: string, default: apps}
steps:
  - id: a
    type: exec
    with: {command: [echo, "${{ params.ns }}"], env: {A: "1", B: "2"}}
  - id: b
    type: exec
    when: steps.a.status == "Succeeded"
    with: {command: [echo, b]}
    rollback:
      - {id: b-undo, type: exec, with: {command: [echo, undo]}}
`

func ltDigests(t *testing.T, body string) map[string]string {
	t.Helper()
	p, err := ltParse(body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, id := range []string{"a", "b", "b-undo"} {
		if s := p.Step(id); s != nil {
			out[id] = s.Digest
		}
	}
	return out
}

func TestDigestIgnoresFormattingAndRunPolicy(t *testing.T) {
	base := ltDigests(t, ltDigestBase)
	variants := map[string]string{
		"comments and block style": `# A comment.
params:
  ns: {type: string, default: apps}   # other default values do not matter either
steps:
  # The first step.
  - id: a
    type: exec
    with:
      env:
        B: '2'
        A: "1"
      command:
        - echo
        - '${{ params.ns }}'
  - id: b
    type: "exec"
    when: 'steps.a.status == "Succeeded"'
    with:
      command: [echo, "b"]
    rollback:
      - {id: b-undo, type: exec, with: {command: [echo, undo]}}
`,
		"retry, timeout and onError": `params:
  ns: {type: string, default: apps}
steps:
  - id: a
    type: exec
    retry: {attempts: 5, backoff: 2s, on: any}
    timeout: 10m
    onError: continue
    description: now with retries
    with: {command: [echo, "${{ params.ns }}"], env: {A: "1", B: "2"}}
  - id: b
    type: exec
    when: steps.a.status == "Succeeded"
    with: {command: [echo, b]}
    rollback:
      - {id: b-undo, type: exec, with: {command: [echo, undo]}}
`,
		"rollback block": `params:
  ns: {type: string, default: apps}
steps:
  - id: a
    type: exec
    with: {command: [echo, "${{ params.ns }}"], env: {A: "1", B: "2"}}
    rollback:
      - {id: a-undo, type: exec, with: {command: [echo, new]}}
  - id: b
    type: exec
    when: steps.a.status == "Succeeded"
    with: {command: [echo, b]}
`,
	}
	for name, body := range variants {
		got := ltDigests(t, body)
		for _, id := range []string{"a", "b"} {
			if got[id] != base[id] {
				t.Errorf("%s: digest of step %s changed", name, id)
			}
		}
	}
}

func TestDigestChangesWithConfig(t *testing.T) {
	base := ltDigests(t, ltDigestBase)
	for name, tc := range map[string]struct {
		old, new string
		changed  string
	}{
		"with value":    {`command: [echo, b]`, `command: [echo, c]`, "b"},
		"with field":    {`env: {A: "1", B: "2"}`, `env: {A: "1", B: "2"}, dir: /tmp`, "a"},
		"with template": {`"${{ params.ns }}"`, `"${{ params.ns + 'x' }}"`, "a"},
		"when":          {`when: steps.a.status == "Succeeded"`, `when: steps.a.status != "Failed"`, "b"},
		"rollback with": {`command: [echo, undo]`, `command: [echo, undo2]`, "b-undo"},
	} {
		body := strings.Replace(ltDigestBase, tc.old, tc.new, 1)
		if body == ltDigestBase {
			t.Fatalf("%s: %q not in the plan", name, tc.old)
		}
		got := ltDigests(t, body)
		for id, d := range base {
			if changed := got[id] != d; changed != (id == tc.changed) {
				t.Errorf("%s: digest of step %s changed=%v", name, id, changed)
			}
		}
	}
}
