package main

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/fleet"
	"planrun.dev/planrun/steps/kube"
)

// forEachFlags make a fleet of the objects of a resource: one target per object.
type forEachFlags struct {
	resource   string
	selector   string
	targetName string
	params     []string
}

func (f *forEachFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.resource, "for-each", "", "run the plan once per object of this resource (such as tenantcontrolplanes.kamaji.clastix.io) on the cluster of --kubeconfig/--context: a fleet")
	fs.StringVarP(&f.selector, "selector", "l", "", "--for-each: only the objects matching this label selector")
	fs.StringVar(&f.targetName, "target-name", "", "--for-each: expression over object naming each target (default: object.metadata.name, with the namespace in front when the objects are in several)")
	fs.StringArrayVar(&f.params, "target-param", nil, "--for-each: NAME=EXPR, a param of each target from an expression over object, such as tenant=object.metadata.name (repeatable)")
}

// forEachTargets lists the resource's objects and makes a target of each.
func (a *app) forEachTargets(ctx context.Context) (*fleet.File, error) {
	f := a.forEach
	where := "--for-each " + f.resource
	type param struct {
		name string
		prog *vm.Program
	}
	compile := func(what, src string) (*vm.Program, error) {
		prog, err := expr.Compile(src, expr.Env(map[string]any{"object": map[string]any{}}))
		if err != nil {
			line, _, _ := strings.Cut(err.Error(), "\n")
			return nil, usagef("%s %q: %s", what, src, line)
		}
		return prog, nil
	}
	var params []param
	for _, p := range f.params {
		name, src, ok := strings.Cut(p, "=")
		if !ok || name == "" || src == "" {
			return nil, usagef("--target-param %q: want NAME=EXPR", p)
		}
		prog, err := compile("--target-param "+name, src)
		if err != nil {
			return nil, err
		}
		params = append(params, param{name, prog})
	}
	var nameProg *vm.Program
	if f.targetName != "" {
		prog, err := compile("--target-name", f.targetName)
		if err != nil {
			return nil, err
		}
		nameProg = prog
	}
	c, err := kube.NewClient("", &engine.Cluster{Kubeconfig: a.kubeconfig, Context: a.kubeContext})
	if err != nil {
		return nil, err
	}
	gvr, err := c.ResourceFor(f.resource)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	list, err := c.Dynamic.Resource(gvr).List(ctx, metav1.ListOptions{LabelSelector: f.selector})
	if err != nil {
		return nil, fmt.Errorf("%s: listing %s: %w", where, gvr.Resource, kube.Classify(err))
	}
	if len(list.Items) == 0 {
		return nil, fmt.Errorf("%s: no objects match (selector %q)", where, f.selector)
	}
	namespaces := map[string]bool{}
	for _, o := range list.Items {
		namespaces[o.GetNamespace()] = true
	}
	file := &fleet.File{Path: where}
	seen := map[string]string{}
	for _, o := range list.Items {
		at := fmt.Sprintf("%s: %s", where, strings.TrimPrefix(o.GetNamespace()+"/"+o.GetName(), "/"))
		env := map[string]any{"object": o.Object}
		name := o.GetName()
		if len(namespaces) > 1 && o.GetNamespace() != "" {
			name = o.GetNamespace() + "-" + name
		}
		if nameProg != nil {
			v, err := expr.Run(nameProg, env)
			if err != nil {
				return nil, fmt.Errorf("%s: --target-name: %v", at, err)
			}
			name = fmt.Sprint(v)
		}
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			return nil, fmt.Errorf("%s: target name %q: %s (give --target-name)", at, name, strings.Join(errs, "; "))
		}
		if first, dup := seen[name]; dup {
			return nil, fmt.Errorf("%s: target name %q is also %s's (give --target-name)", at, name, first)
		}
		seen[name] = at
		values := map[string]any{}
		for _, p := range params {
			v, err := expr.Run(p.prog, env)
			if err != nil {
				return nil, fmt.Errorf("%s: --target-param %s: %v", at, p.name, err)
			}
			values[p.name] = v
		}
		var node yaml.Node
		if err := node.Encode(values); err != nil {
			return nil, fmt.Errorf("%s: %v", at, err)
		}
		file.Targets = append(file.Targets, fleet.Target{Name: name, Params: &node, ParamValues: values, Pos: at})
	}
	sort.Slice(file.Targets, func(i, j int) bool { return file.Targets[i].Name < file.Targets[j].Name })
	return file, nil
}
