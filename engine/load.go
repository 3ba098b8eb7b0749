package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// LoadOptions control how a plan is loaded.
type LoadOptions struct {
	Params ParamValues
	// SkipRequiredParams lets `planrun validate` check a plan's structure without values for its
	// required params.
	SkipRequiredParams bool
}

// Load reads, decodes and validates a plan file. Every problem is reported, as an ErrorList of
// "file:line:col: message" entries, before anything touches a cluster. A path that is not a
// regular file, or a file over MaxFileSize, is refused with one error, before it is read.
func Load(path string, opts LoadOptions) (*Plan, error) {
	data, err := readInput(path, "plan")
	if err != nil {
		return nil, err
	}
	return Parse(path, data, opts)
}

// Parse is Load for a plan already in memory; file is used in error positions.
func Parse(file string, data []byte, opts LoadOptions) (*Plan, error) {
	doc, perr := parseYAML(file, "plan", data)
	if perr != nil {
		return nil, ErrorList{perr}
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, ErrorList{errorf(Pos{File: file, Line: 1, Col: 1}, "empty plan")}
	}
	sum := sha256.Sum256(data)
	l := &loader{
		plan: &Plan{File: file, Source: data, Digest: hex.EncodeToString(sum[:]), byID: map[string]*Step{}},
		d:    &decoder{file: file, maxAliased: aliasBudget(len(data))},
	}
	l.load(doc.Content[0], opts)
	if err := l.errs.Err(); err != nil {
		return nil, err
	}
	return l.plan, nil
}

type loader struct {
	plan  *Plan
	d     *decoder
	errs  ErrorList
	exprs *exprCompiler
	// paramsMissing: required params without values (planrun validate); templates that read
	// params are then filled with zero values, so what they make is not checked.
	paramsMissing bool
}

func (l *loader) load(root *yaml.Node, opts LoadOptions) {
	p := l.plan
	l.d.decode(root, reflect.ValueOf(p).Elem())
	l.errs = append(l.errs, l.d.errs...)
	l.d.errs = nil
	if root.Kind != yaml.MappingNode {
		return
	}
	if v := mappingValue(root, "apiVersion"); v != nil && p.APIVersion != APIVersion {
		l.errs = append(l.errs, errorf(l.d.pos(v), "apiVersion %q is not supported (want %s)", p.APIVersion, APIVersion))
	}
	if v := mappingValue(root, "kind"); v != nil && p.Kind != Kind {
		l.errs = append(l.errs, errorf(l.d.pos(v), "kind %q is not supported (want %s)", p.Kind, Kind))
	}
	if v := mappingValue(mappingValue(root, "metadata"), "name"); v != nil && !nameRE.MatchString(p.Metadata.Name) {
		l.errs = append(l.errs, errorf(l.d.pos(v), "metadata.name %q must be lower case letters, digits and dashes", p.Metadata.Name))
	}
	for name, c := range p.Clusters {
		if c == nil {
			p.Clusters[name] = &Cluster{}
		}
	}

	l.resolveParams(root, opts.Params, !opts.SkipRequiredParams)
	l.collectSteps(root)
	l.compileSteps()
	l.decodeDatastores()
	l.renderClusters(root)
	l.checkRefs()
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	stepIDRE = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
)

// mappingValue returns the value node of key in a mapping node, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// stepNodes pairs each decoded step with its node, for positions: nodes[i] is the node of
// steps[i]. By index, not by *Step: an empty list item decodes to a nil step, which still has a
// node to report it at.
func stepNodes(list *yaml.Node, steps []*Step) []*yaml.Node {
	out := make([]*yaml.Node, len(steps))
	if list != nil && list.Kind == yaml.AliasNode {
		list = list.Alias
	}
	if list == nil || list.Kind != yaml.SequenceNode {
		return out
	}
	for i := range steps {
		if i < len(list.Content) {
			out[i] = list.Content[i]
		}
	}
	return out
}

// collectSteps checks every step's identity and shape and builds the execution order.
func (l *loader) collectSteps(root *yaml.Node) {
	p := l.plan
	hooksNode := mappingValue(root, "hooks")
	hookLists := []struct {
		name  string
		steps []*Step
	}{
		{"PreBackup", p.Hooks.PreBackup}, {"PostBackup", p.Hooks.PostBackup},
		{"PreRestore", p.Hooks.PreRestore}, {"PostRestore", p.Hooks.PostRestore},
	}
	for _, h := range hookLists {
		nodes := stepNodes(mappingValue(hooksNode, h.name), h.steps)
		for i, s := range h.steps {
			l.addStep(s, nodes[i], h.name, nil)
		}
	}
	stepsNode := mappingValue(root, "steps")
	nodes := stepNodes(stepsNode, p.Steps)
	for i, s := range p.Steps {
		l.addStep(s, nodes[i], "", nil)
	}
	if stepsNode != nil && len(p.Steps) == 0 {
		l.errs = append(l.errs, errorf(l.d.pos(stepsNode), "a plan needs at least one step"))
	}

	// Phases: the steps of a phase must be contiguous so that its hooks wrap them once.
	first, last := map[string]int{}, map[string]int{}
	for i, s := range p.Steps {
		if s == nil || s.Phase == "" {
			continue
		}
		if _, ok := first[s.Phase]; !ok {
			first[s.Phase] = i
		} else if last[s.Phase] != i-1 {
			l.errs = append(l.errs, errorf(s.Pos, "step %q: the steps of phase %s must be consecutive (hooks run once around them)", s.ID, s.Phase))
		}
		last[s.Phase] = i
	}
	for _, h := range hookLists {
		phase := strings.TrimPrefix(strings.TrimPrefix(h.name, "Pre"), "Post")
		if _, ok := first[phase]; len(h.steps) > 0 && !ok {
			l.errs = append(l.errs, errorf(l.d.pos(mappingValue(hooksNode, h.name)), "hooks.%s: no step has phase %s, so these hooks would never run", h.name, phase))
		}
	}

	hooksOf := func(name string) []*Step {
		var out []*Step
		for _, h := range hookLists {
			for _, s := range h.steps {
				if h.name == name && s != nil { // nil: an empty step, already reported
					out = append(out, s)
				}
			}
		}
		return out
	}
	for i, s := range p.Steps {
		if s == nil {
			continue
		}
		if s.Phase != "" && first[s.Phase] == i {
			p.order = append(p.order, hooksOf("Pre"+s.Phase)...)
		}
		p.order = append(p.order, s)
		if s.Phase != "" && last[s.Phase] == i {
			p.order = append(p.order, hooksOf("Post"+s.Phase)...)
		}
	}
}

func (l *loader) addStep(s *Step, n *yaml.Node, hook string, parent *Step) {
	if s == nil {
		l.errs = append(l.errs, errorf(l.d.pos(n), "empty step"))
		return
	}
	if n != nil {
		s.Pos = l.d.pos(n)
	}
	s.Hook, s.Parent = hook, parent
	if s.ID != "" {
		switch prev := l.plan.byID[s.ID]; {
		case !stepIDRE.MatchString(s.ID):
			l.errs = append(l.errs, errorf(s.Pos, "step id %q: use letters, digits, '-', '_' and '.'", s.ID))
		case prev != nil:
			l.errs = append(l.errs, errorf(s.Pos, "duplicate step id %q (first at %s)", s.ID, prev.Pos))
		default:
			l.plan.byID[s.ID] = s
		}
	}
	if s.Type != "" {
		t, ok := LookupStepType(s.Type)
		if !ok {
			l.errs = append(l.errs, errorf(l.d.pos(mappingValue(n, "type")), "step %q: unknown step type %q (known: %s)", s.ID, s.Type, strings.Join(stepTypeNames(), ", ")))
		}
		s.stepType = t
	}
	if s.Phase != "" && s.Phase != PhaseBackup && s.Phase != PhaseRestore {
		l.errs = append(l.errs, errorf(l.d.pos(mappingValue(n, "phase")), "step %q: unknown phase %q (known: Backup, Restore)", s.ID, s.Phase))
	}
	if s.Phase != "" && (hook != "" || parent != nil) {
		l.errs = append(l.errs, errorf(l.d.pos(mappingValue(n, "phase")), "step %q: only main steps have a phase", s.ID))
	}
	if s.OnError != "" && s.OnError != OnErrorFail && s.OnError != OnErrorContinue {
		l.errs = append(l.errs, errorf(l.d.pos(mappingValue(n, "onError")), "step %q: onError must be fail or continue, not %q", s.ID, s.OnError))
	}
	if r := s.Retry; r != nil {
		rn := mappingValue(n, "retry")
		// attempts counts the first one: 0 and -1 are both meaningless, not "no retry" and "error".
		if an := mappingValue(rn, "attempts"); an != nil && an.Tag == "!!int" && r.Attempts < 1 {
			l.errs = append(l.errs, errorf(l.d.pos(an), "step %q: retry.attempts must be at least 1 (it counts the first attempt; 1 means no retry), not %d", s.ID, r.Attempts))
		}
		if r.On != "" && r.On != RetryOnTransient && r.On != RetryOnAny {
			l.errs = append(l.errs, errorf(l.d.pos(mappingValue(rn, "on")), "step %q: retry.on must be transient or any, not %q", s.ID, r.On))
		}
	}
	if parent != nil && len(s.Rollback) > 0 {
		l.errs = append(l.errs, errorf(l.d.pos(mappingValue(n, "rollback")), "step %q: a rollback step cannot have its own rollback", s.ID))
	}
	rb := stepNodes(mappingValue(n, "rollback"), s.Rollback)
	for i, r := range s.Rollback {
		if parent == nil {
			l.addStep(r, rb[i], "", s)
		}
	}
}

// allSteps lists every step of the plan: execution order, then rollback steps.
func (p *Plan) allSteps() []*Step {
	var out []*Step
	for _, s := range p.order {
		out = append(out, s)
	}
	for _, s := range p.order {
		for _, r := range s.Rollback {
			if r != nil { // an empty step, already reported
				out = append(out, r)
			}
		}
	}
	return out
}

// compileSteps compiles `when` and the expressions in `with`, decodes `with` strictly into each
// step type's config, and computes step digests.
func (l *loader) compileSteps() {
	p := l.plan
	ids := map[string]bool{}
	for id := range p.byID {
		ids[id] = true
	}
	l.exprs = &exprCompiler{env: Env{Params: p.paramValue, Steps: map[string]StepView{}}, stepIDs: ids}
	l.d.exprs = l.exprs
	readable := p.readableBy()
	for _, s := range p.allSteps() {
		before := len(l.errs)
		l.exprs.self, l.exprs.readable = s.ID, readable(s)
		if s.When.Kind != 0 {
			l.compileWhen(s)
		}
		if s.stepType.New != nil {
			l.decodeWith(s)
		}
		digest, err := l.stepDigest(s)
		l.errs = append(l.errs, l.d.errs...) // a refused alias, recorded once by the decoder
		l.d.errs = nil
		if err != nil && len(l.errs) == before {
			l.errs = append(l.errs, asPosError(s.Pos, err))
		}
		s.Digest = digest
	}
}

func (l *loader) compileWhen(s *Step) {
	n := &s.When
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		l.errs = append(l.errs, errorf(l.d.pos(n), "step %q: when must be an expression, got %s", s.ID, kindName(n)))
		return
	}
	if n.Tag == "!!bool" {
		l.errs = append(l.errs, errorf(l.d.pos(n), "step %q: when: %s is a constant; remove the step or the condition", s.ID, n.Value))
		return
	}
	src, off := unwrapTemplate(n.Value)
	e, err := l.exprs.compile(src, scalarPos(l.d.pos(n), n, off), true)
	if err != nil {
		l.errs = append(l.errs, asPosError(l.d.pos(n), err))
		return
	}
	s.when = e
}

// deferTemplates returns a deferScalar that compiles the ${{ }} scalars into templates, their
// static type checked against the field they fill.
func (l *loader) deferTemplates(templates map[*yaml.Node]*Template) func(n *yaml.Node, t reflect.Type) bool {
	return func(n *yaml.Node, t reflect.Type) bool {
		if n.Tag != "!!str" || !isTemplate(n.Value) {
			return false
		}
		if isExprField(t) {
			return false // a bare expression field; Expr and ObjectExpr decode it themselves
		}
		tmpl, err := l.exprs.compileTemplate(n, l.d.pos(n))
		if err != nil {
			l.d.errs = append(l.d.errs, asPosError(l.d.pos(n), err))
			return true
		}
		if st := tmpl.staticType(); !compatible(st, t) {
			l.d.errorf(n, "%s is %s but this field takes %s", strings.TrimSpace(n.Value), st, goKindName(t))
		}
		templates[n] = tmpl
		return true
	}
}

// decodeWith decodes the step's config. Scalars holding ${{ }} are compiled and set aside, their
// static type checked against the field they fill; they are decoded for real at run time.
func (l *loader) decodeWith(s *Step) {
	s.templates = map[*yaml.Node]*Template{}
	s.exprs = map[*yaml.Node]*Expr{}
	l.d.compiled = s.exprs
	l.d.deferScalar = l.deferTemplates(s.templates)
	defer func() { l.d.deferScalar, l.d.compiled = nil, nil }()
	action := s.stepType.New()
	with := &s.With
	if with.Kind == 0 {
		with = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: s.Pos.Line, Column: s.Pos.Col}
	}
	before := len(l.d.errs)
	l.d.decode(with, reflect.ValueOf(action).Elem())
	for _, e := range l.d.errs[before:] {
		e.Msg = fmt.Sprintf("step %q: with: %s", s.ID, e.Msg)
	}
	stepErrs := l.d.errs[before:]
	l.errs = append(l.errs, l.d.errs...)
	l.d.errs = nil
	if len(stepErrs) == 0 && len(s.templates) == 0 {
		if err := checkConfig(action); err != nil {
			l.errs = append(l.errs, errorf(l.d.pos(with), "step %q: with: %v", s.ID, err))
		}
	}
	s.action = action
}
