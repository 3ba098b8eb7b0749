package kubeapply

import (
	"fmt"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"planrun.dev/planrun/steps/kube"
)

// whereEnv is what a where expression is compiled against: the object as the API server has it.
var whereEnv = map[string]any{"object": map[string]any{}}

// compileWhere compiles a where expression ("" : nil, every object is kept).
func compileWhere(src string) (*vm.Program, error) {
	if src == "" {
		return nil, nil
	}
	p, err := expr.Compile(src, expr.Env(whereEnv), expr.AsBool())
	if err != nil {
		return nil, fmt.Errorf("where: %s", oneLine(err.Error()))
	}
	return p, nil
}

// matchesWhere reports whether where holds for o (true when where is nil).
func matchesWhere(where *vm.Program, src, kind string, o *unstructured.Unstructured) (bool, error) {
	if where == nil {
		return true, nil
	}
	v, err := expr.Run(where, map[string]any{"object": o.Object})
	if err != nil {
		return false, fmt.Errorf("%s: where %s: %s", kube.ObjectName(kind, o.GetNamespace(), o.GetName()), src, oneLine(err.Error()))
	}
	ok, _ := v.(bool)
	return ok, nil
}
