package incluster

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"planrun.dev/planrun/clusterstore"
	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

// ClusterAccess is what a plan's steps need of one of its clusters' API.
type ClusterAccess struct {
	// Cluster is the plan's name for the cluster.
	Cluster string
	// Rules are the steps' rules, merged.
	Rules []kube.Rule
	// Steps are the ids of the steps that talk to the cluster, in plan order, after the
	// datastores ("datastore NAME") whose Secrets are there.
	Steps []string
}

// PlanAccess is the API access the steps of p need (hooks and rollback steps included), per
// cluster, in the order of the plan's cluster names. A cluster no step talks to is left out.
func PlanAccess(p *engine.Plan) ([]ClusterAccess, error) {
	byCluster := map[string]*ClusterAccess{}
	add := func(cluster, who string, rules []kube.Rule) {
		a := byCluster[cluster]
		if a == nil {
			a = &ClusterAccess{Cluster: cluster}
			byCluster[cluster] = a
		}
		a.Rules = append(a.Rules, rules...)
		if !slices.Contains(a.Steps, who) {
			a.Steps = append(a.Steps, who)
		}
	}
	// Datastores read their Secrets for the steps that connect to them.
	datastores := p.DatastoreConfigs()
	names := make([]string, 0, len(datastores))
	for n := range datastores {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		needs, ok := datastores[n].(kube.AccessNeeder)
		if !ok {
			continue
		}
		for cluster, rs := range kube.ByCluster("", needs.Access()) {
			name, _, err := kube.PickCluster(p.Clusters, cluster)
			if err != nil {
				return nil, fmt.Errorf("datastores.%s: %v", n, err)
			}
			add(name, "datastore "+n, rs)
		}
	}
	for _, s := range p.AllSteps() {
		cfg, _ := s.Config()
		needs, ok := cfg.(kube.AccessNeeder)
		if !ok {
			continue
		}
		rules := needs.Access()
		if len(rules) == 0 {
			continue // as configured, the step does not talk to a cluster
		}
		own := ""
		if slices.ContainsFunc(rules, func(r kube.Rule) bool { return r.Cluster == "" }) {
			named := ""
			if c, ok := cfg.(interface{ ClusterName() string }); ok {
				named = c.ClusterName()
			}
			name, _, err := kube.PickCluster(p.Clusters, named)
			if err != nil {
				if named == "" && len(p.Clusters) > 1 {
					return nil, fmt.Errorf("%s: step %q: its cluster is only known when it runs; name it in the plan to run in a cluster", s.Pos, s.ID)
				}
				return nil, fmt.Errorf("%s: step %q: %v", s.Pos, s.ID, err)
			}
			own = name
		}
		for cluster, rs := range kube.ByCluster(own, rules) {
			if _, ok := p.Clusters[cluster]; !ok {
				return nil, fmt.Errorf("%s: step %q: the plan has no cluster %q (or it is only known when the step runs; name it in the plan to run in a cluster)", s.Pos, s.ID, cluster)
			}
			add(cluster, s.ID, rs)
		}
	}
	clusters := make([]string, 0, len(byCluster))
	for n := range byCluster {
		clusters = append(clusters, n)
	}
	sort.Strings(clusters)
	out := make([]ClusterAccess, 0, len(clusters))
	for _, n := range clusters {
		a := byCluster[n]
		a.Rules = kube.MergeRules(a.Rules)
		out = append(out, *a)
	}
	return out, nil
}

// RunnerRules are what a runner needs of its own state namespace: read and checkpoint its
// PlanRun (patch: it clears a stop request it acted on), hold the run's Lease, write the run's
// event log (a ConfigMap), and read the named Secrets.
func RunnerRules(secrets ...string) []rbacv1.PolicyRule {
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{clusterstore.Group}, Resources: []string{clusterstore.Resource}, Verbs: []string{"get", "list", "update", "patch"}},
		{APIGroups: []string{coordinationv1.GroupName}, Resources: []string{clusterstore.LeaseResource}, Verbs: []string{"get", "create", "update"}},
		{APIGroups: []string{""}, Resources: []string{clusterstore.EventLogResource}, Verbs: slices.Clone(clusterstore.EventLogVerbs)},
	}
	if len(secrets) > 0 {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}, ResourceNames: secrets})
	}
	return rules
}

// policyRules turns step rules into RBAC rules.
func policyRules(rules []kube.Rule) []rbacv1.PolicyRule {
	out := make([]rbacv1.PolicyRule, 0, len(rules))
	for _, r := range rules {
		out = append(out, rbacv1.PolicyRule{APIGroups: r.Groups, Resources: r.Resources, Verbs: r.Verbs})
	}
	return out
}

// RBAC is the ServiceAccount a run's runner pod runs as and what binds it to the access it
// needs: a Role on the state namespace (the runner's own PlanRun and Lease) and, when its steps
// talk to the runner's own cluster, a ClusterRole with their rules (steps name namespaces, and
// create some, as the run goes, so the grant is cluster-wide). Objects are in the order they
// must be created.
type RBAC struct {
	ServiceAccount     *corev1.ServiceAccount
	Role               *rbacv1.Role
	RoleBinding        *rbacv1.RoleBinding
	ClusterRole        *rbacv1.ClusterRole        // nil when no step talks to the home cluster
	ClusterRoleBinding *rbacv1.ClusterRoleBinding // nil with ClusterRole
}

// NewRBAC builds the RBAC of a runner named name in namespace ns, whose steps need home on its
// own cluster (nil: none), and which reads the given Secrets of ns (the keys of its artifacts'
// store).
func NewRBAC(name, ns, runID string, home *ClusterAccess, secrets ...string) RBAC {
	labels := map[string]string{managedByLabel: "planrun", runLabel: clusterstore.LabelValue(runID)}
	meta := func(namespace string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels}
	}
	subject := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}}
	r := RBAC{
		ServiceAccount: &corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(ns)},
		Role:           &rbacv1.Role{TypeMeta: typeMeta(rbacv1.SchemeGroupVersion.String(), "Role"), ObjectMeta: meta(ns), Rules: RunnerRules(secrets...)},
		RoleBinding: &rbacv1.RoleBinding{TypeMeta: typeMeta(rbacv1.SchemeGroupVersion.String(), "RoleBinding"), ObjectMeta: meta(ns), Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}},
	}
	if home != nil && len(home.Rules) > 0 {
		cm := meta("")
		cm.Annotations = map[string]string{stepsAnnotation: strings.Join(home.Steps, ",")}
		r.ClusterRole = &rbacv1.ClusterRole{TypeMeta: typeMeta(rbacv1.SchemeGroupVersion.String(), "ClusterRole"), ObjectMeta: cm, Rules: policyRules(home.Rules)}
		r.ClusterRoleBinding = &rbacv1.ClusterRoleBinding{TypeMeta: typeMeta(rbacv1.SchemeGroupVersion.String(), "ClusterRoleBinding"), ObjectMeta: meta(""), Subjects: subject,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}}
	}
	return r
}

// Objects lists the RBAC objects in creation order.
func (r RBAC) Objects() []runtime.Object {
	out := []runtime.Object{r.ServiceAccount, r.Role, r.RoleBinding}
	if r.ClusterRole != nil {
		out = append(out, r.ClusterRole, r.ClusterRoleBinding)
	}
	return out
}

// RemoteClusterRole is what the credentials of a cluster the runner reaches through a
// kubeconfig Secret must be allowed: a ClusterRole for its admin to bind to them.
func RemoteClusterRole(name string, a ClusterAccess) *rbacv1.ClusterRole {
	return &rbacv1.ClusterRole{TypeMeta: typeMeta(rbacv1.SchemeGroupVersion.String(), "ClusterRole"),
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{managedByLabel: "planrun"},
			Annotations: map[string]string{stepsAnnotation: strings.Join(a.Steps, ","), clusterAnnotation: a.Cluster}},
		Rules: policyRules(a.Rules)}
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}
