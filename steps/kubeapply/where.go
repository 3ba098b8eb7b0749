package kubeapply

import (
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

// WhereVars are what kube.patch's where sees besides params, steps and run: the object as the
// API server has it now.
type WhereVars struct {
	Object map[string]any `expr:"object"`
}

// matchesWhere reports whether where holds for o; an error names the object.
func (p *Patch) matchesWhere(rc *engine.RunContext, o *unstructured.Unstructured) (bool, error) {
	ok, err := p.Where.EvalBool(rc, WhereVars{Object: o.Object})
	if err != nil {
		return false, fmt.Errorf("%s: where: %w", kube.ObjectName(p.Kind, o.GetNamespace(), o.GetName()), err)
	}
	return ok, nil
}
