package kubeget

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.list",
		Doc:  "List objects by kind, namespace and selectors; outputs count, names and items.",
		New:  func() engine.Action { return new(List) },
	})
}

// List lists objects. Its outputs are recorded in the run's checkpoint; for large lists set
// items: false and use count and names.
type List struct {
	kube.ClusterRef `yaml:",inline"`
	APIVersion      string   `yaml:"apiVersion" plan:"required" doc:"API version, such as v1."`
	Kind            string   `yaml:"kind" plan:"required" doc:"Kind, such as ConfigMap."`
	Namespace       string   `yaml:"namespace" doc:"Namespace; empty lists namespaced kinds in every namespace."`
	Namespaces      []string `yaml:"namespaces" doc:"List in each of these namespaces (with or instead of namespace); a namespace that does not exist has no objects."`
	LabelSelector   string   `yaml:"labelSelector" doc:"Label selector, such as app=web,tier!=db."`
	FieldSelector   string   `yaml:"fieldSelector" doc:"Field selector, such as metadata.name=x."`
	Items           *bool    `yaml:"items" doc:"Put the objects in outputs.items (default true)."`
}

var (
	_ engine.Action     = (*List)(nil)
	_ engine.Describer  = (*List)(nil)
	_ kube.AccessNeeder = (*List)(nil)
)

// Access implements kube.AccessNeeder:
//   - list on the kind's resource: the objects are listed, in pages.
func (l *List) Access() []kube.Rule {
	return []kube.Rule{kube.KindRule(l.APIVersion, l.Kind, "list")}
}

// namespaces is namespace and namespaces together, without repeats.
func (l *List) namespaces() []string {
	var out []string
	seen := map[string]bool{}
	for _, ns := range append([]string{l.Namespace}, l.Namespaces...) {
		if ns != "" && !seen[ns] {
			seen[ns] = true
			out = append(out, ns)
		}
	}
	return out
}

// pageSize bounds each list request, so that a large list does not load the API server.
const pageSize = 500

// Describe implements engine.Describer.
func (l *List) Describe() string {
	where := "all namespaces"
	if ns := l.namespaces(); len(ns) == 1 {
		where = "namespace " + ns[0]
	} else if len(ns) > 1 {
		where = "namespaces " + strings.Join(ns, ", ")
	}
	s := fmt.Sprintf("list %s in %s", l.Kind, where)
	if l.LabelSelector != "" {
		s += " matching " + l.LabelSelector
	}
	return s
}

// Run implements engine.Action.
func (l *List) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	c, err := l.Client(rc)
	if err != nil {
		return nil, err
	}
	m, err := c.Mapping(l.APIVersion, l.Kind)
	if err != nil {
		return nil, err
	}
	namespaces := l.namespaces()
	if m.Scope.Name() != meta.RESTScopeNameNamespace && len(namespaces) > 0 {
		return nil, fmt.Errorf("namespace: %s is cluster-scoped; remove namespace and namespaces", l.Kind)
	}
	var lists []dynamic.ResourceInterface
	for _, ns := range namespaces {
		lists = append(lists, c.Dynamic.Resource(m.Resource).Namespace(ns))
	}
	if len(namespaces) == 0 {
		lists = append(lists, c.Dynamic.Resource(m.Resource))
	}
	keepItems := l.Items == nil || *l.Items
	items, names := []any{}, []any{}
	for _, r := range lists {
		opts := metav1.ListOptions{LabelSelector: l.LabelSelector, FieldSelector: l.FieldSelector, Limit: pageSize}
		for {
			page, err := r.List(ctx, opts)
			if err != nil {
				return nil, fmt.Errorf("list %s: %w", l.Kind, kube.Classify(err))
			}
			for _, obj := range page.Items {
				name := obj.GetName()
				if obj.GetNamespace() != "" {
					name = obj.GetNamespace() + "/" + name
				}
				names = append(names, name)
				if keepItems {
					items = append(items, obj.Object)
				}
			}
			if page.GetContinue() == "" {
				break
			}
			opts.Continue = page.GetContinue()
		}
	}
	out := engine.Outputs{"count": len(names), "names": names}
	if keepItems {
		out["items"] = items
	}
	return out, nil
}
