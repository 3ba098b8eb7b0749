package engine

import (
	"fmt"
	"reflect"

	"gopkg.in/yaml.v3"
)

// prepare returns the step's action with its ${{ }} values filled in from env. A step without
// expressions reuses the config decoded at load time. Errors do not name the step: the runner
// reports them as `step "id" failed: ...`.
func (s *Step) prepare(env Env, file string) (Action, error) {
	if len(s.templates) == 0 {
		return s.action, nil
	}
	d := &decoder{file: file, compiled: s.exprs, rendered: map[*yaml.Node]bool{}}
	rendered, err := renderNode(&s.With, s.templates, env, d.rendered)
	if err != nil {
		return nil, err
	}
	action := s.stepType.New()
	d.decode(rendered, reflect.ValueOf(action).Elem())
	if err := d.errs.Err(); err != nil {
		return nil, fmt.Errorf("with: %w", err)
	}
	if err := checkConfig(action); err != nil {
		return nil, &PosError{Pos: s.Pos, Msg: fmt.Sprintf("with: %v", err), Err: err}
	}
	return action, nil
}

// renderNode copies n with every template scalar replaced by its value. Untouched subtrees are
// shared with the original, so fields of type Expr find their compiled program again.
func renderNode(n *yaml.Node, templates map[*yaml.Node]*Template, env Env, rendered map[*yaml.Node]bool) (*yaml.Node, error) {
	if t, ok := templates[n]; ok {
		out, err := t.render(env)
		if err == nil && out.Kind == yaml.ScalarNode {
			rendered[out] = true
		}
		return out, err
	}
	if n.Kind == yaml.AliasNode {
		// The anchored value may hold templates: render it (the alias stands for a copy).
		return renderNode(n.Alias, templates, env, rendered)
	}
	if len(n.Content) == 0 || !containsTemplate(n, templates) {
		return n, nil
	}
	cp := *n
	cp.Content = make([]*yaml.Node, len(n.Content))
	for i, c := range n.Content {
		r, err := renderNode(c, templates, env, rendered)
		if err != nil {
			return nil, err
		}
		cp.Content[i] = r
	}
	return &cp, nil
}

func containsTemplate(n *yaml.Node, templates map[*yaml.Node]*Template) bool {
	if _, ok := templates[n]; ok {
		return true
	}
	if n.Kind == yaml.AliasNode {
		// Bounded: the plan loaded, so its aliases expand to at most the decoder's budget.
		return containsTemplate(n.Alias, templates)
	}
	for _, c := range n.Content {
		if containsTemplate(c, templates) {
			return true
		}
	}
	return false
}
