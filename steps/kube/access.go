package kube

import (
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Rule is one permission a step needs on its cluster's API, as an RBAC policy rule says it:
// these verbs on these resources of these API groups ("" is the core group, "*" any).
type Rule struct {
	Groups    []string
	Resources []string
	Verbs     []string
}

// AccessNeeder is implemented by the configs of the Kubernetes step types: the API access a step
// needs on its cluster, for `planrun rbac` and the ServiceAccount of an in-cluster run. It is
// called on the config as the plan loaded it, before any run: fields that hold ${{ }} are zero
// there and Provision has not run, so a step must not rely on either; the rules then cover
// whatever those fields could name. Undo (the step's own, for rollbacks) is included.
type AccessNeeder interface {
	Access() []Rule
}

// ClusterName is the plan cluster the step works on, as written ("" when left out).
func (c ClusterRef) ClusterName() string { return c.Cluster }

// Verb sets steps ask for.
var (
	// Read is what reading objects takes: get one, list many.
	Read = []string{"get", "list"}
	// Watch is Read and watching for changes.
	Watch = []string{"get", "list", "watch"}
	// Write is what creating and changing objects takes (server-side apply is a patch).
	Write = []string{"get", "list", "create", "update", "patch"}
	// WriteDelete is Write and deleting (steps that undo what they created).
	WriteDelete = []string{"get", "list", "create", "update", "patch", "delete"}
)

// KindRule is the rule for verbs on the resource of apiVersion and kind. The resource name is
// guessed from the kind, as kubectl's fallback does (Deployment → deployments, NetworkPolicy →
// networkpolicies): a plan is reviewed without a cluster at hand. An empty kind (one that holds
// ${{ }}) is any resource of the group, an empty apiVersion any group.
func KindRule(apiVersion, kind string, verbs ...string) Rule {
	group := "*"
	if apiVersion != "" && !strings.Contains(apiVersion, "${{") {
		if gv, err := schema.ParseGroupVersion(apiVersion); err == nil {
			group = gv.Group
		}
	}
	resource := "*"
	if kind != "" {
		plural, _ := meta.UnsafeGuessKindToResource(schema.GroupVersionKind{Kind: kind})
		resource = plural.Resource
	}
	return Rule{Groups: []string{group}, Resources: []string{resource}, Verbs: verbs}
}

// ResourceRule is the rule for verbs on a resource named as plans name them: "configmaps",
// "deployments.apps", "pods/log" (a subresource). An empty name is any resource.
func ResourceRule(name string, verbs ...string) Rule {
	if name == "" {
		return AnyResource(verbs...)
	}
	sub := ""
	if i := strings.IndexByte(name, '/'); i >= 0 {
		name, sub = name[:i], name[i:]
	}
	resource, group, _ := strings.Cut(name, ".")
	return Rule{Groups: []string{group}, Resources: []string{resource + sub}, Verbs: verbs}
}

// AnyResource is the rule for verbs on every resource: what a step whose resources are known
// only when it runs (everything a backup holds, every kind a manifest names) needs.
func AnyResource(verbs ...string) Rule {
	return Rule{Groups: []string{"*"}, Resources: []string{"*"}, Verbs: verbs}
}

// MergeRules folds rules into as few as say the same: one rule per group and verb set, resources
// sorted, duplicates gone; rules on any resource of any group absorb the verbs they grant.
func MergeRules(rules []Rule) []Rule {
	type key struct{ group, verbs string }
	byKey := map[key]map[string]bool{}
	anyVerbs := map[string]bool{}
	for _, r := range rules {
		if len(r.Verbs) == 0 {
			continue
		}
		if slices.Contains(r.Groups, "*") && slices.Contains(r.Resources, "*") {
			for _, v := range r.Verbs {
				anyVerbs[v] = true
			}
		}
	}
	for _, r := range rules {
		verbs := sortedUnique(r.Verbs, anyVerbs)
		if len(verbs) == 0 {
			continue
		}
		for _, g := range r.Groups {
			k := key{g, strings.Join(verbs, ",")}
			if byKey[k] == nil {
				byKey[k] = map[string]bool{}
			}
			for _, res := range r.Resources {
				byKey[k][res] = true
			}
		}
	}
	var out []Rule
	if len(anyVerbs) > 0 {
		out = append(out, AnyResource(sortedUnique(keys(anyVerbs), nil)...))
	}
	var ks []key
	for k := range byKey {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].group != ks[j].group {
			return ks[i].group < ks[j].group
		}
		return ks[i].verbs < ks[j].verbs
	})
	for _, k := range ks {
		out = append(out, Rule{Groups: []string{k.group}, Resources: sortedUnique(keys(byKey[k]), nil), Verbs: strings.Split(k.verbs, ",")})
	}
	return out
}

// sortedUnique is s sorted without duplicates, leaving out what drop holds.
func sortedUnique(s []string, drop map[string]bool) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] && !drop[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
