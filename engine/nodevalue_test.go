package engine

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// bombNode is nine levels of nine aliases: 9^9 values once expanded.
func bombNode(t *testing.T) *yaml.Node {
	var b strings.Builder
	b.WriteString("- &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "- &l%d [%s]\n", i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 9), ", "))
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Content[0]
}

// TestValueStopsEarly shows that a bomb is refused after at most the budget of values, whichever
// way it is decoded: as a free value, into a typed field, or looked through for templates.
func TestValueStopsEarly(t *testing.T) {
	const budget = 1000
	for _, tc := range []struct {
		name   string
		decode func(d *decoder, n *yaml.Node) error
	}{
		{"value", func(d *decoder, n *yaml.Node) error { _, err := d.value(n); return err }},
		{"typed", func(d *decoder, n *yaml.Node) error {
			var x [][][][][][][][][][]string
			d.decode(n, reflect.ValueOf(&x).Elem())
			return d.errs.Err()
		}},
		{"interface", func(d *decoder, n *yaml.Node) error {
			var x any
			d.decode(n, reflect.ValueOf(&x).Elem())
			return d.errs.Err()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &decoder{file: "f.yaml", maxAliased: budget}
			err := tc.decode(d, bombNode(t))
			if !errors.Is(err, ErrTooManyAliases) {
				t.Fatalf("err = %v, want ErrTooManyAliases", err)
			}
			// An alias is entered while under budget; what it holds beyond its own aliases
			// is at most one line of the bomb.
			if d.aliased > budget+10 {
				t.Errorf("decoded %d values through aliases, budget %d", d.aliased, budget)
			}
		})
	}
	t.Run("templates", func(t *testing.T) {
		d := &decoder{}
		if d.holdsTemplate(bombNode(t)) {
			t.Fatal("no template in the bomb")
		}
		if len(d.templateIn) != 10 {
			t.Errorf("looked at %d anchored nodes, want each of the 10 once", len(d.templateIn))
		}
	})
}

// TestValueShapes: value gives what yaml.v3's Node.Decode gave, in the shapes expressions expect.
func TestValueShapes(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want any
	}{
		{"a", "a"},
		{"'1'", "1"},
		{"1", 1},
		{"1.5", 1.5},
		{"true", true},
		{"~", nil},
		{"[1, a, null]", []any{1, "a", nil}},
		{"{a: 1, 2: b, true: c}", map[string]any{"a": 1, "2": "b", "true": "c"}},
		{"{x: &m {a: 1, b: 2}, y: {<<: *m, b: 3}}", map[string]any{"x": map[string]any{"a": 1, "b": 2}, "y": map[string]any{"a": 1, "b": 3}}},
		{"{<<: [{a: 1}, {a: 2, b: 2}], c: 3}", map[string]any{"a": 1, "b": 2, "c": 3}},
		{"!!binary aGk=", "hi"},
	} {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(tc.src), &doc); err != nil {
			t.Fatal(err)
		}
		got, err := (&decoder{}).value(&doc)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("value(%s) = %#v, %v; want %#v", tc.src, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ src, want string }{
		{"{a: 1, a: 2}", `f.yaml:1:8: mapping key "a" is already defined`},
		{"{[a]: 1}", `f.yaml:1:2: a mapping key must be a string, not a list`},
		{"{<<: 1}", `f.yaml:1:6: << merges a mapping or a list of mappings, not integer 1`},
	} {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(tc.src), &doc); err != nil {
			t.Fatal(err)
		}
		_, err := (&decoder{file: "f.yaml"}).value(&doc)
		if err == nil || err.Error() != tc.want {
			t.Errorf("value(%s): err = %v, want %s", tc.src, err, tc.want)
		}
	}
}
