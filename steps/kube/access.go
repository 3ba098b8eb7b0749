package kube

import (
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Rule is one permission a step needs on a cluster's API, as an RBAC policy rule says it:
// these verbs on these resources of these API groups ("" is the core group, "*" any).
type Rule struct {
	// Cluster is the plan cluster the rule is for, named as a step's cluster: field names it.
	// "" is the step's own cluster: the one its config's ClusterName gives, or for a config
	// without one, the cluster a left-out cluster: means (the plan's only one). A step that
	// talks to other clusters too (a Secret that credentialsFrom names on another cluster,
	// kube.copyVolumes' from and to) names them here; ByCluster sorts a step's rules out.
	Cluster   string
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
// "deployments.apps", "pods/log" (a subresource). An empty name is any resource. A name without
// a group is found by discovery when the step runs, as kubectl finds it: one of the core
// group's resources is in the core group, any other name (deployments) may be in any group.
func ResourceRule(name string, verbs ...string) Rule {
	if name == "" {
		return AnyResource(verbs...)
	}
	name = strings.ToLower(name)
	sub := ""
	if i := strings.IndexByte(name, '/'); i >= 0 {
		name, sub = name[:i], name[i:]
	}
	resource, group, qualified := strings.Cut(name, ".")
	if !qualified && !coreResources[resource] {
		group = "*"
	}
	return Rule{Groups: []string{group}, Resources: []string{resource + sub}, Verbs: verbs}
}

// coreResources are the resources of the core API group (v1).
var coreResources = map[string]bool{
	"bindings": true, "componentstatuses": true, "configmaps": true, "endpoints": true, "events": true,
	"limitranges": true, "namespaces": true, "nodes": true, "persistentvolumeclaims": true,
	"persistentvolumes": true, "pods": true, "podtemplates": true, "replicationcontrollers": true,
	"resourcequotas": true, "secrets": true, "serviceaccounts": true, "services": true,
}

// Subresource is the rule for the same verbs on a subresource of r's resources ("scale",
// "status").
func (r Rule) Subresource(sub string) Rule {
	res := make([]string, len(r.Resources))
	for i, name := range r.Resources {
		res[i] = name + "/" + sub
	}
	r.Resources = res
	return r
}

// OnCluster returns rules for the plan cluster named cluster ("" the step's own).
func OnCluster(cluster string, rules ...Rule) []Rule {
	out := make([]Rule, len(rules))
	for i, r := range rules {
		r.Cluster = cluster
		out[i] = r
	}
	return out
}

// ByCluster sorts a step's rules by the plan cluster they are for, as written: the rules for
// the step's own cluster go under own (its config's ClusterName, "" without one). Cluster is
// cleared in the rules returned.
func ByCluster(own string, rules []Rule) map[string][]Rule {
	out := map[string][]Rule{}
	for _, r := range rules {
		name := r.Cluster
		if name == "" {
			name = own
		}
		r.Cluster = ""
		out[name] = append(out[name], r)
	}
	return out
}

// AnyResource is the rule for verbs on every resource: what a step whose resources are known
// only when it runs (everything a backup holds, every kind a manifest names) needs.
func AnyResource(verbs ...string) Rule {
	return Rule{Groups: []string{"*"}, Resources: []string{"*"}, Verbs: verbs}
}

// MergeRules folds rules into as few as say the same: the verbs of each resource gathered, then
// one rule per cluster, group and verb set, resources and verbs sorted, duplicates gone; rules on
// any resource of any group absorb the verbs they grant on their cluster. Rules for different
// clusters are never merged.
func MergeRules(rules []Rule) []Rule {
	anyVerbs := map[string]map[string]bool{} // cluster → verbs granted on everything
	for _, r := range rules {
		if len(r.Verbs) > 0 && slices.Contains(r.Groups, "*") && slices.Contains(r.Resources, "*") {
			if anyVerbs[r.Cluster] == nil {
				anyVerbs[r.Cluster] = map[string]bool{}
			}
			for _, v := range r.Verbs {
				anyVerbs[r.Cluster][v] = true
			}
		}
	}
	type resource struct{ cluster, group, name string }
	verbsOf := map[resource]map[string]bool{}
	for _, r := range rules {
		for _, g := range r.Groups {
			for _, name := range r.Resources {
				k := resource{r.Cluster, g, name}
				for _, v := range r.Verbs {
					if !anyVerbs[r.Cluster][v] {
						if verbsOf[k] == nil {
							verbsOf[k] = map[string]bool{}
						}
						verbsOf[k][v] = true
					}
				}
			}
		}
	}
	type key struct{ cluster, group, verbs string }
	byKey := map[key][]string{}
	clusters := map[string]bool{}
	for c := range anyVerbs {
		clusters[c] = true
	}
	for k, verbs := range verbsOf {
		kk := key{k.cluster, k.group, strings.Join(sortedUnique(keys(verbs), nil), ",")}
		byKey[kk] = append(byKey[kk], k.name)
		clusters[k.cluster] = true
	}
	ks := make([]key, 0, len(byKey))
	for k := range byKey {
		ks = append(ks, k)
	}
	sort.Slice(ks, func(i, j int) bool {
		if ks[i].group != ks[j].group {
			return ks[i].group < ks[j].group
		}
		return ks[i].verbs < ks[j].verbs
	})
	var out []Rule
	for _, c := range sortedUnique(keys(clusters), nil) {
		if len(anyVerbs[c]) > 0 {
			r := AnyResource(sortedUnique(keys(anyVerbs[c]), nil)...)
			r.Cluster = c
			out = append(out, r)
		}
		for _, k := range ks {
			if k.cluster == c {
				out = append(out, Rule{Cluster: c, Groups: []string{k.group}, Resources: sortedUnique(byKey[k], nil), Verbs: strings.Split(k.verbs, ",")})
			}
		}
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
