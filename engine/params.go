package engine

import (
	"fmt"
	"os"
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
}

func (pv ParamValues) empty() bool { return len(pv.Set) == 0 && len(pv.Files) == 0 && pv.Fixed == nil }

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
			v, err := convertParamNode(&decl.Default, paramType(decl))
			if err != nil {
				l.errs = append(l.errs, errorf(l.d.pos(&decl.Default), "default of param %q: %v", name, err))
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
	for _, file := range given.Files {
		l.readValuesFile(file, values)
	}
	for _, kv := range given.Set {
		name, raw, ok := strings.Cut(kv, "=")
		decl := p.Params[name]
		switch {
		case !ok:
			l.errs = append(l.errs, errorf(Pos{File: "--set"}, "--set %s: expected name=value", kv))
			continue
		case decl == nil:
			l.errs = append(l.errs, errorf(Pos{File: "--set"}, "--set %s: the plan has no param %q (params: %s)", kv, name, strings.Join(names, ", ")))
			continue
		}
		v, err := parseParamString(raw, paramType(decl))
		if err != nil {
			l.errs = append(l.errs, errorf(Pos{File: "--set"}, "--set %s: %v", kv, err))
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
			if decl.Required && requireAll {
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

func (l *loader) readValuesFile(file string, values map[string]any) {
	data, err := os.ReadFile(file)
	if err != nil {
		l.errs = append(l.errs, errorf(Pos{File: file}, "cannot read values file: %v", err))
		return
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		l.errs = append(l.errs, yamlSyntaxError(file, err))
		return
	}
	if doc.Kind == 0 {
		return
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		l.errs = append(l.errs, errorf(Pos{File: file, Line: root.Line, Col: root.Column}, "values file must be a mapping of param names to values"))
		return
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		pos := Pos{File: file, Line: k.Line, Col: k.Column}
		decl := l.plan.Params[k.Value]
		if decl == nil {
			l.errs = append(l.errs, errorf(pos, "the plan has no param %q", k.Value))
			continue
		}
		val, err := convertParamNode(v, paramType(decl))
		if err != nil {
			l.errs = append(l.errs, errorf(Pos{File: file, Line: v.Line, Col: v.Column}, "param %q: %v", k.Value, err))
			continue
		}
		values[k.Value] = val
	}
}

// convertParamNode decodes a YAML value as a param of the given type.
func convertParamNode(n *yaml.Node, typ string) (any, error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	want := map[string]func() bool{
		"string": func() bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!str" },
		"int":    func() bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!int" },
		"bool":   func() bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!bool" },
		"list":   func() bool { return n.Kind == yaml.SequenceNode },
		"map":    func() bool { return n.Kind == yaml.MappingNode },
	}[typ]
	if want == nil || !want() {
		return nil, fmt.Errorf("expected %s, got %s", typeArticle(typ), kindName(n))
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, err
	}
	return normalize(v), nil
}

// parseParamString parses a --set value by the param's type.
func parseParamString(raw, typ string) (any, error) {
	switch typ {
	case "string":
		return raw, nil
	case "int":
		i, err := strconv.Atoi(raw)
		if err != nil {
			return nil, fmt.Errorf("expected an integer, got %q", raw)
		}
		return i, nil
	case "bool":
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return nil, fmt.Errorf("expected true or false, got %q", raw)
		}
		return b, nil
	}
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(raw), &n); err != nil || n.Kind == 0 {
		return nil, fmt.Errorf("expected %s in YAML flow syntax, got %q", typeArticle(typ), raw)
	}
	return convertParamNode(n.Content[0], typ)
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
