// Package kubeget implements kube.get and kube.list: read objects into outputs that conditions
// and later steps use.
package kubeget

import (
	"context"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.get",
		Doc:  "Read one object; outputs found and object (optional: true when it may not exist).",
		New:  func() engine.Action { return new(Get) },
	})
}

// Get reads one object.
type Get struct {
	kube.ClusterRef `yaml:",inline"`
	APIVersion      string `yaml:"apiVersion" plan:"required" doc:"API version of the object, such as apps/v1."`
	Kind            string `yaml:"kind" plan:"required" doc:"Kind of the object, such as Deployment."`
	Namespace       string `yaml:"namespace" doc:"Namespace of a namespaced object."`
	Name            string `yaml:"name" plan:"required" doc:"Name of the object."`
	Optional        bool   `yaml:"optional" doc:"A missing object is not an error: outputs.found is false."`
}

var (
	_ engine.Action     = (*Get)(nil)
	_ engine.Describer  = (*Get)(nil)
	_ kube.AccessNeeder = (*Get)(nil)
)

// Access implements kube.AccessNeeder:
//   - get on the object's resource: the object is read.
func (g *Get) Access() []kube.Rule {
	return []kube.Rule{kube.KindRule(g.APIVersion, g.Kind, "get")}
}

// Describe implements engine.Describer.
func (g *Get) Describe() string {
	return "get " + kube.ObjectName(g.Kind, g.Namespace, g.Name)
}

// Run implements engine.Action.
func (g *Get) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	c, err := g.Client(rc)
	if err != nil {
		return nil, err
	}
	m, err := c.Mapping(g.APIVersion, g.Kind)
	if err != nil {
		return nil, err
	}
	if err := checkNamespace(m, g.Namespace, g.Kind); err != nil {
		return nil, err
	}
	obj, err := c.Resource(m, g.Namespace).Get(ctx, g.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		if g.Optional {
			return engine.Outputs{"found": false}, nil
		}
		return nil, fmt.Errorf("%s not found (set optional: true if it may be absent)", kube.ObjectName(g.Kind, g.Namespace, g.Name))
	}
	if err != nil {
		return nil, kube.ObjectError(g.Kind, g.Namespace, g.Name, err)
	}
	return engine.Outputs{"found": true, "object": obj.Object}, nil
}

// checkNamespace catches a namespace given for a cluster-scoped kind, or missing for a
// namespaced one, before the API server answers with something less clear.
func checkNamespace(m *meta.RESTMapping, ns, kind string) error {
	namespaced := m.Scope.Name() == meta.RESTScopeNameNamespace
	switch {
	case namespaced && ns == "":
		return fmt.Errorf("namespace: required, %s is namespaced", kind)
	case !namespaced && ns != "":
		return errors.New("namespace: " + kind + " is cluster-scoped; remove namespace")
	}
	return nil
}
