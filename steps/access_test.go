package steps_test

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
	_ "planrun.dev/planrun/steps"
	"planrun.dev/planrun/steps/kube"
)

// TestAccess loads a step of each type, as `planrun rbac` does (without running it), and checks
// the API access its config declares. want and not are "verb resource[.group][/subresource]
// [@cluster]": widgets.example.com stands for any resource, no @ for the step's own cluster.
func TestAccess(t *testing.T) {
	const twoClusters = "clusters: {main: {}, garden: {}}\n"
	const movers = "clusters: {source: {}, target: {}}\n"
	const datastore = "datastores: {src: {endpoints: [\"http://127.0.0.1:2379\"]}}\n"
	tests := []struct {
		name, typ, with, head string
		want, not             []string
	}{
		{"get", "kube.get", `{apiVersion: apps/v1, kind: Deployment, namespace: a, name: web}`, "",
			[]string{"get deployments.apps"}, []string{"list deployments.apps", "get configmaps"}},
		{"list", "kube.list", `{apiVersion: v1, kind: ConfigMap, namespaces: [a, b], labelSelector: app=web}`, "",
			[]string{"list configmaps"}, []string{"get configmaps", "watch configmaps"}},
		{"apply manifests", "kube.apply", `{namespace: a, manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}], manifest: "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: apps/v1, kind: Deployment, metadata: {name: d}}\n"}`, "",
			[]string{"get configmaps", "create configmaps", "patch configmaps", "delete configmaps", "patch deployments.apps", "create deployments.apps"},
			[]string{"update configmaps", "list configmaps", "create secrets", "create widgets.example.com"}},
		{"apply files", "kube.apply", `{files: [objects.yaml]}`, "",
			[]string{"create widgets.example.com", "patch widgets.example.com", "delete widgets.example.com"}, []string{"update widgets.example.com"}},
		{"apply kind in ${{ }}", "kube.apply", `{manifests: [{apiVersion: v1, kind: "${{ 'ConfigMap' }}", metadata: {name: c, namespace: a}}]}`, "",
			[]string{"create widgets.example.com"}, nil},
		{"patch by name", "kube.patch", `{apiVersion: apps/v1, kind: Deployment, namespace: a, name: web, patch: {spec: {replicas: 1}}}`, "",
			[]string{"get deployments.apps", "patch deployments.apps"}, []string{"list deployments.apps", "update deployments.apps"}},
		{"patch status by selector", "kube.patch", `{apiVersion: apps/v1, kind: Deployment, labelSelector: app=web, subresource: status, patch: {status: {x: 1}}}`, "",
			[]string{"get deployments.apps", "list deployments.apps", "patch deployments.apps/status"}, []string{"patch deployments.apps"}},
		{"delete by name", "kube.delete", `{apiVersion: v1, kind: ConfigMap, namespace: a, name: c}`, "",
			[]string{"get configmaps", "delete configmaps"}, []string{"list configmaps", "patch configmaps", "deletecollection configmaps"}},
		{"delete by selector", "kube.delete", `{apiVersion: v1, kind: ConfigMap, labelSelector: app=web, wait: true, removeFinalizers: true}`, "",
			[]string{"get configmaps", "list configmaps", "delete configmaps", "patch configmaps"}, nil},
		{"backup", "kube.backup", `{to: /tmp/backup, resources: [configmaps, {apiVersion: apps/v1, kind: Deployment}, statefulsets], namespaces: [a], includeBoundVolumes: true}`, "",
			[]string{"list configmaps", "list deployments.apps", "list statefulsets.apps", "get namespaces", "list persistentvolumeclaims", "list persistentvolumes"},
			[]string{"get configmaps", "list secrets", "get secrets", "list widgets.example.com"}},
		{"backup of everything", "kube.backup", `{to: /tmp/backup, allResources: true}`, "",
			[]string{"list widgets.example.com"}, []string{"get widgets.example.com", "get namespaces"}},
		{"backup credentials", "kube.backup", `{cluster: main, to: "s3://b/p?region=x", resources: [configmaps], credentialsFrom: {cluster: garden, namespace: g, name: creds}}`, twoClusters,
			[]string{"get secrets@garden", "list configmaps"}, []string{"get secrets", "list configmaps@garden"}},
		{"verifyBackup", "kube.verifyBackup", `{dir: "s3://b/p?region=x", credentialsFrom: {namespace: g, name: creds}}`, "",
			[]string{"get secrets"}, []string{"list secrets"}},
		{"restore", "kube.restore", `{from: /tmp/backup, credentialsFrom: {namespace: g, name: creds}}`, "",
			[]string{"create widgets.example.com", "get widgets.example.com", "update widgets.example.com", "delete widgets.example.com", "update widgets.example.com/status", "create namespaces", "get secrets"},
			[]string{"list widgets.example.com", "patch widgets.example.com"}},
		{"blockWrites", "kube.blockWrites", `{resources: [configmaps], groups: [apps]}`, "",
			[]string{"create validatingadmissionpolicies.admissionregistration.k8s.io", "patch validatingadmissionpolicies.admissionregistration.k8s.io",
				"get validatingadmissionpolicies.admissionregistration.k8s.io", "delete validatingadmissionpolicies.admissionregistration.k8s.io",
				"create validatingadmissionpolicybindings.admissionregistration.k8s.io", "delete validatingadmissionpolicybindings.admissionregistration.k8s.io",
				"create configmaps", "list configmaps", "update configmaps", "update deployments.apps", "create daemonsets.apps"},
			[]string{"delete configmaps", "create secrets", "create selfsubjectreviews.authentication.k8s.io"}},
		{"blockWrites of deletes, exempt users", "kube.blockWrites", `{resources: [configmaps], operations: [DELETE], exemptUsers: [admin]}`, "",
			[]string{"list configmaps", "delete configmaps", "create selfsubjectreviews.authentication.k8s.io"}, []string{"create configmaps", "update configmaps"}},
		{"blockWrites unproven", "kube.blockWrites", `{resources: [configmaps], prove: false}`, "",
			[]string{"create validatingadmissionpolicies.admissionregistration.k8s.io"}, []string{"list configmaps", "create configmaps"}},
		{"unblockWrites", "kube.unblockWrites", `{name: freeze}`, "",
			[]string{"get validatingadmissionpolicies.admissionregistration.k8s.io", "delete validatingadmissionpolicies.admissionregistration.k8s.io",
				"delete validatingadmissionpolicybindings.admissionregistration.k8s.io"},
			[]string{"create validatingadmissionpolicies.admissionregistration.k8s.io", "create widgets.example.com"}},
		{"unblockWrites proven", "kube.unblockWrites", `{name: freeze, prove: true}`, "",
			[]string{"create widgets.example.com", "list widgets.example.com", "update widgets.example.com", "delete widgets.example.com"}, nil},
		{"job", "kube.job", `{namespace: a, image: busybox, command: ["true"]}`, "",
			[]string{"create jobs.batch", "get jobs.batch", "list jobs.batch", "watch jobs.batch", "delete jobs.batch", "list pods", "get pods/log"},
			[]string{"create pods", "get pods", "update jobs.batch"}},
		{"scale", "kube.scale", `{apiVersion: apps/v1, kind: StatefulSet, namespace: a, name: db, replicas: 0, wait: true}`, "",
			[]string{"get statefulsets.apps", "patch statefulsets.apps", "get statefulsets.apps/scale", "update statefulsets.apps/scale", "list pods"},
			[]string{"list statefulsets.apps", "update statefulsets.apps", "patch statefulsets.apps/scale"}},
		{"scale by selector", "kube.scale", `{apiVersion: apps/v1, kind: Deployment, labelSelector: app=web, replicas: 0}`, "",
			[]string{"list deployments.apps", "update deployments.apps/scale"}, []string{"list pods"}},
		{"quiesce", "kube.quiesce", `{namespaces: [a, b]}`, "",
			[]string{"get namespaces", "list pods", "patch deployments.apps", "patch statefulsets.apps", "list replicasets.apps", "get jobs.batch", "patch cronjobs.batch", "patch daemonsets.apps"},
			[]string{"delete pods", "update deployments.apps", "patch pods"}},
		{"copyVolumes", "kube.copyVolumes", `{from: source, to: target, namespaces: [a], repository: "s3://b/p?region=x", credentialsFrom: {cluster: source, namespace: g, name: creds}, serviceAccount: mover}`, movers,
			[]string{"list persistentvolumeclaims@source", "create pods@source", "delete pods@source", "get pods/log@source", "create secrets@source", "list secrets@source", "get serviceaccounts@source", "get namespaces@source",
				"get persistentvolumeclaims@target", "create persistentvolumeclaims@target", "delete persistentvolumeclaims@target", "get storageclasses.storage.k8s.io@target",
				"create pods@target", "get pods/log@target", "update secrets@target", "get secrets@source"},
			[]string{"create persistentvolumeclaims@source", "get storageclasses.storage.k8s.io@source", "create pods", "get secrets"}},
		{"copyVolumes into existing claims", "kube.copyVolumes", `{from: source, to: target, namespaces: [a], repository: "s3://b/p?region=x", createClaims: false}`, movers,
			[]string{"get persistentvolumeclaims@target", "list secrets@target", "delete secrets@target"},
			[]string{"create persistentvolumeclaims@target", "delete persistentvolumeclaims@target", "create secrets@target", "get serviceaccounts@target"}},
		{"verifyVolumes", "kube.verifyVolumes", `{snapshots: {a/data: k1234}, repository: "s3://b/p?region=x", passwordFrom: {cluster: garden, namespace: g, name: pw, key: password}}`, twoClusters,
			[]string{"get persistentvolumeclaims", "create pods", "get pods/log", "list secrets", "create secrets", "get secrets@garden"},
			[]string{"create persistentvolumeclaims", "list persistentvolumeclaims", "get serviceaccounts"}},
		{"wait", "kube.wait", `{apiVersion: apps/v1, kind: Deployment, namespace: a, name: web, condition: "object.status.readyReplicas >= 1"}`, "",
			[]string{"list deployments.apps", "watch deployments.apps"}, []string{"get deployments.apps"}},
		{"files.copy", "files.copy", `{from: /tmp/a, to: "s3://b/p?region=x", toCredentials: {cluster: garden, namespace: g, name: creds}}`, twoClusters,
			[]string{"get secrets@garden"}, []string{"get secrets"}},
		{"etcd.snapshot", "etcd.snapshot", `{datastore: src, to: "s3://b/p/snap.db?region=x", credentialsFrom: {namespace: g, name: creds}}`, datastore,
			[]string{"get secrets"}, []string{"list secrets"}},
		{"etcd.restore", "etcd.restore", `{snapshot: "s3://b/p/snap.db?region=x", dataDir: /tmp/etcd, credentialsFrom: {namespace: g, name: creds}}`, "",
			[]string{"get secrets"}, nil},
	}
	verbs := []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := plantest.Header + tt.head + "steps:\n  - id: s\n    type: " + tt.typ + "\n    with: " + tt.with + "\n"
			p, err := engine.Parse("plan.yaml", []byte(plan), engine.LoadOptions{})
			if err != nil {
				t.Fatalf("plan does not load: %v\n%s", err, plan)
			}
			cfg, _ := p.Step("s").Config()
			needs, ok := cfg.(kube.AccessNeeder)
			if !ok {
				t.Fatalf("%T does not implement kube.AccessNeeder", cfg)
			}
			rules := kube.MergeRules(needs.Access())
			for _, r := range rules {
				for _, v := range r.Verbs {
					if !slices.Contains(verbs, v) {
						t.Errorf("verb %q in %+v", v, r)
					}
				}
			}
			for _, w := range tt.want {
				if !allows(rules, w) {
					t.Errorf("%s not granted by %+v", w, rules)
				}
			}
			for _, w := range tt.not {
				if allows(rules, w) {
					t.Errorf("%s granted by %+v", w, rules)
				}
			}
		})
	}
}

// allows reports whether rules grant "verb resource[.group][/subresource][@cluster]", as RBAC
// would ("*" matches any group, any resource and its subresources).
func allows(rules []kube.Rule, access string) bool {
	verb, what, _ := strings.Cut(access, " ")
	what, cluster, _ := strings.Cut(what, "@")
	what, sub, _ := strings.Cut(what, "/")
	resource, group, _ := strings.Cut(what, ".")
	if sub != "" {
		resource += "/" + sub
	}
	for _, r := range rules {
		if r.Cluster == cluster && (slices.Contains(r.Groups, group) || slices.Contains(r.Groups, "*")) &&
			(slices.Contains(r.Resources, resource) || slices.Contains(r.Resources, "*")) && slices.Contains(r.Verbs, verb) {
			return true
		}
	}
	return false
}

// TestClusterStepsDeclareAccess: every step type whose config names a plan cluster (embeds
// kube.ClusterRef, or has a field tagged plan:"cluster" anywhere, as credentialsFrom's cluster)
// declares its API access.
func TestClusterStepsDeclareAccess(t *testing.T) {
	clusterRef := reflect.TypeOf(kube.ClusterRef{})
	var namesCluster func(t reflect.Type, seen map[reflect.Type]bool) bool
	namesCluster = func(t reflect.Type, seen map[reflect.Type]bool) bool {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] {
			return false
		}
		seen[t] = true
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if f.Anonymous && f.Type == clusterRef || slices.Contains(strings.Split(f.Tag.Get("plan"), ","), "cluster") {
				return true
			}
			if namesCluster(f.Type, seen) {
				return true
			}
		}
		return false
	}
	found := 0
	for _, st := range engine.StepTypes() {
		cfg := st.New()
		if !namesCluster(reflect.TypeOf(cfg), map[reflect.Type]bool{}) {
			continue
		}
		found++
		if _, ok := cfg.(kube.AccessNeeder); !ok {
			t.Errorf("step type %s: its config %T names a cluster but does not implement kube.AccessNeeder", st.Name, cfg)
		}
	}
	if found < 19 {
		t.Errorf("only %d step types name a cluster; the check does not find them", found)
	}
}
