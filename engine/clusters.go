package engine

import (
	"fmt"
	"sort"

	"gopkg.in/yaml.v3"
)

// renderClusters fills in the ${{ }} of the clusters' kubeconfig and context from the params:
// a plan run over many targets (a fleet of tenants) reaches each target's cluster through its
// own kubeconfig. Like datastores, clusters are known before the first step runs: they read
// params only.
func (l *loader) renderClusters(root *yaml.Node) {
	clusters := mappingValue(root, "clusters")
	if clusters == nil || clusters.Kind != yaml.MappingNode || l.exprs == nil {
		return
	}
	l.exprs.self, l.exprs.readable = "", func(string, bool) (bool, string) {
		return false, "is read by a cluster, which is set up before any step runs"
	}
	names := make([]string, 0, len(l.plan.Clusters))
	for name := range l.plan.Clusters {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		c := l.plan.Clusters[name]
		for _, f := range []struct {
			key   string
			value *string
		}{{"kubeconfig", &c.Kubeconfig}, {"context", &c.Context}} {
			n := mappingValue(mappingValue(clusters, name), f.key)
			if n == nil || n.Kind != yaml.ScalarNode || !isTemplate(n.Value) {
				continue
			}
			if l.paramsMissing {
				*f.value = "" // validate without the params: the shape is checked, not the value
				continue
			}
			t, err := l.exprs.compileTemplate(n, l.d.pos(n))
			if err != nil {
				l.errs = append(l.errs, prefixed(l.d.pos(n), fmt.Sprintf("clusters.%s.%s: ", name, f.key), err))
				continue
			}
			out, err := t.render(Env{Params: l.plan.paramValue, Steps: map[string]StepView{}})
			if err != nil || out.Kind != yaml.ScalarNode {
				if err == nil {
					err = fmt.Errorf("want a string")
				}
				l.errs = append(l.errs, prefixed(l.d.pos(n), fmt.Sprintf("clusters.%s.%s: ", name, f.key), err))
				continue
			}
			*f.value = out.Value
		}
	}
}
