package engine_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
)

// aliasChain writes the nested anchors of a "billion laughs" bomb: <key>0 anchors first, and
// each of the next levels holds fanout aliases of the level before, in shape (a format whose %s
// receives the list of aliases).
func aliasChain(b *strings.Builder, indent, key, first string, levels, fanout int, shape string) {
	fmt.Fprintf(b, "%s%s0: &l0 %s\n", indent, key, first)
	for i := 1; i <= levels; i++ {
		refs := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), fanout), ", ")
		fmt.Fprintf(b, "%s%s%d: &l%d %s\n", indent, key, i, i, fmt.Sprintf(shape, refs))
	}
}

const lols = "[lol, lol, lol, lol, lol, lol, lol, lol, lol]"

// ltAliasBomb is under 600 bytes and expands to a million steps through nested aliases.
func ltAliasBomb() string {
	var b strings.Builder
	aliasChain(&b, "", "x", "{id: a, type: exec}", 6, 10, "{id: a, rollback: [%s]}")
	b.WriteString("steps: [*l6]\n")
	return b.String()
}

// ltWithBomb is a plan of about 1.8 KB whose first step's `with:` holds a YAML alias bomb:
// nine levels of nine aliases, 9^9 (387 million) values once expanded. field is the key of
// `with:` the bomb is under.
func ltWithBomb(stepType, field string) string {
	var b strings.Builder
	b.WriteString(ltHeader + "steps:\n  - id: a\n    type: " + stepType + "\n    with:\n")
	aliasChain(&b, "      ", "l", lols, 9, 9, "[%s]")
	fmt.Fprintf(&b, "      %s: {boom: *l9, again: *l9}\n", field)
	return b.String()
}

// ltValuesBomb is a values file that sets param l to a bomb.
func ltValuesBomb() string {
	var b strings.Builder
	aliasChain(&b, "", "x", lols, 9, 9, "[%s]")
	b.WriteString("l: *l9\n")
	return b.String()
}

// TestBombsRefused: an alias bomb wherever YAML comes in is refused with ErrTooManyAliases at a
// position. The work done before the refusal is bounded by the alias budget (see
// TestValueStopsEarly); BenchmarkAliasBombRefused measures it.
func TestBombsRefused(t *testing.T) {
	dir := t.TempDir()
	values := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(values, []byte(ltValuesBomb()), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, plan string
		pv         engine.ParamValues
		wantAt     string
	}{
		// exec has no field "bomb": the decoder stops at the unknown field, the step digest
		// used to expand the whole value.
		{"unknown field of with", ltWithBomb("exec", "bomb"), engine.ParamValues{}, "plan.yaml:15:"},
		// out is map[string]any: a free-form value.
		{"free-form field of with", ltWithBomb("test.op", "out"), engine.ParamValues{}, "plan.yaml:15:"},
		{"values file", ltHeader + "params: {l: {type: list}}\nsteps: [{id: a, type: test.op}]\n", engine.ParamValues{Files: []string{values}}, values + ":11:"},
		{"param default", ltHeader + "x: &a [1, 2]\nparams: {l: {type: list, default: [*a, *a]}}\nsteps: [{id: a, type: test.op}]\n" + strings.Repeat("", 0), engine.ParamValues{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := engine.Parse("plan.yaml", []byte(tc.plan), engine.LoadOptions{Params: tc.pv})
			if tc.wantAt == "" {
				if err != nil && !strings.Contains(err.Error(), "unknown field \"x\"") {
					t.Fatalf("small aliases: %v", err)
				}
				return
			}
			if !errors.Is(err, engine.ErrTooManyAliases) {
				t.Fatalf("err = %.300v; want ErrTooManyAliases", err)
			}
			if !strings.Contains(err.Error(), tc.wantAt) || !strings.Contains(err.Error(), "too many aliases: they expand to more than 100000 values") {
				t.Errorf("err = %.500v; want too many aliases at %s", err, tc.wantAt)
			}
		})
	}
	if n := len(ltWithBomb("exec", "bomb")); n > 1900 {
		t.Errorf("the bomb is %d bytes, more than the 1.8 KB of the issue", n)
	}
}

func TestSetBombRefused(t *testing.T) {
	set := "l=[&a [x, x, x, x, x, x, x, x, x, x], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a], &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c], &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d], [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]]"
	_, err := engine.Parse("plan.yaml", []byte(ltHeader+"params: {l: {type: list}}\nsteps: [{id: a, type: test.op}]\n"), engine.LoadOptions{Params: engine.ParamValues{Set: []string{set}}})
	if err == nil || !strings.Contains(err.Error(), "--set: --set l=...: too many aliases") {
		t.Errorf("err = %v", err)
	}
}

func BenchmarkAliasBombRefused(b *testing.B) {
	data := []byte(ltWithBomb("exec", "bomb"))
	for b.Loop() {
		if _, err := engine.Parse("plan.yaml", data, engine.LoadOptions{}); !errors.Is(err, engine.ErrTooManyAliases) {
			b.Fatal(err)
		}
	}
}

// TestValuesFileChecks: a values file holds one document and sets each param once, and a bad
// value is the only error reported (not also "param is required").
func TestValuesFileChecks(t *testing.T) {
	plan := ltHeader + "params:\n  n: {type: int, required: true}\n  s: {type: string}\nsteps: [{id: a, type: test.op}]\n"
	for _, tc := range []struct {
		name, values string
		set          []string
		want         []string
	}{
		{"duplicate param", "n: 1\ns: a\nn: 2\n", nil, []string{"values.yaml:3:1: param \"n\" is already set in this file (at 1:1)"}},
		{"second document", "n: 1\n---\ns: a\n", nil, []string{"values.yaml:2:1: a second YAML document starts here; a values file holds one document"}},
		{"duplicate key inside a value", "n: 1\ns: {a: 1, a: 2}\n", nil, []string{"values.yaml:2:4: param \"s\": expected a string, got a mapping"}},
		{"bad value", "n: x\n", nil, []string{"values.yaml:1:4: param \"n\": expected an integer, got string \"x\""}},
		{"bad --set", "", []string{"n=x"}, []string{`--set: --set n=x: expected an integer, got "x"`}},
		{"syntax error", "n: [1\n", nil, []string{"values.yaml:1:5: invalid YAML: did not find expected ',' or ']'"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var files []string
			if tc.values != "" {
				files = []string{filepath.Join(dir, "values.yaml")}
				if err := os.WriteFile(files[0], []byte(tc.values), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := engine.Parse("plan.yaml", []byte(plan), engine.LoadOptions{Params: engine.ParamValues{Files: files, Set: tc.set}})
			lines := ltErrors(t, err)
			for i := range lines {
				lines[i] = strings.TrimPrefix(lines[i], dir+"/")
			}
			if strings.Join(lines, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n  %s\nwant:\n  %s", strings.Join(lines, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}
