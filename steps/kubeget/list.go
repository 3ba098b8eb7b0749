package kubeget

import (
	"context"
	"fmt"

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
	APIVersion      string `yaml:"apiVersion" plan:"required" doc:"API version, such as v1."`
	Kind            string `yaml:"kind" plan:"required" doc:"Kind, such as ConfigMap."`
	Namespace       string `yaml:"namespace" doc:"Namespace; empty lists namespaced kinds in every namespace."`
	LabelSelector   string `yaml:"labelSelector" doc:"Label selector, such as app=web,tier!=db."`
	FieldSelector   string `yaml:"fieldSelector" doc:"Field selector, such as metadata.name=x."`
	Items           *bool  `yaml:"items" doc:"Put the objects in outputs.items (default true)."`
}

// pageSize bounds each list request, so that a large list does not load the API server.
const pageSize = 500

// Describe implements engine.Describer.
func (l *List) Describe() string {
	where := "all namespaces"
	if l.Namespace != "" {
		where = "namespace " + l.Namespace
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
	var r dynamic.ResourceInterface = c.Dynamic.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace && l.Namespace != "" {
		r = c.Dynamic.Resource(m.Resource).Namespace(l.Namespace)
	} else if l.Namespace != "" {
		return nil, fmt.Errorf("namespace: %s is cluster-scoped; remove namespace", l.Kind)
	}
	keepItems := l.Items == nil || *l.Items
	items, names := []any{}, []any{}
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
	out := engine.Outputs{"count": len(names), "names": names}
	if keepItems {
		out["items"] = items
	}
	return out, nil
}
