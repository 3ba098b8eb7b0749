package engine

import (
	"fmt"
	"reflect"

	"github.com/expr-lang/expr/conf"
	"gopkg.in/yaml.v3"
)

// ObjectExpr is a condition a step evaluates once per object it handles: kube.patch's where,
// kube.restore's transform when, kube.wait's condition. V is a struct whose fields, tagged
// `expr:"name"`, are the variables the step hands the expression for each object (object,
// items, count...); the expression also sees params, steps and run like every expression of the
// plan, so no value is ever spliced into its source.
//
// It is compiled at load time against those variables (a typo in a name or a result that cannot
// be a boolean is a load error with file:line:col), and held to the engine's rule at run time: a
// result that is not true or false, nil included, is an error, never false.
type ObjectExpr[V any] struct {
	expr Expr
}

func (e *ObjectExpr[V]) decodeNode(d *decoder, n *yaml.Node) error {
	compiled, err := d.decodeExpr(n, func(src string, pos Pos) (*Expr, error) {
		cfg, err := d.exprs.objectConfig(reflect.TypeFor[V]())
		if err != nil {
			return nil, errorf(pos, "%v", err)
		}
		return d.exprs.compileIn(cfg, src, pos, true)
	})
	if err != nil {
		return err
	}
	e.expr = *compiled
	return nil
}

// Compiled reports whether the expression was given (an optional field left empty was not).
func (e *ObjectExpr[V]) Compiled() bool { return e.expr.Compiled() }

// String is the expression's source.
func (e *ObjectExpr[V]) String() string { return e.expr.Source }

// Pos is where the expression is in the plan.
func (e *ObjectExpr[V]) Pos() Pos { return e.expr.Pos }

// EvalBool evaluates the expression for one object. Errors are PosErrors at the expression.
func (e *ObjectExpr[V]) EvalBool(rc *RunContext, vars V) (bool, error) {
	env := rc.env.vars()
	v := reflect.ValueOf(vars)
	for i, name := range objectVarNames(v.Type()) {
		if name != "" {
			env[name] = v.Field(i).Interface()
		}
	}
	return e.expr.evalBoolVars(env)
}

// objectVarNames are the expression names of the fields of t ("" for a field without an expr
// tag, which is not a variable).
func objectVarNames(t reflect.Type) []string {
	names := make([]string, t.NumField())
	for i := range names {
		names[i] = t.Field(i).Tag.Get("expr")
	}
	return names
}

// objectConfig is the configuration ObjectExprs with variables t compile against: the plan's
// environment plus t's fields. Built once per plan and t.
func (c *exprCompiler) objectConfig(t reflect.Type) (*conf.Config, error) {
	if cfg, ok := c.objConfigs[t]; ok {
		return cfg, nil
	}
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("internal: the variables of an object expression must be a struct, not %s", t)
	}
	vars := c.env.vars()
	for i, name := range objectVarNames(t) {
		if name == "" {
			continue
		}
		if _, taken := vars[name]; taken {
			return nil, fmt.Errorf("internal: object expression variable %q of %s hides the plan's %s", name, t, name)
		}
		vars[name] = reflect.Zero(t.Field(i).Type).Interface()
	}
	if c.objConfigs == nil {
		c.objConfigs = map[reflect.Type]*conf.Config{}
	}
	cfg := newConfig(vars)
	c.objConfigs[t] = cfg
	return cfg, nil
}

// exprField is implemented by the config field types that compile their scalar themselves as a
// bare expression: the loader leaves their ${{ }} alone, and the schema calls them strings.
type exprField interface{ isExprField() }

func (*Expr) isExprField()          {}
func (*ObjectExpr[V]) isExprField() {}

var exprFieldType = reflect.TypeFor[exprField]()

// isExprField reports whether a config field of type t holds a bare expression.
func isExprField(t reflect.Type) bool { return reflect.PointerTo(t).Implements(exprFieldType) }
