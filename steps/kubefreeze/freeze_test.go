package kubefreeze_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/engine"
	_ "planrun.dev/planrun/steps"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubefreeze"
)

var clusters []*kubetest.Cluster

func TestMain(m *testing.M) { kubetest.Main(m, 1, &clusters) }

func main() map[string]*kubetest.Cluster { return map[string]*kubetest.Cluster{"main": clusters[0]} }

var widgetGVR = schema.GroupVersionResource{Group: "freeze.example.com", Version: "v1", Resource: "widgets"}

func ctx() context.Context { return context.Background() }

// createConfigMap creates a ConfigMap for real (no dry run) and returns the API error.
func createConfigMap(ns, name string) error {
	_, err := clusters[0].Typed.CoreV1().ConfigMaps(ns).Create(ctx(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	return err
}

// eventually polls f for up to 30 s: policies take effect asynchronously.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err = f(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

func getPolicy(t *testing.T, name string) (*admissionv1.ValidatingAdmissionPolicy, *admissionv1.ValidatingAdmissionPolicyBinding) {
	t.Helper()
	p, err := clusters[0].Typed.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("policy %s: %v", name, err)
	}
	b, err := clusters[0].Typed.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("binding %s: %v", name, err)
	}
	return p, b
}

func assertGone(t *testing.T, name string) {
	t.Helper()
	_, err := clusters[0].Typed.AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx(), name, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("policy %s: want NotFound, got %v", name, err)
	}
	_, err = clusters[0].Typed.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx(), name, metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("binding %s: want NotFound, got %v", name, err)
	}
}

func TestBlockAndUnblockResources(t *testing.T) {
	kubetest.Need(t, clusters)
	ns, other := clusters[0].Namespace(t), clusters[0].Namespace(t)
	if err := createConfigMap(ns, "before"); err != nil {
		t.Fatal(err)
	}
	run := kubetest.Apply(t, main(), fmt.Sprintf(`
steps:
  - id: freeze
    type: kube.blockWrites
    with:
      resources: [configmaps]
      namespaces: [%s]
      exemptResources: [leases]
      message: catalog migration in progress
`, ns), kubetest.Options{RunID: "r1"})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	out := run.Outputs(t, "freeze")
	name := kubefreeze.DefaultName("r1", "freeze")
	if out["policy"] != name || out["binding"] != name || out["proven"] != true || out["probe"] != "ConfigMap "+ns+"/planrun-freeze-probe" {
		t.Fatalf("outputs %v", out)
	}
	if name != "planrun-freeze-r1-freeze" {
		t.Fatalf("default name %s", name)
	}
	p, b := getPolicy(t, name)
	rules := p.Spec.MatchConstraints.ResourceRules
	if len(rules) != 1 || !slices.Equal(rules[0].APIGroups, []string{""}) || !slices.Equal(rules[0].Resources, []string{"configmaps"}) ||
		fmt.Sprint(rules[0].Operations) != "[CREATE UPDATE DELETE]" || *rules[0].Scope != admissionv1.NamespacedScope {
		t.Fatalf("rules %+v", rules)
	}
	ex := p.Spec.MatchConstraints.ExcludeResourceRules
	if len(ex) != 1 || !slices.Equal(ex[0].APIGroups, []string{"coordination.k8s.io"}) || !slices.Equal(ex[0].Resources, []string{"leases", "leases/*"}) {
		t.Fatalf("exclusions %+v", ex)
	}
	if sel := p.Spec.MatchConstraints.NamespaceSelector; sel == nil || len(sel.MatchExpressions) != 1 || !slices.Equal(sel.MatchExpressions[0].Values, []string{ns}) {
		t.Fatalf("namespace selector %+v", p.Spec.MatchConstraints.NamespaceSelector)
	}
	if v := p.Spec.Validations; len(v) != 1 || v[0].Expression != "false" || v[0].Message != "catalog migration in progress" {
		t.Fatalf("validations %+v", v)
	}
	if b.Spec.PolicyName != name || !slices.Equal(b.Spec.ValidationActions, []admissionv1.ValidationAction{admissionv1.Deny}) {
		t.Fatalf("binding %+v", b.Spec)
	}
	if p.Labels["app.kubernetes.io/managed-by"] != "planrun" || p.Labels["planrun.dev/run"] != "r1" {
		t.Fatalf("labels %v", p.Labels)
	}

	// The freeze is real: create, update and delete of ConfigMaps in ns are refused, even for the
	// admin (system:masters); other namespaces and other kinds are not frozen.
	err := createConfigMap(ns, "during")
	if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "catalog migration in progress") {
		t.Fatalf("create in frozen namespace: %v", err)
	}
	err = clusters[0].Typed.CoreV1().ConfigMaps(ns).Delete(ctx(), "before", metav1.DeleteOptions{})
	if err == nil || !strings.Contains(err.Error(), "catalog migration in progress") {
		t.Fatalf("delete in frozen namespace: %v", err)
	}
	if err := createConfigMap(other, "during"); err != nil {
		t.Fatalf("create in another namespace: %v", err)
	}
	if _, err := clusters[0].Typed.CoreV1().Secrets(ns).Create(ctx(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create a Secret in the frozen namespace: %v", err)
	}

	// Unblock with proof: writes are allowed at once afterwards.
	run = kubetest.Apply(t, main(), `
steps:
  - {id: thaw, type: kube.unblockWrites, with: {name: `+name+`, prove: true}}
  - {id: again, type: kube.unblockWrites, with: {name: `+name+`, prove: true}}
`, kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if out := run.Outputs(t, "thaw"); out["found"] != true || out["probe"] != "ConfigMap "+ns+"/planrun-freeze-probe" {
		t.Fatalf("thaw outputs %v", out)
	}
	if out := run.Outputs(t, "again"); out["found"] != false {
		t.Fatalf("second unblock outputs %v", out)
	}
	assertGone(t, name)
	if err := createConfigMap(ns, "after"); err != nil {
		t.Fatalf("create after unblocking: %v", err)
	}
}

// A whole API group served from a CRD, as Service Catalog's is after its move to CRDs.
func TestBlockGroupWithExemptions(t *testing.T) {
	kubetest.Need(t, clusters)
	installWidgets(t)
	ns := clusters[0].Namespace(t)
	run := kubetest.Apply(t, main(), `
steps:
  - id: freeze
    type: kube.blockWrites
    with:
      name: widgets-frozen
      groups: [freeze.example.com]
      operations: [create, update]
      exemptUsers: [system:serviceaccount:catalog:migrator]
      exemptGroups: [migrators]
`, kubetest.Options{RunID: "group-run"})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	out := run.Outputs(t, "freeze")
	if out["policy"] != "widgets-frozen" || out["probe"] != "Widget default/planrun-freeze-probe" ||
		out["message"] != "writes are blocked while a migration is in progress (planrun run group-run, step freeze)" {
		t.Fatalf("outputs %v", out)
	}
	p, _ := getPolicy(t, "widgets-frozen")
	if r := p.Spec.MatchConstraints.ResourceRules; len(r) != 1 || !slices.Equal(r[0].APIGroups, []string{"freeze.example.com"}) ||
		!slices.Equal(r[0].Resources, []string{"*"}) || fmt.Sprint(r[0].Operations) != "[CREATE UPDATE]" || *r[0].Scope != admissionv1.AllScopes {
		t.Fatalf("rules %+v", r)
	}
	mc := p.Spec.MatchConditions
	if len(mc) != 2 || mc[0].Expression != `!(request.userInfo.username in ["system:serviceaccount:catalog:migrator"])` ||
		mc[1].Expression != `!request.userInfo.groups.exists(g, g in ["migrators"])` {
		t.Fatalf("match conditions %+v", mc)
	}
	_, err := clusters[0].Dynamic.Resource(widgetGVR).Namespace(ns).Create(ctx(), widget("w"), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "planrun run group-run") {
		t.Fatalf("create a widget: %v", err)
	}
	// An exempt group may still write (system:masters only to pass RBAC: it is not exempt).
	if _, err := impersonated(t, "migrator-bot", "migrators", "system:masters").Resource(widgetGVR).Namespace(ns).Create(ctx(), widget("by-migrator"), metav1.CreateOptions{}); err != nil {
		t.Fatalf("exempt group: %v", err)
	}
	// Rollback of a later failure lifts the freeze (builtin undo).
	run = kubetest.Apply(t, main(), `
steps:
  - {id: freeze, type: kube.blockWrites, with: {name: widgets-frozen, groups: [freeze.example.com]}}
  - {id: boom, type: assert, with: {that: "false"}}
`, kubetest.Options{})
	var re *engine.RunError
	if !errors.As(run.Err, &re) || re.Status != engine.RunRolledBack {
		t.Fatalf("want rolled back, got %v", run.Err)
	}
	if st := run.Journal.Step("freeze").Status; st != engine.StepRolledBack {
		t.Fatalf("freeze status %s", st)
	}
	assertGone(t, "widgets-frozen")
	eventually(t, "create a widget after rollback", func() error {
		_, err := clusters[0].Dynamic.Resource(widgetGVR).Namespace(ns).Create(ctx(), widget("after"), metav1.CreateOptions{})
		return err
	})
}

// TestBlockGroupSubresources: with subresources, a frozen group refuses status writes too.
func TestBlockGroupSubresources(t *testing.T) {
	kubetest.Need(t, clusters)
	installWidgets(t)
	ns := clusters[0].Namespace(t)
	w, err := clusters[0].Dynamic.Resource(widgetGVR).Namespace(ns).Create(ctx(), widget("w"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	run := kubetest.Apply(t, main(), `
steps:
  - {id: freeze, type: kube.blockWrites, with: {name: widgets-status, groups: [freeze.example.com], subresources: true}}
`, kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	t.Cleanup(func() {
		kubetest.Apply(t, main(), "steps:\n  - {id: thaw, type: kube.unblockWrites, with: {name: widgets-status}}\n", kubetest.Options{})
	})
	p, _ := getPolicy(t, "widgets-status")
	if r := p.Spec.MatchConstraints.ResourceRules; len(r) != 1 || !slices.Equal(r[0].Resources, []string{"*/*"}) {
		t.Fatalf("rules %+v", r)
	}
	w.Object["status"] = map[string]any{"phase": "Moved"}
	_, err = clusters[0].Dynamic.Resource(widgetGVR).Namespace(ns).UpdateStatus(ctx(), w, metav1.UpdateOptions{})
	if err == nil || !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "migration is in progress") {
		t.Fatalf("status write during the freeze: %v", err)
	}
}

func TestBlockDryRunAndIdempotency(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	plan := fmt.Sprintf(`
steps:
  - {id: freeze, type: kube.blockWrites, with: {resources: [configmaps, secrets], namespaces: [%s], subresources: true}}
`, ns)
	name := kubefreeze.DefaultName("idem", "freeze")
	run := kubetest.Apply(t, main(), plan, kubetest.Options{RunID: "idem", DryRun: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if out := run.Outputs(t, "freeze"); out["dryRun"] != true || out["policy"] != name || out["proven"] != nil {
		t.Fatalf("dry-run outputs %v", out)
	}
	assertGone(t, name)
	if err := createConfigMap(ns, "dry"); err != nil {
		t.Fatalf("dry run froze writes: %v", err)
	}

	// Twice with the same run id, as after a crash in the middle of the step: it converges.
	for i := 0; i < 2; i++ {
		run = kubetest.Apply(t, main(), plan, kubetest.Options{RunID: "idem"})
		if run.Err != nil {
			t.Fatalf("run %d: %v", i+1, run.Err)
		}
	}
	p, _ := getPolicy(t, name)
	if r := p.Spec.MatchConstraints.ResourceRules; len(r) != 1 || !slices.Equal(r[0].Resources, []string{"configmaps", "secrets", "configmaps/*", "secrets/*"}) {
		t.Fatalf("rules %+v", r)
	}
	// An unblock in a dry run leaves the freeze in place.
	run = kubetest.Apply(t, main(), "steps:\n  - {id: thaw, type: kube.unblockWrites, with: {name: "+name+"}}\n", kubetest.Options{DryRun: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	getPolicy(t, name)
	if err := createConfigMap(ns, "still-frozen"); err == nil {
		t.Fatal("writes allowed after a dry-run unblock")
	}
	run = kubetest.Apply(t, main(), "steps:\n  - {id: thaw, type: kube.unblockWrites, with: {name: "+name+"}}\n", kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	assertGone(t, name)
}

func TestBlockErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	restricted := map[string]*kubetest.Cluster{"main": clusters[0].Restricted(t, "nobody")}
	cases := []struct {
		name     string
		clusters map[string]*kubetest.Cluster
		with     string
		want     string
	}{
		{"unknown resource", main(), `{resources: [widgetz]}`,
			`step "s" failed: resources: unknown resource "widgetz" on cluster main`},
		{"unknown exempt resource", main(), `{resources: [configmaps], exemptResources: [leasez]}`,
			`step "s" failed: exemptResources: unknown resource "leasez" on cluster main`},
		{"missing namespace", main(), `{resources: [configmaps], namespaces: [no-such-ns]}`,
			`step "s" failed: the freeze cannot be proven: no dry-run write reaches admission (ConfigMap no-such-ns/planrun-freeze-probe: create: namespaces "no-such-ns" not found; no object to update or delete); set prove: false`},
		{"unknown group", main(), `{groups: [nothing.example.com]}`,
			`step "s" failed: the freeze cannot be proven: no served resource matches ValidatingAdmissionPolicy planrun-freeze-run-s (set prove: false)`},
		{"own identity exempt", main(), `{resources: [configmaps], namespaces: [` + ns + `], exemptGroups: [system:masters]}`,
			`step "s" failed: the freeze cannot be proven: planrun's own user planrun-admin is in exempt group system:masters (set prove: false)`},
		{"forbidden", restricted, `{resources: [configmaps]}`,
			`step "s" failed: ValidatingAdmissionPolicy planrun-freeze-run-s: validatingadmissionpolicies.admissionregistration.k8s.io "planrun-freeze-run-s" is forbidden: User "nobody" cannot patch resource "validatingadmissionpolicies" in API group "admissionregistration.k8s.io" at the cluster scope`},
		{"invalid operation", main(), `{resources: [configmaps], operations: ["${{ 'FROB' }}"]}`,
			`plan.yaml:5:5: with: operations: "FROB" is not one of CREATE, UPDATE, DELETE, CONNECT`},
		{"invalid name", main(), `{resources: [configmaps], name: "${{ 'Not_A_Name' }}"}`,
			`plan.yaml:5:5: with: name: "Not_A_Name" is not a valid object name (lower-case letters, digits, '-' and '.')`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run := kubetest.Apply(t, tc.clusters, "steps:\n  - {id: s, type: kube.blockWrites, with: "+tc.with+"}\n", kubetest.Options{})
			kubetest.WantRunError(t, run, `step "s" failed: `, tc.want)
			// Nothing is left behind by a failed freeze.
			assertGone(t, "planrun-freeze-run-s")
		})
	}
	// A plan whose with: is wrong from the start does not load.
	_, err := engine.Load(writePlan(t, "steps:\n  - {id: s, type: kube.blockWrites, with: {namespaces: [x]}}\n"), engine.LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), `step "s": with: groups, resources: at least one is required`) {
		t.Fatalf("load error %v", err)
	}
	run := kubetest.Apply(t, restricted, "steps:\n  - {id: s, type: kube.unblockWrites, with: {name: x}}\n", kubetest.Options{})
	want := `step "s" failed: ValidatingAdmissionPolicy x: validatingadmissionpolicies.admissionregistration.k8s.io "x" is forbidden: User "nobody" cannot get resource`
	if run.Err == nil || !strings.Contains(run.Err.Error(), want) {
		t.Fatalf("unblock as nobody: %v\nwant %q", run.Err, want)
	}
}

func writePlan(t *testing.T, body string) string {
	path := filepath.Join(t.TempDir(), "plan.yaml")
	if err := os.WriteFile(path, []byte("apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: test}\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaultName(t *testing.T) {
	for _, tc := range []struct{ run, step, want string }{
		{"r1", "freeze", "planrun-freeze-r1-freeze"},
		{"Svc_Cat", "freeze", "planrun-freeze-svc-cat-freeze-"},
		{strings.Repeat("x", 80), "freeze", "planrun-freeze-" + strings.Repeat("x", 39) + "-"},
	} {
		got := kubefreeze.DefaultName(tc.run, tc.step)
		if !strings.HasPrefix(got, tc.want) || len(got) > 63 || (got != tc.want && len(got) != len(strings.TrimRight(tc.want, "-"))+9) {
			t.Errorf("DefaultName(%q, %q) = %q, want prefix %q", tc.run, tc.step, got, tc.want)
		}
	}
}

func installWidgets(t *testing.T) {
	t.Helper()
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{"name": "widgets.freeze.example.com"},
		"spec": map[string]any{
			"group": "freeze.example.com", "scope": "Namespaced",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"subresources": map[string]any{"status": map[string]any{}},
				"schema":       map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
		},
	}}
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	_, err := clusters[0].Dynamic.Resource(gvr).Apply(ctx(), crd.GetName(), crd, metav1.ApplyOptions{FieldManager: "test", Force: true})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "widgets served", func() error {
		_, err := clusters[0].Dynamic.Resource(widgetGVR).Namespace("default").List(ctx(), metav1.ListOptions{})
		return err
	})
}

func widget(name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "freeze.example.com/v1", "kind": "Widget", "metadata": map[string]any{"name": name}}}
}

// impersonated is a dynamic client acting as user in groups.
func impersonated(t *testing.T, user string, groups ...string) dynamic.Interface {
	cfg := rest.CopyConfig(clusters[0].CP.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return dynamic.NewForConfigOrDie(cfg)
}
