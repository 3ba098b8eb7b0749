package engine

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/checker"
	"github.com/expr-lang/expr/compiler"
	"github.com/expr-lang/expr/conf"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/optimizer"
	"github.com/expr-lang/expr/vm"
	"gopkg.in/yaml.v3"
)

// Expr is an expr-lang expression compiled once, at load time, against the plan's typed
// environment (see Env). A step's config field of type Expr receives a bare expression such as
// `steps.count.outputs.items > 3` and evaluates it at run time with RunContext.Eval.
type Expr struct {
	Source  string
	Pos     Pos
	program *vm.Program
}

func (e *Expr) decodeNode(d *decoder, n *yaml.Node) error {
	compiled, err := d.decodeExpr(n, func(src string, pos Pos) (*Expr, error) {
		return d.exprs.compile(src, pos, false)
	})
	if err != nil {
		return err
	}
	*e = *compiled
	return nil
}

// decodeExpr compiles the bare expression in scalar n with compile, once: decoding the same
// node again at run time finds the program compiled at load time.
func (d *decoder) decodeExpr(n *yaml.Node, compile func(src string, pos Pos) (*Expr, error)) (*Expr, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return nil, fmt.Errorf("expected an expression, got %s", kindName(n))
	}
	if c, ok := d.compiled[n]; ok {
		return c, nil
	}
	if d.exprs == nil {
		return nil, errors.New("internal: expression outside of a plan")
	}
	src, offset := unwrapTemplate(n.Value)
	if i := strings.Index(src, openDelim); i >= 0 {
		return nil, errorf(scalarPos(d.pos(n), n, offset+i), "%s inside an expression: params, steps and run are variables here (write params.x, not %s params.x %s)", openDelim, openDelim, closeDelim)
	}
	compiled, err := compile(src, scalarPos(d.pos(n), n, offset))
	if err != nil {
		return nil, err
	}
	if d.compiled != nil {
		d.compiled[n] = compiled
	}
	return compiled, nil
}

// Compiled reports whether the expression was compiled (an optional field left empty was not).
func (e *Expr) Compiled() bool { return e != nil && e.program != nil }

// Eval runs the expression against env.
func (e *Expr) Eval(env Env) (any, error) { return e.evalVars(env.vars()) }

func (e *Expr) evalVars(vars map[string]any) (any, error) {
	out, err := expr.Run(e.program, vars)
	if err != nil {
		return nil, &PosError{Pos: e.Pos, Msg: fmt.Sprintf("%s: %s", e.Source, firstLine(err.Error())), Err: err}
	}
	return out, nil
}

// EvalBool runs the expression and insists on a boolean: a `when` that yields nil or a string
// is an error, never silently false.
func (e *Expr) EvalBool(env Env) (bool, error) { return e.evalBoolVars(env.vars()) }

func (e *Expr) evalBoolVars(vars map[string]any) (bool, error) {
	out, err := e.evalVars(vars)
	if err != nil {
		return false, err
	}
	b, ok := out.(bool)
	if !ok {
		return false, &PosError{Pos: e.Pos, Msg: fmt.Sprintf("%s: expected true or false, got %s", e.Source, describeValue(out))}
	}
	return b, nil
}

func describeValue(v any) string {
	if v == nil {
		return "nil (is a name misspelled?)"
	}
	return fmt.Sprintf("%T %v", v, v)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[:i])
	}
	return s
}

// StepView is what expressions see of a step: steps["backup"].outputs.count.
type StepView struct {
	Status  string         `expr:"status"`
	Outputs map[string]any `expr:"outputs"`
}

// RunInfo is what expressions see of the run: run.id, run.dryRun.
type RunInfo struct {
	ID     string `expr:"id"`
	DryRun bool   `expr:"dryRun"`
}

// Env is the environment expressions are evaluated in. Params is a struct value built by
// paramsType, so that expressions are type-checked against the declared param types.
type Env struct {
	Params any
	Steps  map[string]StepView
	Run    RunInfo
}

func (e Env) vars() map[string]any {
	return map[string]any{"params": e.Params, "steps": e.Steps, "run": e.Run}
}

// exprCompiler compiles every expression of one plan against its typed environment.
type exprCompiler struct {
	env     Env
	stepIDs map[string]bool
	self    string // id of the step whose expressions are being compiled
	// readable says whether the expressions being compiled may read step id, and why not: a
	// step that has not run yet has no status or outputs (see runsbefore.go). nil: any step.
	readable func(id string, statusOnly bool) (bool, string)
	// config is built once per plan: expr.Compile would rebuild it from the environment for
	// each of a large plan's thousands of expressions, a quarter of the load time.
	config *conf.Config
	// objConfigs are the configurations of ObjectExpr, one per set of object variables.
	objConfigs map[reflect.Type]*conf.Config
}

func newConfig(vars map[string]any) *conf.Config {
	cfg := conf.CreateNew()
	expr.Env(vars)(cfg)
	cfg.Check()
	return cfg
}

// compileProgram is expr.Compile with a shared configuration.
func (c *exprCompiler) compileProgram(cfg *conf.Config, src string) (*vm.Program, error) {
	tree, err := checker.ParseCheck(src, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Optimize {
		if err := optimizer.Optimize(&tree.Node, cfg); err != nil {
			var fe *file.Error
			if errors.As(err, &fe) {
				return nil, fe.Bind(tree.Source)
			}
			return nil, err
		}
	}
	return compiler.Compile(tree, cfg)
}

// compile compiles src. With asBool, an expression whose type is known and is not bool is an
// error; expr's own AsBool option is not used because it turns nil into false at run time, and a
// misspelled output name must fail the step, not skip it.
func (c *exprCompiler) compile(src string, pos Pos, asBool bool) (*Expr, error) {
	if c.config == nil {
		c.config = newConfig(c.env.vars())
	}
	return c.compileIn(c.config, src, pos, asBool)
}

// compileIn is compile against the configuration cfg.
func (c *exprCompiler) compileIn(cfg *conf.Config, src string, pos Pos, asBool bool) (*Expr, error) {
	if strings.TrimSpace(src) == "" {
		return nil, errorf(pos, "empty expression")
	}
	program, err := c.compileProgram(cfg, src)
	if err != nil {
		c.explainNoField(err)
		return nil, exprError(pos, src, err)
	}
	if t := program.Node().Type(); asBool && t != nil && t.Kind() != reflect.Interface && t.Kind() != reflect.Bool {
		return nil, errorf(pos, "expression %s gives %s, not true or false", quoteLong(src), t)
	}
	if err := c.checkStepRefs(program, pos); err != nil {
		return nil, err
	}
	return &Expr{Source: src, Pos: pos, program: program}, nil
}

// noFieldRE matches expr-lang's `type struct { P0 string "expr:\"ns\"" } has no field nope`.
var noFieldRE = regexp.MustCompile(`^type (.*) has no field (\S+)$`)

// explainNoField rewrites expr-lang's message about a missing field of params, of a step or of
// run: it names Go types (params is a generated struct), an operator wants the names they can use.
func (c *exprCompiler) explainNoField(err error) {
	var fe *file.Error
	if !errors.As(err, &fe) {
		return
	}
	m := noFieldRE.FindStringSubmatch(fe.Message)
	if m == nil {
		return
	}
	for _, k := range []struct {
		t          reflect.Type
		what, list string
	}{
		{reflect.TypeOf(c.env.Params), "param %q", "params"},
		{reflect.TypeOf(StepView{}), "field %q of a step", "fields"},
		{reflect.TypeOf(RunInfo{}), "field %q of run", "fields"},
	} {
		if k.t == nil || k.t.Kind() != reflect.Struct || k.t.String() != m[1] {
			continue
		}
		names := make([]string, k.t.NumField())
		for i := range names {
			names[i] = k.t.Field(i).Tag.Get("expr")
		}
		known := fmt.Sprintf("%s: %s", k.list, strings.Join(names, ", "))
		if len(names) == 0 {
			known = "the plan has no params"
		}
		fe.Message = fmt.Sprintf("unknown "+k.what+" (%s)", m[2], known)
		return
	}
}

// checkStepRefs rejects steps["x"] / steps.x for an x that is not a step of the plan, which the
// type checker cannot see because steps is a map.
func (c *exprCompiler) checkStepRefs(program *vm.Program, pos Pos) error {
	node := program.Node()
	status := statusReads{}
	ast.Walk(&node, status)
	v := &stepRefVisitor{known: c.stepIDs, self: c.self, readable: c.readable, statusOnly: status}
	ast.Walk(&node, v)
	if v.bad != "" {
		return errorf(pos, "%s", v.bad)
	}
	return nil
}

type stepRefVisitor struct {
	known    map[string]bool
	self     string
	readable func(id string, statusOnly bool) (bool, string)
	// statusOnly are the steps["x"] nodes whose .status alone is read.
	statusOnly statusReads
	bad        string
}

// statusReads collects the steps["x"] nodes of steps["x"].status.
type statusReads map[ast.Node]bool

func (s statusReads) Visit(node *ast.Node) {
	m, ok := (*node).(*ast.MemberNode)
	if !ok {
		return
	}
	if prop, ok := m.Property.(*ast.StringNode); ok && prop.Value == "status" {
		if inner, ok := m.Node.(*ast.MemberNode); ok {
			if id, ok := inner.Node.(*ast.IdentifierNode); ok && id.Value == "steps" {
				s[inner] = true
			}
		}
	}
}

func (v *stepRefVisitor) Visit(node *ast.Node) {
	m, ok := (*node).(*ast.MemberNode)
	if !ok || v.bad != "" {
		return
	}
	id, ok := m.Node.(*ast.IdentifierNode)
	if !ok || id.Value != "steps" {
		return
	}
	prop, ok := m.Property.(*ast.StringNode)
	if !ok {
		return
	}
	switch {
	case !v.known[prop.Value]:
		v.bad = fmt.Sprintf("unknown step %q in expression", prop.Value)
	case prop.Value == v.self:
		v.bad = fmt.Sprintf("step %q refers to itself in an expression", prop.Value)
	case v.readable != nil:
		if ok, why := v.readable(prop.Value, v.statusOnly[m]); !ok {
			v.bad = fmt.Sprintf("step %q %s: its status and outputs are not known here", prop.Value, why)
		}
	}
}

func exprError(pos Pos, src string, err error) *PosError {
	var fe *file.Error
	if errors.As(err, &fe) {
		p := pos
		if fe.Line > 1 {
			p.Line += fe.Line - 1
			p.Col = fe.Column + 1
		} else {
			p.Col += fe.Column
		}
		return &PosError{Pos: p, Msg: fmt.Sprintf("invalid expression %s: %s", quoteLong(src), fe.Message), Err: err}
	}
	return &PosError{Pos: pos, Msg: fmt.Sprintf("invalid expression %s: %s", quoteLong(src), firstLine(err.Error())), Err: err}
}

// scalarPos is the position of byte offset within a scalar's value, allowing for the opening
// quote of a quoted scalar. Good enough to point an editor at the right expression.
func scalarPos(p Pos, n *yaml.Node, offset int) Pos {
	if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		offset++
	}
	if n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0 {
		return p // block scalars start on the next line; the scalar's own position is clearer
	}
	p.Col += offset
	return p
}

const (
	openDelim  = "${{"
	closeDelim = "}}"
)

// unwrapTemplate accepts `x > 1` and `${{ x > 1 }}` alike for fields that are expressions by
// nature (when, assert's that), returning the bare source and its offset in s.
func unwrapTemplate(s string) (string, int) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, openDelim) && strings.HasSuffix(t, closeDelim) && strings.Count(t, openDelim) == 1 {
		start := strings.Index(s, openDelim) + len(openDelim)
		return s[start:strings.LastIndex(s, closeDelim)], start
	}
	return s, 0
}

// Template is a scalar of a step's `with` holding ${{ }} expressions. A scalar that is exactly
// one expression keeps the expression's type (a list stays a list); otherwise the pieces are
// joined into a string.
type Template struct {
	node  *yaml.Node
	whole *Expr
	parts []templatePart
}

type templatePart struct {
	text string
	expr *Expr
}

func isTemplate(s string) bool { return strings.Contains(s, openDelim) }

func (c *exprCompiler) compileTemplate(n *yaml.Node, pos Pos) (*Template, error) {
	s := n.Value
	t := &Template{node: n}
	if trimmed := strings.TrimSpace(s); strings.HasPrefix(trimmed, openDelim) && strings.HasSuffix(trimmed, closeDelim) &&
		strings.Count(trimmed, openDelim) == 1 {
		src, off := unwrapTemplate(s)
		e, err := c.compile(src, scalarPos(pos, n, off), false)
		if err != nil {
			return nil, err
		}
		t.whole = e
		return t, nil
	}
	rest, off := s, 0
	for rest != "" {
		i := strings.Index(rest, openDelim)
		if i < 0 {
			t.parts = append(t.parts, templatePart{text: rest})
			break
		}
		j := strings.Index(rest[i:], closeDelim)
		if j < 0 {
			return nil, errorf(scalarPos(pos, n, off+i), "unterminated %s: missing %s", openDelim, closeDelim)
		}
		if i > 0 {
			t.parts = append(t.parts, templatePart{text: rest[:i]})
		}
		src := rest[i+len(openDelim) : i+j]
		e, err := c.compile(src, scalarPos(pos, n, off+i+len(openDelim)), false)
		if err != nil {
			return nil, err
		}
		t.parts = append(t.parts, templatePart{expr: e})
		off += i + j + len(closeDelim)
		rest = rest[i+j+len(closeDelim):]
	}
	return t, nil
}

// staticType is the expression's type as far as the checker knows it (nil for "any").
func (t *Template) staticType() reflect.Type {
	if t.whole == nil {
		return reflect.TypeOf("")
	}
	typ := t.whole.program.Node().Type()
	if typ == nil || typ.Kind() == reflect.Interface {
		return nil
	}
	return typ
}

// render evaluates the template into a node that replaces the original scalar.
func (t *Template) render(env Env) (*yaml.Node, error) {
	var value any
	if t.whole != nil {
		v, err := t.whole.Eval(env)
		if err != nil {
			return nil, err
		}
		if v == nil {
			return nil, &PosError{Pos: t.whole.Pos, Msg: fmt.Sprintf("%s: evaluated to nil (is a name misspelled?)", t.whole.Source)}
		}
		value = v
	} else {
		var b strings.Builder
		for _, p := range t.parts {
			if p.expr == nil {
				b.WriteString(p.text)
				continue
			}
			v, err := p.expr.Eval(env)
			if err != nil {
				return nil, err
			}
			if v == nil {
				return nil, &PosError{Pos: p.expr.Pos, Msg: fmt.Sprintf("%s: evaluated to nil (is a name misspelled?)", p.expr.Source)}
			}
			b.WriteString(stringify(v))
		}
		value = b.String()
	}
	out := &yaml.Node{}
	if err := out.Encode(value); err != nil {
		return nil, fmt.Errorf("%s: cannot use the value %v: %w", t.node.Value, value, err)
	}
	setPositions(out, t.node.Line, t.node.Column)
	return out, nil
}

func setPositions(n *yaml.Node, line, col int) {
	n.Line, n.Column = line, col
	for _, c := range n.Content {
		setPositions(c, line, col)
	}
}

// stringify formats a value spliced into a string: scalars as written, lists and maps as JSON.
func stringify(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case fmt.Stringer:
		return v.String()
	case map[string]any, []any:
		b, err := jsonMarshal(v)
		if err == nil {
			return string(b)
		}
	}
	return fmt.Sprint(v)
}

// compatible reports whether a value of static type from may be decoded into a field of type to.
func compatible(from, to reflect.Type) bool {
	if from == nil {
		return true
	}
	for to.Kind() == reflect.Pointer {
		to = to.Elem()
	}
	if reflect.PointerTo(to).Implements(nodeDecoderType) {
		return from.Kind() == reflect.String // Duration and Expr are written as strings
	}
	switch to.Kind() {
	case reflect.Interface:
		return true
	case reflect.String:
		// A number or boolean spliced into a string field is written as text: [sleep, ${{ params.n }}].
		switch from.Kind() {
		case reflect.String, reflect.Bool, reflect.Int, reflect.Int64, reflect.Float64:
			return true
		}
		return false
	case reflect.Bool:
		return from.Kind() == reflect.Bool
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		switch from.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			return true
		}
		return false
	case reflect.Float32, reflect.Float64:
		switch from.Kind() {
		case reflect.Float32, reflect.Float64, reflect.Int, reflect.Int64:
			return true
		}
		return false
	case reflect.Slice:
		return from.Kind() == reflect.Slice || from.Kind() == reflect.Array
	case reflect.Map, reflect.Struct:
		return from.Kind() == reflect.Map || from.Kind() == reflect.Struct
	}
	return true
}
