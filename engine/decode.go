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
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// The plan loader decodes yaml.v3 nodes itself instead of calling node.Decode so that:
//   - every error carries the file:line:col of the offending node,
//   - all errors are collected in one pass instead of stopping at the first,
//   - scalars holding ${{ }} expressions can be set aside at load time and filled in at run time,
//   - a field's Go type can take over its own decoding (Duration, Expr, raw yaml.Node).
//
// Field names come from `yaml:"name"` tags; `plan:"required"` marks a field that must be present;
// `plan:"cluster"` and `plan:"datastore"` mark a string field that names one of the plan's
// clusters or datastores, which the loader checks (see refs.go).

// nodeDecoder is implemented by types that decode themselves from a node (see Duration, Expr).
type nodeDecoder interface {
	decodeNode(d *decoder, n *yaml.Node) error
}

// decoder carries the state of one decoding pass.
type decoder struct {
	file string
	errs ErrorList
	// deferScalar, when set, is asked about every scalar first; returning true means the scalar
	// was handled (an expression whose value is only known at run time) and must be left alone.
	deferScalar func(n *yaml.Node, t reflect.Type) bool
	// exprs compiles bare expressions for fields of type Expr; compiled keeps them by node, so
	// that decoding the same node again at run time reuses the program compiled at load time.
	exprs    *exprCompiler
	compiled map[*yaml.Node]*Expr
	// rendered are scalars produced by ${{ }} at run time; a number or boolean among them may
	// fill a string field (as its text), which a number written in the plan may not.
	rendered map[*yaml.Node]bool
	// aliased counts the nodes decoded through aliases, against maxAliased (0: the default);
	// see nodevalue.go. aliasRefused: the error has been recorded.
	aliased, inAlias, maxAliased int
	aliasRefused                 bool
	outerAlias                   *yaml.Node
	templateIn                   map[*yaml.Node]bool // see holdsTemplate
	// refs are the cluster and datastore names found in fields tagged plan:"cluster" or
	// plan:"datastore" (see refs.go).
	refs []nameRef
}

func (d *decoder) pos(n *yaml.Node) Pos {
	if n == nil {
		return Pos{File: d.file} // a node the loader could not find (never a reason to panic)
	}
	return Pos{File: d.file, Line: n.Line, Col: n.Column}
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, errorf(d.pos(n), format, args...))
}

var (
	nodeType        = reflect.TypeOf(yaml.Node{})
	nodeDecoderType = reflect.TypeOf((*nodeDecoder)(nil)).Elem()
)

// decode fills v (addressable) from n, recording every problem in d.errs.
func (d *decoder) decode(n *yaml.Node, v reflect.Value) {
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	if n.Kind == yaml.AliasNode {
		if !d.enterAlias(n) {
			return
		}
		defer d.leaveAlias()
		n = n.Alias
	}
	d.countNode()
	t := v.Type()
	if t == nodeType {
		v.Set(reflect.ValueOf(*n))
		return
	}
	if n.Kind == yaml.ScalarNode && d.deferScalar != nil && d.deferScalar(n, t) {
		return
	}
	if v.CanAddr() {
		if nd, ok := v.Addr().Interface().(nodeDecoder); ok {
			if err := nd.decodeNode(d, n); err != nil {
				d.errs = append(d.errs, asPosError(d.pos(n), err))
			}
			return
		}
	}
	if t.Kind() == reflect.Pointer {
		if isNull(n) {
			return
		}
		p := reflect.New(t.Elem())
		d.decode(n, p.Elem())
		v.Set(p)
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v)
	case reflect.Map:
		d.decodeMap(n, v)
	case reflect.Slice:
		d.decodeSlice(n, v)
	case reflect.Interface:
		if d.deferScalar != nil && d.holdsTemplate(n) {
			// A free-form value (a patch, a manifest) with ${{ }} somewhere inside: decode it
			// piece by piece so that each template is found, type-checked and filled at run time.
			if x := d.decodeFree(n); x != nil {
				v.Set(reflect.ValueOf(x))
			}
			return
		}
		x, err := d.value(n)
		if err != nil {
			if !errors.Is(err, ErrTooManyAliases) { // recorded once by enterAlias
				d.errs = append(d.errs, asPosError(d.pos(n), err))
			}
			return
		}
		if x != nil {
			v.Set(reflect.ValueOf(x))
		}
	default:
		d.decodeScalar(n, v)
	}
}

// decodeFree decodes a mapping or list of a free-form value element by element (see decode).
func (d *decoder) decodeFree(n *yaml.Node) any {
	elem := func(c *yaml.Node) any {
		var x any
		d.decode(c, reflect.ValueOf(&x).Elem())
		return x
	}
	switch n.Kind {
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Tag == "!!str" && isTemplate(k.Value) {
				d.templateKey(k)
				continue
			}
			if _, dup := m[k.Value]; dup {
				d.errorf(k, "mapping key %q already defined", k.Value)
				continue
			}
			m[k.Value] = elem(n.Content[i+1])
		}
		return m
	case yaml.SequenceNode:
		l := make([]any, len(n.Content))
		for i, c := range n.Content {
			l[i] = elem(c)
		}
		return l
	}
	return elem(n)
}

// holdsTemplate reports whether a ${{ }} string is anywhere in n. An anchored node is looked at
// once however many aliases name it (memo), so that aliases cost nothing here: a few nested
// ones would otherwise make this walk billions of nodes.
func (d *decoder) holdsTemplate(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil {
		return false
	}
	if n.Kind == yaml.ScalarNode {
		return n.Tag == "!!str" && isTemplate(n.Value)
	}
	if held, ok := d.templateIn[n]; ok {
		return held
	}
	held := false
	for _, c := range n.Content {
		if d.holdsTemplate(c) {
			held = true
			break
		}
	}
	if n.Anchor != "" {
		if d.templateIn == nil {
			d.templateIn = map[*yaml.Node]bool{}
		}
		d.templateIn[n] = held
	}
	return held
}

func asPosError(pos Pos, err error) *PosError {
	if pe, ok := err.(*PosError); ok {
		return pe
	}
	return &PosError{Pos: pos, Msg: err.Error(), Err: err}
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// kindName names a node's kind the way an operator reads YAML.
func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return fmt.Sprintf("string %s", quoteLong(n.Value))
		case "!!null":
			return "null"
		case "!!int":
			return "integer " + n.Value
		case "!!float":
			if integerRE.MatchString(n.Value) {
				return "integer " + n.Value + " (too large)"
			}
			return "number " + n.Value
		case "!!bool":
			return "boolean " + n.Value
		case "!!timestamp":
			return "timestamp " + n.Value
		case "!!binary":
			return "binary data"
		}
		return fmt.Sprintf("%s %s", strings.TrimPrefix(n.Tag, "!!"), quoteLong(n.Value))
	case yaml.AliasNode:
		return "an alias"
	}
	return "a document"
}

// integerRE is YAML's integer syntax; yaml.v3 tags an integer that does not fit 64 bits !!float.
var integerRE = regexp.MustCompile(`^[-+]?(0|[1-9][0-9_]*)$`)

// fieldInfo describes one decodable struct field.
type fieldInfo struct {
	name     string
	index    []int
	required bool
	ref      string // "cluster", "datastore" or empty
}

// structFields lists the decodable fields of a struct type. The list is computed once per type:
// decoding calls it for every mapping, and reading tags by reflection each time was most of the
// cost of a large plan (or of refusing an alias bomb of steps).
func structFields(t reflect.Type) []fieldInfo {
	if f, ok := fieldCache.Load(t); ok {
		return f.([]fieldInfo)
	}
	f := computeStructFields(t)
	fieldCache.Store(t, f)
	return f
}

// fieldCache maps a struct type to its []fieldInfo; types never change, so entries never go stale.
var fieldCache sync.Map

func computeStructFields(t reflect.Type) []fieldInfo {
	var out []fieldInfo
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if strings.Contains(opts, "inline") && f.Type.Kind() == reflect.Struct {
			for _, sub := range computeStructFields(f.Type) {
				sub.index = append([]int{i}, sub.index...)
				out = append(out, sub)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name[:1]) + f.Name[1:]
		}
		plan := f.Tag.Get("plan")
		out = append(out, fieldInfo{name: name, index: f.Index, required: hasOpt(plan, "required"), ref: refKind(plan)})
	}
	return out
}

func hasOpt(tag, opt string) bool {
	for _, o := range strings.Split(tag, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "expected a mapping, got %s", kindName(n))
		return
	}
	fields := structFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			d.errorf(k, "duplicate field %q", k.Value)
			continue
		}
		seen[k.Value] = true
		f, ok := findField(fields, k.Value)
		if !ok {
			d.errorf(k, "unknown field %q (known: %s)", k.Value, fieldNames(fields))
			continue
		}
		if f.required && (isNull(val) || val.Kind == yaml.ScalarNode && val.Tag == "!!str" && val.Value == "") {
			d.errorf(val, "field %q must not be empty", f.name)
			continue
		}
		d.decode(val, v.FieldByIndex(f.index))
		if f.ref != "" {
			d.addRef(f.ref, val)
		}
	}
	for _, f := range fields {
		if f.required && !seen[f.name] {
			d.errorf(n, "missing required field %q", f.name)
		}
	}
}

func findField(fields []fieldInfo, name string) (fieldInfo, bool) {
	for _, f := range fields {
		if f.name == name {
			return f, true
		}
	}
	return fieldInfo{}, false
}

func fieldNames(fields []fieldInfo) string {
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.name
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "expected a mapping, got %s", kindName(n))
		return
	}
	t := v.Type()
	if t.Key().Kind() != reflect.String {
		d.errorf(n, "internal: map key must be a string, not %s", t.Key())
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(t, len(n.Content)/2))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, "expected a string key, got %s", kindName(k))
			continue
		}
		if d.deferScalar != nil && k.Tag == "!!str" && isTemplate(k.Value) {
			d.templateKey(k)
			continue
		}
		if seen[k.Value] {
			d.errorf(k, "duplicate key %q", k.Value)
			continue
		}
		seen[k.Value] = true
		elem := reflect.New(t.Elem()).Elem()
		d.decode(val, elem)
		v.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), elem)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value) {
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "expected a list, got %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i))
	}
	v.Set(s)
}

func (d *decoder) decodeScalar(n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, "expected %s, got %s", goKindName(v.Type()), kindName(n))
		return
	}
	if isNull(n) {
		return
	}
	switch v.Kind() {
	case reflect.String:
		if n.Tag != "!!str" && !(d.rendered[n] && (n.Tag == "!!int" || n.Tag == "!!float" || n.Tag == "!!bool")) {
			d.errorf(n, "expected a string, got %s (quote it to make it a string)", kindName(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, err := strconv.ParseBool(n.Value)
		if n.Tag != "!!bool" || err != nil {
			d.errorf(n, "expected a boolean (true or false), got %s", kindName(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if (n.Tag == "!!int" || n.Tag == "!!float" && integerRE.MatchString(n.Value)) && (err != nil || v.OverflowInt(i)) {
			d.errorf(n, "integer %s is too large for this field (at most %d)", n.Value, maxInt(v.Type()))
			return
		}
		if n.Tag != "!!int" || err != nil {
			d.errorf(n, "expected an integer, got %s", kindName(n))
			return
		}
		v.SetInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		u, err := strconv.ParseUint(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
		if (n.Tag == "!!int" || n.Tag == "!!float" && integerRE.MatchString(n.Value)) && !strings.HasPrefix(n.Value, "-") && (err != nil || v.OverflowUint(u)) {
			d.errorf(n, "integer %s is too large for this field (at most %d)", n.Value, ^uint64(0)>>(64-v.Type().Bits()))
			return
		}
		if n.Tag != "!!int" || err != nil {
			d.errorf(n, "expected a non-negative integer, got %s", kindName(n))
			return
		}
		v.SetUint(u)
	case reflect.Float32, reflect.Float64:
		f, err := strconv.ParseFloat(n.Value, 64)
		if (n.Tag != "!!float" && n.Tag != "!!int") || err != nil || math.IsNaN(f) {
			d.errorf(n, "expected a number, got %s", kindName(n))
			return
		}
		v.SetFloat(f)
	default:
		d.errorf(n, "internal: cannot decode into %s", v.Type())
	}
}

// maxInt is the largest value of a signed integer type.
func maxInt(t reflect.Type) int64 { return 1<<(t.Bits()-1) - 1 }

func goKindName(t reflect.Type) string {
	if t == reflect.TypeOf(Duration(0)) {
		return "a duration such as 30s"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return t.String()
}

// Duration is a time.Duration written as "30s", "5m", "1h30m" in plans.
type Duration time.Duration

func (dur *Duration) decodeNode(d *decoder, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return fmt.Errorf("expected a duration such as 30s or 5m, got %s", kindName(n))
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("expected a duration such as 30s or 5m, got %q", n.Value)
	}
	*dur = Duration(v)
	return nil
}

func (dur Duration) String() string { return time.Duration(dur).String() }

// MarshalJSON writes the duration the way it is written in plans.
func (dur Duration) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(dur.String())), nil }

// UnmarshalJSON reads what MarshalJSON writes, so events and journals round-trip.
func (dur *Duration) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("duration: expected a string such as \"30s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*dur = Duration(v)
	return nil
}
