package engine

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
)

// SchemaID is the $id of the JSON Schema of plan files.
const SchemaID = "https://planrun.dev/schemas/plan.schema.json"

// templatePattern matches a scalar holding a ${{ }} expression. Any field of a step's `with` may
// be one, whatever the field's type: its value is only known at run time.
const templatePattern = `\$\{\{.*\}\}`

// durationPattern matches what time.ParseDuration accepts for a non-negative duration.
const durationPattern = `^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$`

var (
	durationType   = reflect.TypeOf(Duration(0))
	stepStructType = reflect.TypeOf(Step{})
)

// JSONSchema returns the JSON Schema (draft-07) of plan files, derived by reflection from Plan
// and from the config struct of every registered step type. It follows the loader's rules: field
// names from `yaml` tags, `plan:"required"` fields required, `doc` tags as descriptions, no
// unknown fields. The output is deterministic: indented with two spaces, keys sorted, a newline
// at the end.
func JSONSchema() ([]byte, error) {
	g := &schemaGen{}
	types := StepTypes()
	names := make([]string, len(types))
	defs := map[string]any{}
	var conds []any
	for i, t := range types {
		names[i] = t.Name
		cfg := reflect.TypeOf(t.New())
		for cfg != nil && cfg.Kind() == reflect.Pointer {
			cfg = cfg.Elem()
		}
		if cfg == nil || cfg.Kind() != reflect.Struct {
			return nil, fmt.Errorf("step type %q: config is %v, not a pointer to a struct", t.Name, reflect.TypeOf(t.New()))
		}
		with, err := g.structSchema(cfg, true)
		if err != nil {
			return nil, fmt.Errorf("step type %q: %w", t.Name, err)
		}
		with["title"] = "with of step type " + t.Name
		if t.Doc != "" {
			with["description"] = t.Doc
		}
		defs["with."+t.Name] = with
		then := map[string]any{
			"properties": map[string]any{"with": map[string]any{"$ref": "#/$defs/with." + t.Name}},
		}
		if req, ok := with["required"]; ok && len(req.([]string)) > 0 {
			then["required"] = []string{"with"} // an absent with is an empty mapping: required fields are missing
		}
		conds = append(conds, map[string]any{
			"if": map[string]any{
				"properties": map[string]any{"type": map[string]any{"const": t.Name}},
				"required":   []string{"type"},
			},
			"then": then,
		})
	}
	g.stepTypeNames = names
	for _, t := range DatastoreTypes() {
		cfg := reflect.TypeOf(t.New())
		for cfg != nil && cfg.Kind() == reflect.Pointer {
			cfg = cfg.Elem()
		}
		if cfg == nil || cfg.Kind() != reflect.Struct {
			return nil, fmt.Errorf("datastore type %q: config is %v, not a pointer to a struct", t.Name, reflect.TypeOf(t.New()))
		}
		ds, err := g.structSchema(cfg, true)
		if err != nil {
			return nil, fmt.Errorf("datastore type %q: %w", t.Name, err)
		}
		ds["properties"].(map[string]any)["type"] = map[string]any{"type": "string", "const": t.Name}
		ds["title"] = "datastore of type " + t.Name
		if t.Doc != "" {
			ds["description"] = t.Doc
		}
		defs["datastore."+t.Name] = ds
		g.datastoreRefs = append(g.datastoreRefs, map[string]any{"$ref": "#/$defs/datastore." + t.Name})
	}

	step, err := g.structSchema(stepStructType, false)
	if err != nil {
		return nil, err
	}
	if len(conds) > 0 {
		step["allOf"] = conds
	}
	defs["step"] = step

	root, err := g.structSchema(reflect.TypeOf(Plan{}), false)
	if err != nil {
		return nil, err
	}
	root["$schema"] = "http://json-schema.org/draft-07/schema#"
	root["$id"] = SchemaID
	root["title"] = "planrun plan"
	root["description"] = "A planrun migration plan (apiVersion " + APIVersion + ", kind " + Kind + ")."
	root["$defs"] = defs

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type schemaGen struct {
	stepTypeNames []string
	datastoreRefs []any
}

// schema returns the schema of values of type t. Within a step's config (templated), every
// value that is not a string may also be a ${{ }} template.
func (g *schemaGen) schema(t reflect.Type, templated bool) (map[string]any, error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isExprField(t) {
		return map[string]any{"type": "string"}, nil // Expr and ObjectExpr decode ${{ }} themselves
	}
	switch t {
	case stepStructType:
		return map[string]any{"$ref": "#/$defs/step"}, nil
	case nodeType:
		return map[string]any{}, nil // any YAML value
	case durationType:
		s := map[string]any{"type": "string", "pattern": durationPattern}
		if templated {
			return anyOfTemplate(s), nil
		}
		return s, nil
	}
	var s map[string]any
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}, nil
	case reflect.Bool:
		s = map[string]any{"type": "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		s = map[string]any{"type": "integer"}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		s = map[string]any{"type": "integer", "minimum": 0}
	case reflect.Float32, reflect.Float64:
		s = map[string]any{"type": "number"}
	case reflect.Interface:
		return map[string]any{}, nil
	case reflect.Slice, reflect.Array:
		items, err := g.schema(t.Elem(), templated)
		if err != nil {
			return nil, err
		}
		s = map[string]any{"type": "array", "items": items}
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil, fmt.Errorf("%s: map keys must be strings", t)
		}
		elem, err := g.schema(t.Elem(), templated)
		if err != nil {
			return nil, err
		}
		s = map[string]any{"type": "object", "additionalProperties": elem}
	case reflect.Struct:
		var err error
		if s, err = g.structSchema(t, templated); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s: no JSON Schema for kind %s", t, t.Kind())
	}
	if templated {
		return anyOfTemplate(s), nil
	}
	return s, nil
}

func anyOfTemplate(s map[string]any) map[string]any {
	return map[string]any{"anyOf": []any{s, map[string]any{"type": "string", "pattern": templatePattern}}}
}

// structSchema is the schema of a struct decoded by decodeStruct: the same fields (structFields),
// nothing else.
func (g *schemaGen) structSchema(t reflect.Type, templated bool) (map[string]any, error) {
	props := map[string]any{}
	var required []string
	for _, f := range structFields(t) {
		sf := t.FieldByIndex(f.index)
		p, err := g.fieldSchema(t, sf, f.name, templated)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", t.Name(), sf.Name, err)
		}
		if doc := sf.Tag.Get("doc"); doc != "" {
			p["description"] = doc
		}
		props[f.name] = p
		if f.required {
			required = append(required, f.name)
		}
	}
	s := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		s["required"] = required
	}
	return s, nil
}

// fieldSchema is the schema of one field. The fields of the plan whose values the loader checks
// beyond their Go type get enums and constants; yaml.Node fields get the shape the loader expects.
func (g *schemaGen) fieldSchema(owner reflect.Type, f reflect.StructField, name string, templated bool) (map[string]any, error) {
	enum := func(values ...string) map[string]any {
		return map[string]any{"type": "string", "enum": values}
	}
	switch owner {
	case reflect.TypeOf(Plan{}):
		switch name {
		case "apiVersion":
			return map[string]any{"type": "string", "const": APIVersion}, nil
		case "kind":
			return map[string]any{"type": "string", "const": Kind}, nil
		case "datastores":
			entry := map[string]any{"type": "object"}
			switch len(g.datastoreRefs) {
			case 0:
			case 1:
				entry = g.datastoreRefs[0].(map[string]any)
			default:
				entry = map[string]any{"anyOf": g.datastoreRefs}
			}
			return map[string]any{"type": "object", "additionalProperties": entry}, nil
		case "steps":
			s, err := g.schema(f.Type, false)
			if err == nil {
				s["minItems"] = 1 // the loader wants at least one step
			}
			return s, err
		}
	case reflect.TypeOf(Param{}):
		switch name {
		case "type":
			return enum("string", "int", "bool", "list", "map"), nil
		case "default":
			return map[string]any{}, nil
		}
	case stepStructType:
		switch name {
		case "type":
			return enum(g.stepTypeNames...), nil
		case "phase":
			return enum(PhaseBackup, PhaseRestore), nil
		case "onError":
			return enum(OnErrorFail, OnErrorContinue), nil
		case "with":
			return map[string]any{"type": "object"}, nil // narrowed by type, see the allOf of $defs/step
		case "when":
			return map[string]any{"type": "string"}, nil
		}
	case reflect.TypeOf(Retry{}):
		if name == "on" {
			return enum(RetryOnTransient, RetryOnAny), nil
		}
	}
	return g.schema(f.Type, templated)
}
