package engine

import (
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Steps name the plan's clusters and datastores in their config (kube steps' cluster:, etcd.copy's
// source: and target:). The engine knows no Kubernetes and no etcd: a step type marks such a
// string field `plan:"cluster"` or `plan:"datastore"`, the decoder collects the names written in
// them, and the loader checks that the plan declares each one, so that a misspelled name is a
// load error at its file:line:col rather than a failure halfway through a run. A name given by
// ${{ }} is only known at run time, where the step checks it.

// nameRef is a cluster or datastore name written in a plan, where it is written.
type nameRef struct {
	kind string // "cluster" or "datastore"
	node *yaml.Node
}

func refKind(planTag string) string {
	for _, k := range []string{"cluster", "datastore"} {
		if hasOpt(planTag, k) {
			return k
		}
	}
	return ""
}

// addRef records the name in n, if it is one written as it is.
func (d *decoder) addRef(kind string, n *yaml.Node) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" && n.Value != "" && !isTemplate(n.Value) {
		d.refs = append(d.refs, nameRef{kind: kind, node: n})
	}
}

// templateKey refuses ${{ }} in a mapping key of a step's config: keys are not rendered, and
// the key would silently stay the text of the expression.
func (d *decoder) templateKey(k *yaml.Node) {
	d.errorf(k, "${{ }} in a mapping key is not filled in; write the key as it is, or make the whole mapping one expression: ${{ {\"key\": value} }}")
}

// checkRefs reports the names the steps' configs use that the plan does not declare.
func (l *loader) checkRefs() {
	declared := map[string][]string{}
	for name := range l.plan.Clusters {
		declared["cluster"] = append(declared["cluster"], name)
	}
	for name := range l.plan.Datastores {
		declared["datastore"] = append(declared["datastore"], name)
	}
	for _, r := range l.d.refs {
		names := declared[r.kind]
		found := false
		for _, n := range names {
			found = found || n == r.node.Value
		}
		if found {
			continue
		}
		plural := r.kind + "s"
		if len(names) == 0 {
			l.errs = append(l.errs, errorf(l.d.pos(r.node), "%s %q: the plan declares no %s (add it under %s:)", r.kind, r.node.Value, plural, plural))
			continue
		}
		sort.Strings(names)
		l.errs = append(l.errs, errorf(l.d.pos(r.node), "%s %q is not one of the plan's %s (%s)", r.kind, r.node.Value, plural, strings.Join(names, ", ")))
	}
	l.d.refs = nil
}
