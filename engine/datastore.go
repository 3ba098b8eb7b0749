package engine

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// DatastoreType is a kind of entry of the plan's `datastores:` (etcd, ...). The package that
// implements it registers it from init, as step types are registered, so the engine knows
// nothing about any datastore: it decodes each entry strictly into the type's config and hands
// the value to the steps that name it (RunContext.Datastore).
type DatastoreType struct {
	Name string
	// Doc is one line for `planrun schema`.
	Doc string
	// New returns a pointer to a zero config struct, ready to be decoded into.
	New func() any
}

var datastoreTypes = map[string]DatastoreType{}

// RegisterDatastore makes a datastore type available to plans. Registering a name twice is a
// programming error and panics.
func RegisterDatastore(t DatastoreType) {
	registry.Lock()
	defer registry.Unlock()
	if t.Name == "" || t.New == nil {
		panic("engine.RegisterDatastore: a datastore type needs a name and a constructor")
	}
	if _, dup := datastoreTypes[t.Name]; dup {
		panic(fmt.Sprintf("engine.RegisterDatastore: datastore type %q registered twice", t.Name))
	}
	datastoreTypes[t.Name] = t
}

// DatastoreTypes lists the registered datastore types, sorted by name.
func DatastoreTypes() []DatastoreType {
	registry.RLock()
	defer registry.RUnlock()
	out := make([]DatastoreType, 0, len(datastoreTypes))
	for _, t := range datastoreTypes {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// decodeDatastores decodes the entries of `datastores:`. An entry's `type:` picks its kind; it
// may be left out while only one kind is registered. ${{ }} values are filled in here, from the
// params: a datastore is known before the first step runs.
func (l *loader) decodeDatastores() {
	p := l.plan
	if len(p.Datastores) == 0 {
		return
	}
	types := DatastoreTypes()
	p.datastores = map[string]any{}
	if l.exprs != nil {
		// Datastores are set up before the first step runs.
		l.exprs.self, l.exprs.readable = "", func(string, bool) (bool, string) {
			return false, "is read by a datastore, which is set up before any step runs"
		}
	}
	names := make([]string, 0, len(p.Datastores))
	for name := range p.Datastores {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		n := p.Datastores[name]
		node := &n
		if node.Kind == yaml.AliasNode {
			node = node.Alias
		}
		if node.Kind != yaml.MappingNode {
			l.errs = append(l.errs, errorf(l.d.pos(node), "datastores.%s: want a mapping, got %s", name, kindName(node)))
			continue
		}
		typeNode, body := withoutKey(node, "type")
		t, err := pickDatastoreType(types, typeNode)
		if err != nil {
			l.errs = append(l.errs, errorf(l.d.pos(orNode(typeNode, node)), "datastores.%s: %v", name, err))
			continue
		}
		if cfg := l.decodeDatastore(name, body, t); cfg != nil {
			p.datastores[name] = cfg
		}
	}
}

func (l *loader) decodeDatastore(name string, body *yaml.Node, t DatastoreType) any {
	templates := map[*yaml.Node]*Template{}
	l.d.deferScalar = l.deferTemplates(templates)
	cfg := t.New()
	before := len(l.d.errs)
	l.d.decode(body, reflect.ValueOf(cfg).Elem())
	l.d.deferScalar = nil
	// planrun validate without the required params checks the entry's shape, not what zero
	// values would make of its templates (an empty endpoint list).
	unchecked := len(templates) > 0 && l.paramsMissing
	if len(templates) > 0 && len(l.d.errs) == before && !unchecked {
		env := Env{Params: l.plan.paramValue, Steps: map[string]StepView{}}
		rendered := map[*yaml.Node]bool{}
		n, err := renderNode(body, templates, env, rendered)
		if err != nil {
			l.d.errs = append(l.d.errs, asPosError(l.d.pos(body), err))
		} else {
			d := &decoder{file: l.d.file, rendered: rendered}
			cfg = t.New()
			d.decode(n, reflect.ValueOf(cfg).Elem())
			l.d.errs = append(l.d.errs, d.errs...)
		}
	}
	errs := l.d.errs[before:]
	for _, e := range errs {
		e.Msg = fmt.Sprintf("datastores.%s: %s", name, e.Msg)
	}
	ok := len(errs) == 0
	l.errs = append(l.errs, l.d.errs...)
	l.d.errs = nil
	if !ok || unchecked {
		return nil
	}
	if err := checkConfig(cfg); err != nil {
		l.errs = append(l.errs, errorf(l.d.pos(body), "datastores.%s: %v", name, err))
		return nil
	}
	return cfg
}

func pickDatastoreType(types []DatastoreType, typeNode *yaml.Node) (DatastoreType, error) {
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = t.Name
	}
	if typeNode == nil {
		if len(types) == 1 {
			return types[0], nil
		}
		if len(types) == 0 {
			return DatastoreType{}, fmt.Errorf("no datastore type is available in this build")
		}
		return DatastoreType{}, fmt.Errorf("type: missing; one of %s", strings.Join(names, ", "))
	}
	for _, t := range types {
		if t.Name == typeNode.Value {
			return t, nil
		}
	}
	return DatastoreType{}, fmt.Errorf("type: unknown datastore type %q; one of %s", typeNode.Value, strings.Join(names, ", "))
}

// withoutKey returns the value of key in mapping n, and a copy of n without that key.
func withoutKey(n *yaml.Node, key string) (*yaml.Node, *yaml.Node) {
	var value *yaml.Node
	cp := *n
	cp.Content = make([]*yaml.Node, 0, len(n.Content))
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && value == nil {
			value = n.Content[i+1]
			continue
		}
		cp.Content = append(cp.Content, n.Content[i], n.Content[i+1])
	}
	return value, &cp
}

func orNode(a, b *yaml.Node) *yaml.Node {
	if a != nil {
		return a
	}
	return b
}

// Datastore returns the config of the plan's datastore name, as its type decoded it.
func (rc *RunContext) Datastore(name string) (any, error) {
	if cfg, ok := rc.datastores[name]; ok {
		return cfg, nil
	}
	names := make([]string, 0, len(rc.datastores))
	for n := range rc.datastores {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("datastore %q: the plan declares no datastores", name)
	}
	return nil, fmt.Errorf("datastore %q is not declared in the plan's datastores (%s)", name, strings.Join(names, ", "))
}
