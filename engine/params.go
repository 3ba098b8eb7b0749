package engine

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Param types and the Go types their values have in expressions.
var paramGoTypes = map[string]reflect.Type{
	"string": reflect.TypeOf(""),
	"int":    reflect.TypeOf(0),
	"bool":   reflect.TypeOf(false),
	"list":   reflect.TypeOf([]any{}),
	"map":    reflect.TypeOf(map[string]any{}),
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ParamValues are param values given from outside the plan.
type ParamValues struct {
	// Set holds name=value pairs from --set; the value is parsed by the param's type
	// (lists and maps in YAML flow syntax: [a, b], {k: v}).
	Set []string
	// Files are --values files: YAML mappings of param name to value. Later files win; --set wins
	// over all files.
	Files []string
	// Fixed are values recorded by an earlier run; resume uses them so that a run keeps the
	// params it started with.
	Fixed map[string]any
	// Mappings are values files already read: YAML mappings of param name to value inside
	// another file (a fleet's targets), whose errors point into it. They come after Files.
	Mappings []ValuesMapping
}

// ValuesMapping is a mapping of param values at a place in a file.
type ValuesMapping struct {
	File string
	Node *yaml.Node
}

func (pv ParamValues) empty() bool {
	return len(pv.Set) == 0 && len(pv.Files) == 0 && pv.Fixed == nil && len(pv.Mappings) == 0
}

func paramType(p *Param) string {
	if p.Type == "" {
		return "string"
	}
	return p.Type
}

// resolveParams checks the param declarations and computes their values.
func (l *loader) resolveParams(root *yaml.Node, given ParamValues, requireAll bool) {
	p := l.plan
	declared := map[string]*yaml.Node{} // name -> key node, for positions
	if n := mappingValue(root, "params"); n != nil && n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			declared[n.Content[i].Value] = n.Content[i]
		}
	}
	names := make([]string, 0, len(p.Params))
	for name := range p.Params {
		names = append(names, name)
	}
	sort.Strings(names)

	values := map[string]any{}
	for _, name := range names {
		decl, key := p.Params[name], declared[name]
		pos := l.d.pos(key)
		if !identRE.MatchString(name) {
			l.errs = append(l.errs, errorf(pos, "param name %q must be an identifier (letters, digits, _) so expressions can use params.%s", name, name))
		}
		if decl == nil {
			l.errs = append(l.errs, errorf(pos, "param %q needs a declaration such as {type: string}", name))
			continue
		}
		if _, ok := paramGoTypes[paramType(decl)]; !ok {
			l.errs = append(l.errs, errorf(pos, "param %q has unknown type %q (known: bool, int, list, map, string)", name, decl.Type))
			continue
		}
		if decl.Default.Kind != 0 && !isNull(&decl.Default) {
			if decl.Required {
				l.errs = append(l.errs, errorf(l.d.pos(&decl.Default), "param %q is required and has a default; a required param takes its value from --set or --values, so drop one of the two", name))
			}
			v, err := l.d.paramValue(&decl.Default, paramType(decl))
			if err != nil {
				l.errs = append(l.errs, prefixed(l.d.pos(&decl.Default), fmt.Sprintf("default of param %q: ", name), err))
				continue
			}
			values[name] = v
		}
	}

	if given.Fixed != nil {
		for name, v := range given.Fixed {
			if _, ok := p.Params[name]; ok {
				values[name] = v
			}
		}
	}
	// bad: params whose given value was refused, and "*" when a values file could not be read:
	// a missing required param is then a consequence, not a second problem to report.
	bad := map[string]bool{}
	for _, file := range given.Files {
		l.readValuesFile(file, values, bad)
	}
	for _, m := range given.Mappings {
		d := &decoder{file: m.File, maxAliased: aliasBudget(0)}
		l.readValues(d, m.Node, values, bad)
		l.errs = append(l.errs, d.errs...)
	}
	for _, kv := range given.Set {
		name, raw, ok := strings.Cut(kv, "=")
		decl := p.Params[name]
		switch {
		case !ok:
			l.errs = append(l.errs, errorf(Pos{File: "--set"}, "--set %s: expected name=value", kv))
			bad["*"] = true
			continue
		case decl == nil:
			l.errs = append(l.errs, errorf(Pos{File: "--set"}, "--set %s: the plan has no param %q (params: %s)", kv, name, strings.Join(names, ", ")))
			continue
		}
		v, err := parseParamString(raw, paramType(decl))
		if err != nil {
			l.errs = append(l.errs, errorf(Pos{File: "--set"}, "--set %s: %s", setLabel(kv, name), messageOf(err)))
			bad[name] = true
			continue
		}
		values[name] = v
	}

	for _, name := range names {
		decl := p.Params[name]
		if decl == nil {
			continue
		}
		if _, ok := values[name]; !ok {
			if decl.Required && requireAll && !bad[name] && !bad["*"] {
				l.errs = append(l.errs, errorf(l.d.pos(declared[name]), "param %q is required: give it with --set %s=... or --values FILE", name, name))
			}
			l.paramsMissing = l.paramsMissing || decl.Required
			if t, ok := paramGoTypes[paramType(decl)]; ok {
				values[name] = zeroParam(t)
			}
		}
	}
	p.Values = values
	p.paramValue = paramStruct(p.Params, values)
}

func zeroParam(t reflect.Type) any {
	switch t.Kind() {
	case reflect.Slice:
		return []any{}
	case reflect.Map:
		return map[string]any{}
	}
	return reflect.Zero(t).Interface()
}

// readValuesFile adds the values of a --values file. Its aliases count against a budget of its
// own (see nodevalue.go), and a key written twice is an error, not a silent override.
func (l *loader) readValuesFile(file string, values map[string]any, bad map[string]bool) {
	data, err := readInput(file, "values file")
	if err != nil {
		l.errs = append(l.errs, asPosError(Pos{File: file}, err))
		bad["*"] = true
		return
	}
	doc, perr := parseYAML(file, "values file", data)
	if perr != nil {
		l.errs = append(l.errs, perr)
		bad["*"] = true
		return
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return
	}
	d := &decoder{file: file, maxAliased: aliasBudget(len(data))}
	defer func() { l.errs = append(l.errs, d.errs...) }() // a refused alias, recorded once
	l.readValues(d, doc.Content[0], values, bad)
}

// readValues reads a mapping of param names to values into values.
func (l *loader) readValues(d *decoder, root *yaml.Node, values map[string]any, bad map[string]bool) {
	if root.Kind == yaml.AliasNode {
		root = root.Alias
	}
	if root.Kind != yaml.MappingNode {
		l.errs = append(l.errs, errorf(d.pos(root), "values must be a mapping of param names to values, not %s", kindName(root)))
		bad["*"] = true
		return
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if first := seen[k.Value]; first != nil {
			l.errs = append(l.errs, errorf(d.pos(k), "param %q is already set in this file (at %d:%d)", k.Value, first.Line, first.Column))
			bad[k.Value] = true
			continue
		}
		seen[k.Value] = k
		decl := l.plan.Params[k.Value]
		if decl == nil {
			l.errs = append(l.errs, errorf(d.pos(k), "the plan has no param %q", k.Value))
			continue
		}
		val, err := d.paramValue(v, paramType(decl))
		if err != nil {
			if !errors.Is(err, ErrTooManyAliases) {
				l.errs = append(l.errs, prefixed(d.pos(v), fmt.Sprintf("param %q: ", k.Value), err))
			}
			bad[k.Value] = true
			continue
		}
		values[k.Value] = val
	}
}

// setLabel is how a --set argument is named in a message: as given, unless it is long or holds
// control bytes (the value is quoted in the message anyway).
func setLabel(kv, name string) string {
	if q := strconv.Quote(kv); len(kv) <= maxQuoted && q[1:len(q)-1] == kv {
		return kv
	}
	return name + "=..."
}

// prefixed is err at its own position (or at pos) with prefix before its message.
func prefixed(pos Pos, prefix string, err error) *PosError {
	pe := asPosError(pos, err)
	return &PosError{Pos: pe.Pos, Msg: prefix + pe.Msg, Err: err}
}

// messageOf is an error's message without its position.
func messageOf(err error) string {
	var pe *PosError
	if errors.As(err, &pe) {
		return pe.Msg
	}
	return err.Error()
}

// paramValue decodes a YAML value as a param of the given type.
func (d *decoder) paramValue(n *yaml.Node, typ string) (any, error) {
	target := n
	if target.Kind == yaml.AliasNode {
		target = target.Alias
	}
	var ok bool
	switch typ {
	case "string":
		ok = target.Kind == yaml.ScalarNode && target.Tag == "!!str"
	case "int":
		ok = target.Kind == yaml.ScalarNode && target.Tag == "!!int"
	case "bool":
		ok = target.Kind == yaml.ScalarNode && target.Tag == "!!bool"
	case "list":
		ok = target.Kind == yaml.SequenceNode
	case "map":
		ok = target.Kind == yaml.MappingNode
	}
	if !ok {
		return nil, errorf(d.pos(target), "expected %s, got %s", typeArticle(typ), kindName(target))
	}
	v, err := d.value(n)
	if _, isInt := v.(int); typ == "int" && err == nil && !isInt {
		// yaml.v3 gives int64 or uint64 for integers that do not fit an int.
		return nil, errorf(d.pos(target), "integer %s is too large (at most %d)", target.Value, math.MaxInt)
	}
	return v, err
}

// parseParamString parses a --set value by the param's type. Lists and maps are YAML flow
// syntax, parsed as any YAML from outside: bounded aliases, one document.
func parseParamString(raw, typ string) (any, error) {
	switch typ {
	case "string":
		return raw, nil
	case "int":
		i, err := strconv.Atoi(raw)
		if err != nil {
			return nil, fmt.Errorf("expected an integer, got %s", quoteLong(raw))
		}
		return i, nil
	case "bool":
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return nil, fmt.Errorf("expected true or false, got %s", quoteLong(raw))
		}
		return b, nil
	}
	doc, perr := parseYAML("--set", "--set value", []byte(raw))
	if perr != nil || doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, fmt.Errorf("expected %s in YAML flow syntax, got %s", typeArticle(typ), quoteLong(raw))
	}
	d := &decoder{file: "--set", maxAliased: aliasBudget(len(raw))}
	v, err := d.paramValue(doc.Content[0], typ)
	if err != nil {
		return nil, errors.New(messageOf(err))
	}
	return v, nil
}

func typeArticle(typ string) string {
	switch typ {
	case "int":
		return "an integer"
	case "bool":
		return "a boolean"
	case "list":
		return "a list"
	case "map":
		return "a mapping"
	}
	return "a string"
}

// paramStruct builds a struct value with one field per param, tagged with the param's name, so
// that expr-lang type-checks params.x against the declared type and rejects unknown params.
func paramStruct(decls map[string]*Param, values map[string]any) any {
	names := make([]string, 0, len(decls))
	for name, d := range decls {
		if d != nil && identRE.MatchString(name) {
			if _, ok := paramGoTypes[paramType(d)]; ok {
				names = append(names, name)
			}
		}
	}
	sort.Strings(names)
	fields := make([]reflect.StructField, len(names))
	for i, name := range names {
		fields[i] = reflect.StructField{
			Name: fmt.Sprintf("P%d", i),
			Type: paramGoTypes[paramType(decls[name])],
			Tag:  reflect.StructTag(fmt.Sprintf(`expr:%q`, name)),
		}
	}
	v := reflect.New(reflect.StructOf(fields)).Elem()
	for i, name := range names {
		if val, ok := values[name]; ok && val != nil {
			rv := reflect.ValueOf(val)
			if rv.Type().ConvertibleTo(fields[i].Type) {
				v.Field(i).Set(rv.Convert(fields[i].Type))
			}
		}
	}
	return v.Interface()
}
