package engine

import (
	"errors"
	"fmt"

	"gopkg.in/yaml.v3"
)

// ErrTooManyAliases is the cause of the error for a file whose aliases expand to more values than
// the decoder allows ("billion laughs": a few nested aliases make a small file expand to billions
// of nodes).
var ErrTooManyAliases = errors.New("too many aliases")

// defaultMaxAliased is far above what anchors shared by the steps of a real plan expand to. A
// large file may expand to as many values as it has bytes: a linear bound either way.
const defaultMaxAliased = 100_000

// aliasBudget is how many values a file of size bytes may expand to through aliases.
func aliasBudget(size int) int { return max(defaultMaxAliased, size) }

// enterAlias follows alias n, counting the nodes decoded inside it. It returns false, recording
// the error once, when the file's aliases expand to more than the budget; the caller then skips
// the alias. leaveAlias must follow a true.
func (d *decoder) enterAlias(n *yaml.Node) bool {
	if d.aliased >= d.budget() {
		if !d.aliasRefused {
			d.aliasRefused = true
			d.errs = append(d.errs, d.aliasError(n))
		}
		return false
	}
	if d.inAlias == 0 {
		d.outerAlias = n
	}
	d.inAlias++
	return true
}

func (d *decoder) leaveAlias() { d.inAlias-- }

// countNode counts a node reached through an alias.
func (d *decoder) countNode() {
	if d.inAlias > 0 {
		d.aliased++
	}
}

func (d *decoder) budget() int {
	if d.maxAliased == 0 {
		return defaultMaxAliased
	}
	return d.maxAliased
}

// aliasError is at the outermost alias being expanded: the use the operator wrote, not the
// place deep inside the anchors where the budget ran out.
func (d *decoder) aliasError(n *yaml.Node) *PosError {
	if d.inAlias > 0 && d.outerAlias != nil {
		n = d.outerAlias
	}
	return &PosError{Pos: d.pos(n), Msg: fmt.Sprintf("too many aliases: they expand to more than %d values", d.budget()), Err: ErrTooManyAliases}
}

// value is the one way a node becomes a plain value (map[string]any, []any, string, int, float64,
// bool, nil), for free-form fields, param values and step digests. Aliases count against the
// decoder's budget, so an alias bomb is refused after a bounded amount of work instead of
// being expanded by yaml.v3's Node.Decode.
func (d *decoder) value(n *yaml.Node) (any, error) {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind == yaml.AliasNode {
		if !d.enterAlias(n) {
			return nil, d.aliasError(n)
		}
		defer d.leaveAlias()
		n = n.Alias
	}
	d.countNode()
	switch n.Kind {
	case yaml.ScalarNode:
		return d.scalarValue(n)
	case yaml.SequenceNode:
		out := make([]any, len(n.Content))
		for i, c := range n.Content {
			v, err := d.value(c)
			if err != nil {
				return nil, err
			}
			out[i] = v
		}
		return out, nil
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		if err := d.mappingValue(n, out, map[string]bool{}); err != nil {
			return nil, err
		}
		return out, nil
	}
	return nil, errorf(d.pos(n), "expected a value, got %s", kindName(n))
}

// mappingValue adds the entries of mapping n to out. Keys written in n win over keys merged in
// with `<<: *anchor` (YAML's merge key), and a key written twice is an error. set holds the keys
// written in the mappings being merged into, so that a merged mapping does not override them.
func (d *decoder) mappingValue(n *yaml.Node, out map[string]any, set map[string]bool) error {
	var merges []*yaml.Node
	own := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			merges = append(merges, v)
			continue
		}
		key, err := d.keyString(k)
		if err != nil {
			return err
		}
		if own[key] {
			return errorf(d.pos(k), "mapping key %q is already defined", key)
		}
		own[key] = true
		if set[key] {
			continue
		}
		x, err := d.value(v)
		if err != nil {
			return err
		}
		out[key] = x
	}
	inner := make(map[string]bool, len(set)+len(own))
	for k := range set {
		inner[k] = true
	}
	for k := range own {
		inner[k] = true
	}
	for _, m := range merges {
		if err := d.merge(m, out, inner); err != nil {
			return err
		}
	}
	return nil
}

// merge adds the mapping (or list of mappings) of a merge key; the first mapping that has a key wins.
func (d *decoder) merge(m *yaml.Node, out map[string]any, set map[string]bool) error {
	if m.Kind == yaml.AliasNode {
		if !d.enterAlias(m) {
			return d.aliasError(m)
		}
		defer d.leaveAlias()
		m = m.Alias
	}
	d.countNode()
	switch m.Kind {
	case yaml.MappingNode:
		if err := d.mappingValue(m, out, set); err != nil {
			return err
		}
		for k := range out {
			set[k] = true
		}
		return nil
	case yaml.SequenceNode:
		for _, c := range m.Content {
			if err := d.merge(c, out, set); err != nil {
				return err
			}
		}
		return nil
	}
	return errorf(d.pos(m), "<< merges a mapping or a list of mappings, not %s", kindName(m))
}

// keyString is a mapping key as a string: a number or boolean key is written as text.
func (d *decoder) keyString(k *yaml.Node) (string, error) {
	if k.Kind == yaml.AliasNode && k.Alias != nil {
		k = k.Alias
	}
	if k.Kind != yaml.ScalarNode {
		return "", errorf(d.pos(k), "a mapping key must be a string, not %s", kindName(k))
	}
	if k.Tag == "!!str" {
		return k.Value, nil
	}
	v, err := d.scalarValue(k)
	if err != nil {
		return "", err
	}
	if v == nil {
		return "", errorf(d.pos(k), "a mapping key must be a string, not null")
	}
	return fmt.Sprint(v), nil
}

// scalarValue resolves a scalar as yaml.v3 does (ints, floats, booleans, timestamps, !!binary);
// strings and nulls, by far the most common, without its reflection.
func (d *decoder) scalarValue(n *yaml.Node) (any, error) {
	switch n.Tag {
	case "!!str":
		return n.Value, nil
	case "!!null":
		return nil, nil
	}
	var x any
	if err := n.Decode(&x); err != nil { // a scalar: there is no alias to expand
		return nil, errorf(d.pos(n), "%s: %s", kindName(n), yamlMessage(err))
	}
	return x, nil
}
