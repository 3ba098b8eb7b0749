package incluster

import (
	"slices"
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	_ "planrun.dev/planrun/steps" // registers the step and datastore types
	"planrun.dev/planrun/steps/kube"
)

func parse(t *testing.T, body string) *engine.Plan {
	t.Helper()
	p, err := engine.Parse("plan.yaml", []byte("apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: p}\n"+body), engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// grants says whether rules allow verb on resource of group.
func grants(rules []kube.Rule, group, resource, verb string) bool {
	for _, r := range rules {
		if (slices.Contains(r.Groups, group) || slices.Contains(r.Groups, "*")) &&
			(slices.Contains(r.Resources, resource) || slices.Contains(r.Resources, "*")) && slices.Contains(r.Verbs, verb) {
			return true
		}
	}
	return false
}

// TestPlanAccess: the access of a plan's steps (and datastores) is gathered per cluster, with
// the steps that need it; a step whose cluster cannot be known before it runs is an error at
// its place in the plan.
func TestPlanAccess(t *testing.T) {
	type need struct{ cluster, group, resource, verb string }
	for _, tc := range []struct {
		name    string
		body    string
		want    []need
		notWant []need
		steps   map[string][]string
		err     string
	}{
		{
			name: "one cluster, get and wait",
			body: `clusters: {main: {}}
steps:
  - {id: get, type: kube.get, with: {apiVersion: apps/v1, kind: Deployment, namespace: a, name: web}}
  - {id: wait, type: kube.wait, with: {apiVersion: v1, kind: ConfigMap, namespace: a, name: go, condition: "object != nil"}}
  - {id: check, type: assert, with: {that: "true"}}
`,
			want:    []need{{"main", "apps", "deployments", "get"}, {"main", "", "configmaps", "watch"}},
			notWant: []need{{"main", "apps", "deployments", "delete"}, {"main", "", "secrets", "get"}},
			steps:   map[string][]string{"main": {"get", "wait"}},
		},
		{
			name: "two clusters, credentials on the other",
			body: `clusters: {src: {}, dst: {}}
steps:
  - {id: backup, type: kube.backup, with: {cluster: src, to: /tmp/b, resources: [configmaps], credentialsFrom: {cluster: dst, namespace: n, name: keys}}}
`,
			want:    []need{{"src", "", "configmaps", "list"}, {"dst", "", "secrets", "get"}},
			notWant: []need{{"src", "", "secrets", "get"}},
			steps:   map[string][]string{"src": {"backup"}, "dst": {"backup"}},
		},
		{
			name: "datastore secrets",
			body: `clusters: {mgmt: {}}
datastores:
  etcd: {endpoints: ["https://127.0.0.1:2379"], tls: {secret: {cluster: mgmt, namespace: n, name: certs}}}
steps:
  - {id: get, type: kube.get, with: {apiVersion: v1, kind: Namespace, name: n}}
`,
			want:  []need{{"mgmt", "", "secrets", "get"}, {"mgmt", "", "namespaces", "get"}},
			steps: map[string][]string{"mgmt": {"datastore etcd", "get"}},
		},
		{
			name: "a step without its cluster in a plan of two",
			body: `clusters: {src: {}, dst: {}}
steps:
  - {id: ok, type: kube.get, with: {cluster: src, apiVersion: v1, kind: Namespace, name: n}}
  - {id: which, type: kube.get, with: {cluster: "${{ 'src' }}", apiVersion: v1, kind: Namespace, name: n}}
`,
			err: `plan.yaml:7:5: step "which": its cluster is only known when it runs`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PlanAccess(parse(t, tc.body))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			byName := map[string]ClusterAccess{}
			for _, a := range got {
				byName[a.Cluster] = a
			}
			for _, n := range tc.want {
				if !grants(byName[n.cluster].Rules, n.group, n.resource, n.verb) {
					t.Errorf("%s: no %s on %s.%s in %+v", n.cluster, n.verb, n.resource, n.group, byName[n.cluster].Rules)
				}
			}
			for _, n := range tc.notWant {
				if grants(byName[n.cluster].Rules, n.group, n.resource, n.verb) {
					t.Errorf("%s: %s on %s.%s granted: %+v", n.cluster, n.verb, n.resource, n.group, byName[n.cluster].Rules)
				}
			}
			for c, steps := range tc.steps {
				if !slices.Equal(byName[c].Steps, steps) {
					t.Errorf("%s: steps %v, want %v", c, byName[c].Steps, steps)
				}
			}
		})
	}
}

// TestRunnerJob: the runner Job runs planrun runner for the run with every plan cluster mapped
// (its own through the ServiceAccount, the others through their Secrets, mounted read-only), a
// failed run or a bad argument fails the Job at once while a killed or evicted pod is replaced,
// and the pod runs unprivileged.
func TestRunnerJob(t *testing.T) {
	owner := metav1.OwnerReference{APIVersion: "planrun.dev/v1alpha1", Kind: "PlanRun", Name: "r1", UID: "u"}
	job, err := newJob("planrun-r1-runner", "runs", "r1", "k8s:///runs?lease=30s", []string{"home", "remote"}, owner, Options{
		Image: "planrun:v1", ClusterSecrets: map[string]string{"remote": "remote-kubeconfig"}, HostNetwork: true,
		APIServer: "https://127.0.0.1:6443", NoRollback: true, Verbose: 2})
	if err != nil {
		t.Fatal(err)
	}
	pod := job.Spec.Template.Spec
	c := pod.Containers[0]
	wantArgs := []string{"runner", "r1", "--state", "k8s:///runs?lease=30s", "--cluster-kubeconfig", "home=",
		"--cluster-kubeconfig", "remote=/var/run/planrun/clusters/0/kubeconfig", "--no-rollback", "-vv"}
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args %q, want %q", c.Args, wantArgs)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["KUBERNETES_SERVICE_HOST"] != "127.0.0.1" || env["KUBERNETES_SERVICE_PORT"] != "6443" || !pod.HostNetwork {
		t.Errorf("env %v, host network %v: want the API server's address on the node's network", env, pod.HostNetwork)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		mounted = mounted || m.MountPath == "/var/run/planrun/clusters/0" && m.ReadOnly
	}
	if !mounted {
		t.Errorf("the remote cluster's Secret is not mounted read-only: %+v", c.VolumeMounts)
	}
	rules := job.Spec.PodFailurePolicy.Rules
	if rules[1].Action != batchv1.PodFailurePolicyActionFailJob || !slices.Equal(rules[1].OnExitCodes.Values, []int32{1, 2, 4}) ||
		rules[0].Action != batchv1.PodFailurePolicyActionIgnore {
		t.Errorf("pod failure policy %+v", rules)
	}
	if job.OwnerReferences[0].UID != "u" || pod.ServiceAccountName != "planrun-r1-runner" || *c.SecurityContext.ReadOnlyRootFilesystem != true || *pod.SecurityContext.RunAsNonRoot != true {
		t.Errorf("owner %v, service account %q, security %+v %+v", job.OwnerReferences, pod.ServiceAccountName, c.SecurityContext, pod.SecurityContext)
	}

	for _, bad := range []string{"http://127.0.0.1:6443", "127.0.0.1:6443", "https://", "https://proxy.example/k8s/clusters/c-1"} {
		if _, err := newJob("j", "runs", "r1", "k8s:///runs", nil, owner, Options{APIServer: bad}); err == nil {
			t.Errorf("API server %q accepted", bad)
		}
	}
}

// TestObjectName: runner objects are named after the run, within a label value's 63 characters,
// and two long run ids never share one.
func TestObjectName(t *testing.T) {
	long := strings.Repeat("a", 70)
	for _, tc := range []struct{ runID, want string }{
		{"r1", "planrun-r1-runner"},
		{long + "x", ""},
	} {
		got := ObjectName(tc.runID)
		if tc.want != "" && got != tc.want || len(got) > 63 {
			t.Errorf("ObjectName(%q) = %q", tc.runID, got)
		}
	}
	if ObjectName(long+"x") == ObjectName(long+"y") {
		t.Error("two long run ids share a runner name")
	}
}
