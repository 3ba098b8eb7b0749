package kuberestore_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"planrun.dev/planrun/engine"
	_ "planrun.dev/planrun/steps"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/kube/kubetest"
)

func restorePlan(with string) string {
	return "steps:\n  - id: s\n    type: kube.restore\n    with: " + with + "\n"
}

func num(t *testing.T, out engine.Outputs, key string) int64 {
	t.Helper()
	switch v := out[key].(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	case int:
		return int64(v)
	}
	t.Fatalf("outputs.%s = %#v", key, out[key])
	return 0
}

func widgetCRD() *unstructured.Unstructured {
	return obj("CustomResourceDefinition", "", "widgets.restore.example.com", map[string]any{
		"spec": map[string]any{
			"group": "restore.example.com", "scope": "Namespaced",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"subresources": map[string]any{"status": map[string]any{}},
				"schema":       map[string]any{"openAPIV3Schema": map[string]any{"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}},
		},
		"status": map[string]any{"conditions": []any{map[string]any{"type": "Established", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z", "reason": "Old", "message": "old"}}},
	})
}

func deployment(ns, name string) *unstructured.Unstructured {
	return obj("Deployment", ns, name, map[string]any{
		"spec": map[string]any{"replicas": 3, "selector": map[string]any{"matchLabels": map[string]any{"app": name}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": name}},
				"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "nginx"}}}}},
		"status": map[string]any{"replicas": 3, "readyReplicas": 2, "availableReplicas": 2, "updatedReplicas": 3, "observedGeneration": 3},
	})
}

func configMap(ns, name string, data map[string]any) *unstructured.Unstructured {
	return obj("ConfigMap", ns, name, map[string]any{"data": data})
}

func ownerUID(t *testing.T, u *unstructured.Unstructured) string {
	t.Helper()
	refs := u.GetOwnerReferences()
	if len(refs) != 1 {
		t.Fatalf("%s: owner references %+v", u.GetName(), refs)
	}
	return string(refs[0].UID)
}

// TestRestore restores a backup with a CRD and a CR, a namespace, service account, secret,
// config maps and a Deployment owning a ReplicaSet owning a ConfigMap; then runs it again.
func TestRestore(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := "restore-happy"
	dir := t.TempDir()
	dep := deployment(ns, "web")
	rs := ownedBy(obj("ReplicaSet", ns, "web-1", map[string]any{
		"spec": map[string]any{"replicas": 3, "selector": map[string]any{"matchLabels": map[string]any{"app": "web", "h": "1"}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "web", "h": "1"}},
				"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "image": "nginx"}}}}},
		"status": map[string]any{"replicas": 3}}), dep)
	widget := obj("Widget", ns, "w1", map[string]any{"spec": map[string]any{"size": 3}, "status": map[string]any{"phase": "Ready"}})
	missing := deployment(ns, "gone") // an owner that is in neither the backup nor the cluster
	nsObj := obj("Namespace", "", ns, nil)
	nsObj.SetLabels(map[string]string{"team": "a"})
	objs := []*unstructured.Unstructured{
		widgetCRD(), nsObj,
		obj("ServiceAccount", ns, "sa1", nil),
		obj("Secret", ns, "s1", map[string]any{"type": "Opaque", "data": map[string]any{"k": base64.StdEncoding.EncodeToString([]byte("v"))}}),
		configMap(ns, "cm1", map[string]any{"a": "1"}),
		ownedBy(configMap(ns, "rs-child", map[string]any{"b": "2"}), rs),
		ownedBy(configMap(ns, "widget-child", map[string]any{"c": "3"}), widget), // its owner comes later
		ownedBy(configMap(ns, "orphan", nil), missing),
		dep, rs, widget,
	}
	writeBackup(t, dir, objs)
	plan := restorePlan(fmt.Sprintf(`{from: %q, restoreStatus: true}`, dir))
	run := kubetest.Apply(t, mainCluster(), plan, kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	out := run.Outputs(t, "s")
	if num(t, out, "restored") != int64(len(objs)) || num(t, out, "failed") != 0 || num(t, out, "skipped") != 0 {
		t.Fatalf("outputs %v", out)
	}
	if w := fmt.Sprint(out["warnings"]); !strings.Contains(w, "ConfigMap "+ns+"/orphan: owner reference to Deployment "+ns+"/gone dropped") {
		t.Fatalf("warnings %v", w)
	}

	liveDep := c.Get(t, kinds["Deployment"].gvr, ns, "web")
	liveRS := c.Get(t, kinds["ReplicaSet"].gvr, ns, "web-1")
	liveW := c.Get(t, widgets, ns, "w1")
	for _, o := range []*unstructured.Unstructured{liveDep, liveRS, liveW} {
		if o.GetUID() == "" || o.GetUID() == dep.GetUID() || o.GetUID() == rs.GetUID() || o.GetUID() == widget.GetUID() {
			t.Fatalf("%s kept an old UID", o.GetName())
		}
		if o.GetCreationTimestamp().Year() == 2020 || len(o.GetManagedFields()) == 0 || o.GetManagedFields()[0].Manager != "planrun" || strings.Contains(fmt.Sprint(o.GetAnnotations()), "planrun.dev/") {
			t.Fatalf("%s: metadata %v", o.GetName(), o.Object["metadata"])
		}
	}
	if got := ownerUID(t, liveRS); got != string(liveDep.GetUID()) {
		t.Fatalf("ReplicaSet owner UID %s, want the Deployment's %s", got, liveDep.GetUID())
	}
	if got := ownerUID(t, c.Get(t, cmGVR, ns, "rs-child")); got != string(liveRS.GetUID()) {
		t.Fatalf("rs-child owner UID %s, want the ReplicaSet's %s", got, liveRS.GetUID())
	}
	if got := ownerUID(t, c.Get(t, cmGVR, ns, "widget-child")); got != string(liveW.GetUID()) {
		t.Fatalf("widget-child owner UID %s, want the Widget's %s", got, liveW.GetUID())
	}
	if refs := c.Get(t, cmGVR, ns, "orphan").GetOwnerReferences(); len(refs) != 0 {
		t.Fatalf("orphan kept %v", refs)
	}
	if r, _, _ := unstructured.NestedInt64(liveDep.Object, "status", "readyReplicas"); r != 2 {
		t.Fatalf("deployment status %v", liveDep.Object["status"])
	}
	if r, _, _ := unstructured.NestedInt64(liveRS.Object, "status", "replicas"); r != 3 {
		t.Fatalf("replicaset status %v", liveRS.Object["status"])
	}
	if p, _, _ := unstructured.NestedString(liveW.Object, "status", "phase"); p != "Ready" {
		t.Fatalf("widget status %v", liveW.Object["status"])
	}
	if s, _, _ := unstructured.NestedInt64(liveW.Object, "spec", "size"); s != 3 {
		t.Fatalf("widget spec %v", liveW.Object["spec"])
	}
	if l := c.Get(t, kinds["Namespace"].gvr, "", ns).GetLabels()["team"]; l != "a" {
		t.Fatalf("namespace labels")
	}
	sec, err := c.Typed.CoreV1().Secrets(ns).Get(context.Background(), "s1", metav1.GetOptions{})
	if err != nil || string(sec.Data["k"]) != "v" {
		t.Fatalf("secret %v %v", sec, err)
	}

	// Run twice: everything is recognised as already restored.
	run = kubetest.Apply(t, mainCluster(), plan, kubetest.Options{RunID: "again"})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	out = run.Outputs(t, "s")
	if num(t, out, "restored") != 0 || num(t, out, "updated") != 0 || num(t, out, "failed") != 0 ||
		num(t, out, "skipped") != int64(len(objs)) || num(t, out, "alreadyRestored") != int64(len(objs)) {
		t.Fatalf("second run outputs %v", out)
	}
	if c.Get(t, kinds["ReplicaSet"].gvr, ns, "web-1").GetUID() != liveRS.GetUID() {
		t.Fatal("second run replaced the ReplicaSet")
	}
}

func TestConflictPolicies(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	for _, policy := range []string{"skip", "update", "recreate"} {
		t.Run(policy, func(t *testing.T) {
			dir := t.TempDir()
			writeBackup(t, dir, []*unstructured.Unstructured{configMap(ns, policy, map[string]any{"v": "backup"})})
			live, err := c.Typed.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: policy}, Data: map[string]string{"v": "live"}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			run := kubetest.Apply(t, mainCluster(), restorePlan(fmt.Sprintf(`{from: %q, onConflict: %s, includeResources: [configmaps], labelSelector: ""}`, dir, policy)), kubetest.Options{})
			if run.Err != nil {
				t.Fatal(run.Err)
			}
			got, err := c.Typed.CoreV1().ConfigMaps(ns).Get(context.Background(), policy, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want, sameUID := map[string]string{"skip": "live", "update": "backup", "recreate": "backup"}[policy], policy != "recreate"
			if got.Data["v"] != want || (got.UID == live.UID) != sameUID {
				t.Fatalf("%s: data %v uid %s (was %s)", policy, got.Data, got.UID, live.UID)
			}
			out := run.Outputs(t, "s")
			if num(t, out, "failed") != 0 {
				t.Fatalf("outputs %v", out)
			}
		})
	}
}

// TestPerClusterConfigMapsNotRestored: the root CA ConfigMap a cluster writes into every
// namespace is never restored from another cluster's backup, even with onConflict update or
// recreate, and not created where the target has none yet.
func TestPerClusterConfigMapsNotRestored(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	for _, policy := range []string{"update", "recreate"} {
		t.Run(policy, func(t *testing.T) {
			ns, fresh := c.Namespace(t), c.Namespace(t)
			dir := t.TempDir()
			writeBackup(t, dir, []*unstructured.Unstructured{
				configMap(ns, "kube-root-ca.crt", map[string]any{"ca.crt": "source CA"}),
				configMap(ns, "app", map[string]any{"v": "backup"}),
			})
			// The target's own, as its root CA publisher wrote it (this control plane has no
			// controllers: the test writes it).
			if _, err := c.Typed.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"}, Data: map[string]string{"ca.crt": "target CA"}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			for _, target := range []string{ns, fresh} {
				run := kubetest.Apply(t, mainCluster(), restorePlan(fmt.Sprintf(`{from: %q, onConflict: %s, includeResources: [configmaps], labelSelector: "", namespaceMapping: {%s: %s}}`, dir, policy, ns, target)), kubetest.Options{})
				if run.Err != nil {
					t.Fatal(run.Err)
				}
				if _, err := c.Typed.CoreV1().ConfigMaps(target).Get(context.Background(), "app", metav1.GetOptions{}); err != nil {
					t.Fatalf("the other ConfigMap was not restored into %s: %v", target, err)
				}
			}
			if got, _ := c.Typed.CoreV1().ConfigMaps(ns).Get(context.Background(), "kube-root-ca.crt", metav1.GetOptions{}); got.Data["ca.crt"] != "target CA" {
				t.Errorf("the target's root CA ConfigMap holds %v", got.Data)
			}
			if _, err := c.Typed.CoreV1().ConfigMaps(fresh).Get(context.Background(), "kube-root-ca.crt", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("the source's root CA ConfigMap was created in %s (%v)", fresh, err)
			}
		})
	}
}

func TestMappingFiltersTransform(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	target := "restore-mapped"
	dir := t.TempDir()
	x := configMap("a", "x", map[string]any{"v": "1"})
	x.SetLabels(map[string]string{"app": "x"})
	x2 := configMap("a", "x2", map[string]any{"v": "2"})
	x2.SetLabels(map[string]string{"app": "x"})
	y := configMap("a", "y", map[string]any{"v": "1"})
	y.SetLabels(map[string]string{"app": "y"})
	s := obj("Secret", "a", "s", map[string]any{"data": map[string]any{}})
	s.SetLabels(map[string]string{"app": "x"})
	b := configMap("b", "b", nil)
	b.SetLabels(map[string]string{"app": "x"})
	writeBackup(t, dir, []*unstructured.Unstructured{x, x2, y, s, b, configMap("a", "nolabel", nil)})
	run := kubetest.Apply(t, mainCluster(), restorePlan(fmt.Sprintf(`
      from: %q
      namespaceMapping: {a: %s}
      includeNamespaces: [a, c]
      excludeResources: [Secret]
      labelSelector: app
      transforms:
        - match: {resources: [configmaps], labelSelector: app=x}
          when: object.data.v == "1"
          patch: [{op: add, path: /data/patched, value: "yes"}, {op: add, path: /metadata/labels/t, value: "1"}]`, dir, target)), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	list, err := c.Typed.CoreV1().ConfigMaps(target).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]corev1.ConfigMap{}
	for _, cm := range list.Items {
		got[cm.Name] = cm
	}
	if len(got) != 3 || got["x"].Data["patched"] != "yes" || got["x"].Labels["t"] != "1" || got["x2"].Data["patched"] != "" || got["y"].Data["patched"] != "" {
		t.Fatalf("restored %v", got)
	}
	if _, err := c.Typed.CoreV1().Secrets(target).Get(context.Background(), "s", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("excluded secret: %v", err)
	}
	for _, n := range []string{"a", "b"} {
		if _, err := c.Typed.CoreV1().Namespaces().Get(context.Background(), n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("namespace %s: %v", n, err)
		}
	}
	out := run.Outputs(t, "s")
	if num(t, out, "restored") != 3 || num(t, out, "failed") != 0 {
		t.Fatalf("outputs %v", out)
	}
}

// TestCreateThenUpdate: an admission policy refuses data.ref on create, not on update (as the
// Service Catalog refused refs on create).
func TestCreateThenUpdate(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	ctx := context.Background()
	deny := admissionv1.Deny
	ops := []admissionv1.OperationType{admissionv1.Create}
	pol := &admissionv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "no-ref-on-create-" + ns},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{
				RuleWithOperations: admissionv1.RuleWithOperations{Operations: ops, Rule: admissionv1.Rule{
					APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}}}}}},
			MatchConditions: []admissionv1.MatchCondition{{Name: "ns", Expression: fmt.Sprintf("object.metadata.namespace == %q", ns)}},
			Validations:     []admissionv1.Validation{{Expression: "!has(object.data) || !('ref' in object.data)", Message: "ref is set on update only"}},
		},
	}
	if _, err := c.Typed.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, pol, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Typed.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, &admissionv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: pol.Name},
		Spec:       admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: pol.Name, ValidationActions: []admissionv1.ValidationAction{deny}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Typed.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, pol.Name, metav1.DeleteOptions{})
		c.Typed.AdmissionregistrationV1().ValidatingAdmissionPolicies().Delete(ctx, pol.Name, metav1.DeleteOptions{})
	})
	probe := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "probe"}, Data: map[string]string{"ref": "x"}}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, err := c.Typed.CoreV1().ConfigMaps(ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{"All"}})
		if err != nil && strings.Contains(err.Error(), "ref is set on update only") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the policy does not deny: %v", err)
		}
	}
	dir := t.TempDir()
	writeBackup(t, dir, []*unstructured.Unstructured{
		configMap(ns, "r1", map[string]any{"ref": "class-a", "v": "1"}),
		configMap(ns, "r2", map[string]any{"ref": "class-b"}),
		configMap(ns, "plain", map[string]any{"v": "1"}),
	})

	// Without createThenUpdate both are refused; the failures are collected and summarised.
	run := kubetest.Apply(t, mainCluster(), restorePlan(fmt.Sprintf(`{from: %q}`, dir)), kubetest.Options{NoRollback: true})
	want := fmt.Sprintf(`step "s" failed: 2 of 3 objects failed: ConfigMap %s/r1: admission webhook`, ns)
	if run.Err == nil || !strings.Contains(run.Err.Error(), fmt.Sprintf("step \"s\" failed: 2 of 3 objects failed: ConfigMap %s/r1: ", ns)) ||
		!strings.Contains(run.Err.Error(), "ref is set on update only; ConfigMap "+ns+"/r2: ") || strings.Contains(run.Err.Error(), "\n") {
		t.Fatalf("error %v\nwant like %q", run.Err, want)
	}

	run = kubetest.Apply(t, mainCluster(), restorePlan(fmt.Sprintf(`{from: %q, createThenUpdate: [{resources: [configmaps], fields: [data.ref]}]}`, dir)), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	for name, ref := range map[string]string{"r1": "class-a", "r2": "class-b"} {
		cm, err := c.Typed.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || cm.Data["ref"] != ref {
			t.Fatalf("%s: %v %v", name, cm.Data, err)
		}
	}
	out := run.Outputs(t, "s")
	if num(t, out, "restored") != 2 || num(t, out, "skipped") != 1 || num(t, out, "alreadyRestored") != 1 {
		t.Fatalf("outputs %v", out)
	}
	// Again: identical, skipped (the refs are compared too).
	run = kubetest.Apply(t, mainCluster(), restorePlan(fmt.Sprintf(`{from: %q, createThenUpdate: [{resources: [configmaps], fields: [data.ref]}]}`, dir)), kubetest.Options{RunID: "again"})
	if run.Err != nil || num(t, run.Outputs(t, "s"), "skipped") != 3 {
		t.Fatalf("third run %v %v", run.Err, run.Journal.Step("s").Outputs)
	}
}

func TestErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	invalid := t.TempDir()
	writeBackup(t, invalid, []*unstructured.Unstructured{
		configMap(ns, "ok", nil), configMap(ns, "Bad_Name", nil), configMap(ns, "ok2", nil),
	})
	unknown := t.TempDir()
	writeBackup(t, unknown, []*unstructured.Unstructured{obj("Gadget", ns, "g1", nil), configMap(ns, "fine", nil)})
	nobody := map[string]*kubetest.Cluster{"main": c.Restricted(t, "nobody")}
	cases := []struct {
		name, with, want string
		clusters         map[string]*kubetest.Cluster
		is               error // the run's error matches it (errors.Is)
	}{
		{"invalid object", fmt.Sprintf(`{from: %q}`, invalid), fmt.Sprintf(`step "s" failed: 1 of 3 objects failed: ConfigMap %s/Bad_Name: ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain`, ns), nil, nil},
		{"unknown kind", fmt.Sprintf(`{from: %q}`, unknown), fmt.Sprintf(`step "s" failed: 1 of 2 objects failed: Gadget %s/g1: unknown resource gadgets.nope.example.com on cluster main (is its CRD installed?)`, ns), nil, kube.ErrUnknownResource},
		{"when that is not a boolean", fmt.Sprintf(`{transforms: [{when: "object.data", patch: [{op: add, path: /data/x, value: y}]}], from: %q}`, unknown),
			`plan.yaml:7:33: object.data: expected true or false, got nil`, nil, nil},
		{"missing backup", `{from: /nonexistent/backup}`, `step "s" failed: /nonexistent/backup is not a complete backup: no manifest.json`, nil, nil},
		{"forbidden", fmt.Sprintf(`{from: %q}`, invalid), fmt.Sprintf(`step "s" failed: Namespace %s: namespaces "%s" is forbidden: User "nobody" cannot get resource "namespaces" in API group "" in the namespace "%s"`, ns, ns, ns), nobody, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl := tc.clusters
			if cl == nil {
				cl = mainCluster()
			}
			run := kubetest.Apply(t, cl, restorePlan(tc.with), kubetest.Options{NoRollback: true})
			kubetest.WantRunError(t, run, tc.want)
			if tc.is != nil && !errors.Is(run.Err, tc.is) {
				t.Fatalf("errors.Is(%v, %v) is false", run.Err, tc.is)
			}
		})
	}
	// The valid objects were restored all the same.
	for _, n := range []string{"ok", "ok2", "fine"} {
		c.Get(t, cmGVR, ns, n)
	}
	// Bad config: load errors.
	for with, want := range map[string]string{
		`{from: x, onConflict: merge}`:                                             `onConflict: "merge" is not one of skip, update, recreate`,
		`{from: x, transforms: [{when: "object.", patch: []}]}`:                    `step "s": with: invalid expression "object.": unexpected end of expression`,
		`{from: x, transforms: [{patch: [{op: frob, path: /a}]}]}`:                 `transforms[0].patch[0]: op must be one of`,
		`{from: x, labelSelector: "a in (("}`:                                      `labelSelector:`,
		`{from: x, createThenUpdate: [{resources: [a], fields: [metadata.name]}]}`: `cannot be set after create`,
	} {
		path := filepath.Join(t.TempDir(), "plan.yaml")
		writeFile(t, path, "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: t}\n"+restorePlan(with))
		_, err := engine.Load(path, engine.LoadOptions{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("%s: load error %v, want %q", with, err, want)
		}
	}
}

func TestDryRun(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := "restore-dry"
	dir := t.TempDir()
	crd := widgetCRD()
	crd.SetName("gizmos.dry.example.com")
	unstructured.SetNestedField(crd.Object, "dry.example.com", "spec", "group")
	unstructured.SetNestedStringMap(crd.Object, map[string]string{"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo", "listKind": "GizmoList"}, "spec", "names")
	kinds["Gizmo"] = struct {
		gvr        schema.GroupVersionResource
		namespaced bool
	}{schema.GroupVersionResource{Group: "dry.example.com", Version: "v1", Resource: "gizmos"}, true}
	writeBackup(t, dir, []*unstructured.Unstructured{crd, obj("Namespace", "", ns, nil), configMap(ns, "a", map[string]any{"x": "1"}),
		obj("Secret", ns, "s", nil), obj("Gizmo", ns, "g", map[string]any{"spec": map[string]any{}})})
	run := kubetest.Apply(t, mainCluster(), restorePlan(fmt.Sprintf(`{from: %q}`, dir)), kubetest.Options{DryRun: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	out := run.Outputs(t, "s")
	if out["dryRun"] != true || num(t, out, "restored") != 5 || num(t, out, "failed") != 0 {
		t.Fatalf("outputs %v", out)
	}
	if _, err := c.Typed.CoreV1().Namespaces().Get(context.Background(), ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry run created the namespace: %v", err)
	}
	if _, err := c.Dynamic.Resource(kinds["CustomResourceDefinition"].gvr).Get(context.Background(), crd.GetName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry run created the CRD: %v", err)
	}
	// A dry run into an existing namespace validates on the server: an invalid object fails.
	ns2 := c.Namespace(t)
	dir2 := t.TempDir()
	writeBackup(t, dir2, []*unstructured.Unstructured{configMap(ns2, "ok", nil), configMap(ns2, "Bad", nil)})
	run = kubetest.Apply(t, mainCluster(), restorePlan(fmt.Sprintf(`{from: %q}`, dir2)), kubetest.Options{DryRun: true})
	if run.Err == nil || !strings.Contains(run.Err.Error(), "1 of 2 objects failed: ConfigMap "+ns2+"/Bad:") {
		t.Fatalf("dry run error %v", run.Err)
	}
	if _, err := c.Typed.CoreV1().ConfigMaps(ns2).Get(context.Background(), "ok", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry run created ok: %v", err)
	}
}

func TestUndo(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	ctx := context.Background()
	if _, err := c.Typed.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "theirs"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeBackup(t, dir, []*unstructured.Unstructured{configMap(ns, "a", nil), configMap(ns, "b", nil), configMap(ns, "theirs", map[string]any{"x": "y"}),
		configMap("restore-undo-new", "n", nil)})
	run := kubetest.Apply(t, mainCluster(), fmt.Sprintf(`
steps:
  - {id: s, type: kube.restore, with: {from: %q}}
  - {id: boom, type: assert, with: {that: "false", message: boom}}
`, dir), kubetest.Options{})
	var re *engine.RunError
	if !asRunError(run.Err, &re) || re.Status != engine.RunRolledBack {
		t.Fatalf("want rolled back, got %v", run.Err)
	}
	for _, n := range []string{"a", "b"} {
		if _, err := c.Typed.CoreV1().ConfigMaps(ns).Get(ctx, n, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("%s not undone: %v", n, err)
		}
	}
	if _, err := c.Typed.CoreV1().ConfigMaps(ns).Get(ctx, "theirs", metav1.GetOptions{}); err != nil {
		t.Fatalf("undo deleted an object it did not create: %v", err)
	}
	// The namespace the restore created is deleted (it stays Terminating without a namespace controller).
	n, err := c.Typed.CoreV1().Namespaces().Get(ctx, "restore-undo-new", metav1.GetOptions{})
	if err == nil && n.DeletionTimestamp == nil {
		t.Fatalf("namespace not deleted")
	}
}

// TestCrashResume cancels a restore of 3000 objects half-way, resumes the run, and finds every
// object exactly once with the right content and owner.
func TestCrashResume(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	dir := t.TempDir()
	dep := deployment(ns, "owner")
	objs := []*unstructured.Unstructured{dep}
	const n = 3000
	for i := 0; i < n; i++ {
		objs = append(objs, ownedBy(configMap(ns, fmt.Sprintf("cm-%04d", i), map[string]any{"i": fmt.Sprint(i), "pad": strings.Repeat("x", 512)}), dep))
	}
	writeBackup(t, dir, objs)
	state := t.TempDir()
	p := kubetest.Load(t, mainCluster(), restorePlan(fmt.Sprintf(`{from: %q, order: [deployments.apps, configmaps]}`, dir)), kubetest.Options{})
	store := engine.NewDirStore(filepath.Join(state, "runs"))
	ctx, cancel := context.WithCancel(context.Background())
	var seen atomic.Int64
	r := &engine.Runner{Store: store, NoRollback: true, Observer: engine.ObserverFunc(func(e engine.Event) {
		if e.Type == engine.EventStepProgress && e.Progress.Done >= 600 && seen.Add(1) == 1 {
			cancel()
		}
	})}
	_, err := r.Apply(ctx, p, engine.ApplyOptions{RunID: "crash"})
	cancel()
	if err == nil {
		t.Fatal("the restore finished before it was interrupted")
	}
	list, lerr := c.Typed.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{})
	if lerr != nil {
		t.Fatal(lerr)
	}
	partial := len(list.Items)
	t.Logf("interrupted with %d of %d config maps: %v", partial, n, err)
	if partial >= n {
		t.Fatalf("nothing left to resume (%d)", partial)
	}
	r2 := &engine.Runner{Store: store, NoRollback: true}
	j, err := r2.Resume(context.Background(), "crash", func(*engine.Journal) (*engine.Plan, error) { return p, nil })
	if err != nil {
		t.Fatal(err)
	}
	out := j.Step("s").Outputs
	if num(t, out, "failed") != 0 || num(t, out, "restored")+num(t, out, "alreadyRestored") != n+1 || num(t, out, "alreadyRestored") < int64(partial) {
		t.Fatalf("resumed outputs %v", out)
	}
	liveDep := c.Get(t, kinds["Deployment"].gvr, ns, "owner")
	list, err = c.Typed.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, cm := range list.Items {
		if !strings.HasPrefix(cm.Name, "cm-") {
			continue
		}
		count[cm.Name]++
		var i int
		fmt.Sscanf(cm.Name, "cm-%d", &i)
		if cm.Data["i"] != fmt.Sprint(i) || len(cm.Data["pad"]) != 512 {
			t.Fatalf("%s: data %v", cm.Name, cm.Data["i"])
		}
		if len(cm.OwnerReferences) != 1 || cm.OwnerReferences[0].UID != liveDep.GetUID() {
			t.Fatalf("%s: owners %v, want UID %s", cm.Name, cm.OwnerReferences, liveDep.GetUID())
		}
	}
	if len(count) != n {
		t.Fatalf("%d config maps, want %d", len(count), n)
	}
	// The undo record knows every object of the run, including those of the first attempt.
	rec := readLines(t, out["createdFile"].(string))
	uids := map[string]bool{}
	for _, l := range rec {
		uids[l] = true
	}
	if len(uids) < n+1 {
		t.Fatalf("undo record holds %d distinct objects, want %d", len(uids), n+1)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func asRunError(err error, re **engine.RunError) bool { return errors.As(err, re) }

// TestVolumeClaimRefMapped: a PersistentVolume's claimRef follows the namespace mapping of its
// claim, without the old claim's uid and resourceVersion.
func TestVolumeClaimRefMapped(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	cases := []struct {
		name    string
		mapping string
		claimNS string // in the backup
		wantNS  string // on the restored volume
	}{
		{"mapped", `{src-a: dst-a}`, "src-a", "dst-a"},
		{"other namespace mapped", `{src-b: dst-b}`, "src-a", "src-a"},
		{"no mapping", `{}`, "src-a", "src-a"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("restore-claimref-%d", i)
			pv := obj("PersistentVolume", "", name, map[string]any{"spec": map[string]any{
				"capacity": map[string]any{"storage": "1Gi"}, "accessModes": []any{"ReadWriteMany"},
				"persistentVolumeReclaimPolicy": "Retain",
				"nfs":                           map[string]any{"server": "nfs.example.com", "path": "/exports/" + name},
				"claimRef": map[string]any{"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": tc.claimNS, "name": "data",
					"uid": "0b4f6a3e-1111-2222-3333-444455556666", "resourceVersion": "777"},
			}})
			dir := t.TempDir()
			writeBackup(t, dir, []*unstructured.Unstructured{pv})
			run := kubetest.Apply(t, mainCluster(), restorePlan(fmt.Sprintf(`{from: %q, namespaceMapping: %s}`, dir, tc.mapping)), kubetest.Options{})
			if run.Err != nil {
				t.Fatal(run.Err)
			}
			t.Cleanup(func() {
				c.Typed.CoreV1().PersistentVolumes().Delete(context.Background(), name, metav1.DeleteOptions{})
			})
			got, err := c.Typed.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ref := got.Spec.ClaimRef
			if ref == nil || ref.Namespace != tc.wantNS || ref.Name != "data" || ref.UID != "" || ref.ResourceVersion != "" {
				t.Errorf("claimRef %+v, want %s/data without uid and resourceVersion", ref, tc.wantNS)
			}
			if got.Spec.NFS == nil || got.Spec.NFS.Server != "nfs.example.com" || got.Spec.NFS.Path != "/exports/"+name {
				t.Errorf("volume source %+v", got.Spec.PersistentVolumeSource)
			}
		})
	}
}

// TestUndoOnFailure: with undoOnFailure a restore that fails deletes what it created (objects
// and the namespace it made) before it fails; without it they stay.
func TestUndoOnFailure(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ctx := context.Background()
	cases := []struct {
		name     string
		undo     bool
		wantLeft bool
		wantErr  string
	}{
		{"undo on failure", true, false, "; what the step had created was deleted again (undoOnFailure)"},
		{"default: left in place", false, true, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			existing := c.Namespace(t)
			if _, err := c.Typed.CoreV1().ConfigMaps(existing).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "theirs"}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			fresh := fmt.Sprintf("restore-undo-on-failure-%d", i)
			dir := t.TempDir()
			writeBackup(t, dir, []*unstructured.Unstructured{configMap(existing, "ok", nil), configMap(existing, "Bad_Name", nil),
				configMap(existing, "theirs", map[string]any{"x": "y"}), configMap(fresh, "n", nil)})
			run := kubetest.Apply(t, mainCluster(), restorePlan(fmt.Sprintf(`{from: %q, undoOnFailure: %v}`, dir, tc.undo)), kubetest.Options{})
			kubetest.WantRunError(t, run, `step "s" failed: 1 of 4 objects failed: ConfigMap `+existing+`/Bad_Name:`, tc.wantErr)
			for _, o := range []struct{ ns, name string }{{existing, "ok"}, {fresh, "n"}} {
				_, err := c.Typed.CoreV1().ConfigMaps(o.ns).Get(ctx, o.name, metav1.GetOptions{})
				if left := err == nil; left != tc.wantLeft {
					t.Errorf("ConfigMap %s/%s left: %v (%v), want %v", o.ns, o.name, left, err, tc.wantLeft)
				}
			}
			if cm, err := c.Typed.CoreV1().ConfigMaps(existing).Get(ctx, "theirs", metav1.GetOptions{}); err != nil || cm.Data["x"] != "" {
				t.Errorf("an object the restore did not create was changed or deleted: %v %v", cm, err)
			}
			n, err := c.Typed.CoreV1().Namespaces().Get(ctx, fresh, metav1.GetOptions{})
			// Deleted: it stays Terminating without a namespace controller.
			if deleted := err != nil || n.DeletionTimestamp != nil; deleted == tc.wantLeft {
				t.Errorf("namespace %s deleted: %v, want %v", fresh, deleted, !tc.wantLeft)
			}
			if _, err := c.Typed.CoreV1().Namespaces().Get(ctx, existing, metav1.GetOptions{}); err != nil {
				t.Errorf("namespace %s: %v", existing, err)
			}
		})
	}
}

// TestDryRunAfterBackup: in a dry run, kube.backup leaves its folder alone and writes into a
// temporary one instead, which kube.verifyBackup and kube.restore of the same dry run read: the
// dry run says what the restore would do (into a mapped namespace that does not exist yet),
// changes nothing, and the temporary folder is gone when the run ends.
func TestDryRunAfterBackup(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	src := c.Namespace(t)
	for _, o := range []*unstructured.Unstructured{configMap(src, "a", map[string]any{"x": "1"}), configMap(src, "b", map[string]any{"x": "2"}), deployment(src, "web")} {
		gvr := kinds[o.GetKind()].gvr
		o.SetResourceVersion("")
		o.SetUID("")
		o.SetCreationTimestamp(metav1.Time{})
		unstructured.RemoveNestedField(o.Object, "status")
		if _, err := c.Dynamic.Resource(gvr).Namespace(src).Create(context.Background(), o, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "backup")
	mapped := src + "-copy"
	body := fmt.Sprintf(`steps:
  - {id: backup, type: kube.backup, with: {to: %[1]q, namespaces: [%[2]s], resources: [configmaps, deployments.apps, namespaces]}}
  - {id: verify, type: kube.verifyBackup, with: {dir: %[1]q}}
  - {id: restore, type: kube.restore, with: {from: %[1]q, namespaceMapping: {%[2]s: %[3]s}, excludeResources: [configmaps], includeNamespaces: [%[2]s]}}
  - {id: restore-all, type: kube.restore, with: {from: %[1]q, namespaceMapping: {%[2]s: %[3]s}}}
`, dir, src, mapped)
	// A temporary folder of this test's own: other packages' tests run dry runs at the same time
	// and would make a count of the shared one meaningless.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	run := kubetest.Apply(t, mainCluster(), body, kubetest.Options{DryRun: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the dry run wrote the backup folder (%v)", err)
	}
	// Two ConfigMaps, the Deployment and the Namespace (no controller here adds kube-root-ca.crt).
	b := run.Outputs(t, "backup")
	if b["dryRun"] != true || num(t, b, "objects") != 4 {
		t.Errorf("backup outputs %v", b)
	}
	if v := run.Outputs(t, "verify"); num(t, v, "objects") != 4 {
		t.Errorf("verify outputs %v, want the 4 objects of the dry-run backup", v)
	}
	if r := run.Outputs(t, "restore"); r["dryRun"] != true || num(t, r, "restored") != 2 || num(t, r, "failed") != 0 {
		t.Errorf("restore outputs %v, want the Namespace and the Deployment", r)
	}
	if r := run.Outputs(t, "restore-all"); num(t, r, "restored") != 4 || num(t, r, "failed") != 0 {
		t.Errorf("restore-all outputs %v, want all 4", r)
	}
	if _, err := c.Typed.CoreV1().Namespaces().Get(context.Background(), mapped, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the dry run created namespace %s: %v", mapped, err)
	}
	if left, _ := filepath.Glob(filepath.Join(tmp, "planrun-dry-run-backup-*")); len(left) > 0 {
		t.Errorf("temporary backup folders left behind: %v", left)
	}
}

// TestStatusKeepsImmutableLiveFields: a Job already on the target whose controller set its
// startTime (immutable once set) is restored with its status from the backup: the status is
// restored but for the startTime, which the API server refuses to change and which keeps its
// live value, instead of failing the object (as a resume did when the Job had started between
// the create of a killed attempt and its status update).
func TestStatusKeepsImmutableLiveFields(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	dir := t.TempDir()
	spec := map[string]any{
		"template": map[string]any{"spec": map[string]any{
			"restartPolicy": "Never",
			"containers":    []any{map[string]any{"name": "c", "image": "busybox"}},
		}},
	}
	jobs := c.Dynamic.Resource(kinds["Job"].gvr).Namespace(ns)
	live := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "batch/v1", "kind": "Job",
		"metadata": map[string]any{"name": "reindex", "namespace": ns}, "spec": spec}}
	created, err := jobs.Create(context.Background(), live, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The backup has the Job as the API server completed it (selector, template labels), and a
	// status from the source, where it started earlier.
	backedUp := obj("Job", ns, "reindex", map[string]any{"spec": created.Object["spec"], "status": map[string]any{
		"startTime": "2026-01-01T00:00:00Z", "active": int64(1), "ready": int64(0),
	}})
	backedUp.SetLabels(created.GetLabels())
	writeBackup(t, dir, []*unstructured.Unstructured{backedUp})

	// What the Job controller of the target does when the Job starts.
	started := "2026-11-30T10:00:00Z"
	unstructured.SetNestedField(created.Object, started, "status", "startTime")
	if _, err := jobs.UpdateStatus(context.Background(), created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	run := kubetest.Apply(t, mainCluster(), restorePlan(fmt.Sprintf(`{from: %q, onConflict: update, restoreStatus: true, includeResources: [jobs.batch]}`, dir)), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	got, err := jobs.Get(context.Background(), "reindex", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, _, _ := unstructured.NestedString(got.Object, "status", "startTime")
	active, _, _ := unstructured.NestedInt64(got.Object, "status", "active")
	if st != started || active != 1 {
		t.Fatalf("status %v: want the live startTime %s and the backup's active 1", got.Object["status"], started)
	}
	if out := run.Outputs(t, "s"); num(t, out, "failed") != 0 || num(t, out, "updated") != 1 {
		t.Fatalf("outputs %v", out)
	}
}
