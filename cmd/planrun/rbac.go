package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"planrun.dev/planrun/clusterstore"
	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/incluster"
	"planrun.dev/planrun/steps/kube"
)

var rbacCommand = &command{
	name:     "rbac",
	usage:    "PLAN.yaml [--set name=value]... [--values FILE]... [--state k8s://CONTEXT/NAMESPACE] [--cluster-secret CLUSTER=SECRET]... [-o json]",
	summary:  "Print the RBAC an in-cluster run of a plan gets (apply --in-cluster creates it), for review.",
	complete: completePlanFile,
	flags: func(fs *pflag.FlagSet, a *app) {
		fs.StringArrayVar(&a.rf.set, "set", nil, "set a param: name=value (repeatable)")
		fs.StringArrayVar(&a.rf.values, "values", nil, "YAML file of param values (repeatable)")
		a.ic.register(fs, false)
	},
	run: func(ctx context.Context, a *app, args []string) error {
		if len(args) != 1 {
			return usagef("rbac takes one plan file, got %d arguments", len(args))
		}
		jsonOut, err := a.jsonOutput()
		if err != nil {
			return err
		}
		p, err := engine.Load(args[0], engine.LoadOptions{Params: engine.ParamValues{Set: a.rf.set, Files: a.rf.values}})
		if err != nil {
			return err
		}
		a.applyClusterDefaults(p)
		secrets, err := a.ic.secrets()
		if err != nil {
			return err
		}
		for c := range secrets {
			if _, ok := p.Clusters[c]; !ok {
				return usagef("--cluster-secret %s: the plan has no cluster %q", c, c)
			}
		}
		ns := "planrun" // where runs are kept when --state does not say
		if clusterstore.IsURL(a.stateName()) {
			_, n, _, err := clusterstore.ParseURL(a.stateName())
			if err != nil {
				return usagef("--state: %v", err)
			}
			ns = n
		}
		access, err := incluster.PlanAccess(p)
		if err != nil {
			return err
		}
		return printRBAC(a, p, ns, access, secrets, jsonOut)
	},
}

// printRBAC prints the runner's RBAC for the plan, each object after comments that say what it
// is for, and for each cluster reached through a Secret the ClusterRole its credentials need.
func printRBAC(a *app, p *engine.Plan, ns string, access []incluster.ClusterAccess, secrets map[string]string, jsonOut bool) error {
	name := kube.ObjectNameFor("planrun-", p.Name(), "runner")
	var home *incluster.ClusterAccess
	type doc struct {
		comment []string
		obj     runtime.Object
	}
	var remote []doc
	for _, c := range access {
		if secret, ok := secrets[c.Cluster]; ok {
			remote = append(remote, doc{[]string{
				fmt.Sprintf("On cluster %s, which the runner reaches with the kubeconfig in Secret %s/%s:", c.Cluster, ns, secret),
				"bind this ClusterRole to the user of that kubeconfig. Steps: " + strings.Join(c.Steps, ", ") + ".",
			}, incluster.RemoteClusterRole(kube.ObjectNameFor("planrun-", p.Name(), c.Cluster), c)})
			continue
		}
		if home == nil {
			home = &incluster.ClusterAccess{Cluster: c.Cluster}
		}
		home.Rules = kube.MergeRules(append(home.Rules, c.Rules...))
		home.Steps = append(home.Steps, c.Steps...)
	}
	rbac := incluster.NewRBAC(name, ns, "", home)
	docs := []doc{
		{[]string{fmt.Sprintf("The runner of an in-cluster run of plan %s runs as this ServiceAccount", p.Name()),
			"(apply --in-cluster makes one per run, named planrun-RUN-runner, owned by the run's PlanRun)."}, rbac.ServiceAccount},
		{[]string{"Its own run: read and checkpoint the PlanRun, hold the run's Lease, write the run's event log (ConfigMap planrun-RUN-events)."}, rbac.Role},
		{nil, rbac.RoleBinding},
	}
	if rbac.ClusterRole != nil {
		docs = append(docs, doc{[]string{"What the plan's steps need on the runner's own cluster: steps " + strings.Join(home.Steps, ", ") + "."}, rbac.ClusterRole},
			doc{nil, rbac.ClusterRoleBinding})
	}
	docs = append(docs, remote...)
	if jsonOut {
		list := map[string]any{"apiVersion": "v1", "kind": "List", "items": []any{}}
		for _, d := range docs {
			u, err := toUnstructured(d.obj)
			if err != nil {
				return err
			}
			list["items"] = append(list["items"].([]any), u)
		}
		return writeJSON(a.stdout, list)
	}
	for i, d := range docs {
		u, err := toUnstructured(d.obj)
		if err != nil {
			return err
		}
		out, err := yaml.Marshal(u)
		if err != nil {
			return err
		}
		if i > 0 {
			fmt.Fprintln(a.stdout, "---")
		}
		for _, c := range d.comment {
			fmt.Fprintln(a.stdout, "# "+c)
		}
		if _, err := a.stdout.Write(out); err != nil {
			return err
		}
	}
	return nil
}

// toUnstructured is o as a map, without the empty fields Go structs print.
func toUnstructured(o runtime.Object) (map[string]any, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		return nil, err
	}
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	if labels, ok := u["metadata"].(map[string]any)["labels"].(map[string]any); ok {
		for k, v := range labels {
			if v == "" {
				delete(labels, k)
			}
		}
	}
	return u, nil
}
