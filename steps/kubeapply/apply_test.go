package kubeapply_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube/kubetest"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func createConfigMap(t *testing.T, ns, name string, data map[string]string, labels map[string]string) *corev1.ConfigMap {
	t.Helper()
	cm, err := clusters[0].Typed.CoreV1().ConfigMaps(ns).Create(context.Background(),
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Data: data}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm
}

// applyPlan applies inline manifests, a manifest string and a file into ns (and creates the
// cluster-scoped namespace extra).
func applyPlan(t *testing.T, ns, extra, file string) string {
	return fmt.Sprintf(`
steps:
  - id: s
    type: kube.apply
    with:
      namespace: %[1]s
      forceConflicts: true
      manifests:
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: new}, data: {a: "1"}}
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: existing, namespace: %[1]s}, data: {x: "2"}}
        - {apiVersion: v1, kind: Namespace, metadata: {name: %[2]s, labels: {made-by: planrun}}}
      manifest: |
        apiVersion: v1
        kind: Secret
        metadata: {name: secret}
        stringData: {password: hunter2}
        ---
        ---
        apiVersion: v1
        kind: List
        items:
          - {apiVersion: v1, kind: ConfigMap, metadata: {name: from-list}, data: {l: "1"}}
      files: [%[3]s]
`, ns, extra, file)
}

func TestApply(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	extra := ns + "-extra"
	file := filepath.Join(t.TempDir(), "objects.yaml")
	writeFile(t, file, `{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "json-doc"}, "data": {"j": "1"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: yaml-doc, labels: {from: file}}
data: {y: "1"}
`)
	createConfigMap(t, ns, "existing", map[string]string{"x": "1"}, nil)
	body := applyPlan(t, ns, extra, file)

	// Dry run: outputs say what would happen; the cluster is untouched.
	dry := kubetest.Apply(t, mainCluster(), body, kubetest.Options{DryRun: true})
	if dry.Err != nil {
		t.Fatal(dry.Err)
	}
	out := dry.Outputs(t, "s")
	if out["dryRun"] != true || out["count"] != 7 {
		t.Fatalf("dry-run outputs %v", out)
	}
	wantRefs(t, "dry-run created", out["created"], "ConfigMap "+ns+"/new", "Namespace "+extra, "Secret "+ns+"/secret",
		"ConfigMap "+ns+"/from-list", "ConfigMap "+ns+"/json-doc", "ConfigMap "+ns+"/yaml-doc")
	wantRefs(t, "dry-run changed", out["changed"], "ConfigMap "+ns+"/existing")
	for _, name := range []string{"new", "json-doc", "yaml-doc", "from-list"} {
		if !gone(t, configMaps, ns, name) {
			t.Errorf("dry run created ConfigMap %s", name)
		}
	}
	if !gone(t, namespaces, "", extra) || !gone(t, secrets, ns, "secret") {
		t.Error("dry run created the namespace or the secret")
	}
	if got := data(t, clusters[0].Get(t, configMaps, ns, "existing"), "x"); got != "1" {
		t.Errorf("dry run changed existing: x=%q", got)
	}

	// Apply.
	run := kubetest.Apply(t, mainCluster(), body, kubetest.Options{NoRollback: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	out = run.Outputs(t, "s")
	if _, dry := out["dryRun"]; dry || out["count"] != 7 {
		t.Fatalf("outputs %v", out)
	}
	wantRefs(t, "created", out["created"], "ConfigMap "+ns+"/new", "Namespace "+extra, "Secret "+ns+"/secret",
		"ConfigMap "+ns+"/from-list", "ConfigMap "+ns+"/json-doc", "ConfigMap "+ns+"/yaml-doc")
	wantRefs(t, "changed", out["changed"], "ConfigMap "+ns+"/existing")
	wantRefs(t, "unchanged", out["unchanged"])
	created := out["created"].([]any)
	newCM := clusters[0].Get(t, configMaps, ns, "new")
	if uid := created[0].(map[string]any)["uid"]; uid != string(newCM.GetUID()) || created[0].(map[string]any)["apiVersion"] != "v1" {
		t.Errorf("created[0] = %v, object uid %s", created[0], newCM.GetUID())
	}
	if data(t, newCM, "a") != "1" || newCM.GetManagedFields()[0].Manager != "planrun" {
		t.Errorf("new: %v", newCM.Object)
	}
	if got := data(t, clusters[0].Get(t, configMaps, ns, "existing"), "x"); got != "2" {
		t.Errorf("existing: x=%q, want 2", got)
	}
	if got := data(t, clusters[0].Get(t, configMaps, ns, "json-doc"), "j"); got != "1" {
		t.Errorf("json-doc: j=%q", got)
	}
	if got := clusters[0].Get(t, configMaps, ns, "yaml-doc").GetLabels()["from"]; got != "file" {
		t.Errorf("yaml-doc: label from=%q", got)
	}
	if got := data(t, clusters[0].Get(t, configMaps, ns, "from-list"), "l"); got != "1" {
		t.Errorf("from-list: l=%q", got)
	}
	if s := clusters[0].Get(t, secrets, ns, "secret"); data(t, s, "password") != "aHVudGVyMg==" {
		t.Errorf("secret: %v", s.Object["data"])
	}
	if got := clusters[0].Get(t, namespaces, "", extra).GetLabels()["made-by"]; got != "planrun" {
		t.Errorf("namespace label made-by=%q", got)
	}

	// Run twice (a new run): nothing created, nothing changed.
	again := kubetest.Apply(t, mainCluster(), body, kubetest.Options{})
	if again.Err != nil {
		t.Fatal(again.Err)
	}
	out = again.Outputs(t, "s")
	wantRefs(t, "second run created", out["created"])
	wantRefs(t, "second run changed", out["changed"])
	if n := len(out["unchanged"].([]any)); n != 7 {
		t.Fatalf("second run unchanged: %d, want 7: %v", n, out["unchanged"])
	}

	// Rollback of the first run deletes what it created, and only that.
	rollback(t, run)
	for _, name := range []string{"new", "json-doc", "yaml-doc", "from-list"} {
		if !gone(t, configMaps, ns, name) {
			t.Errorf("rollback left ConfigMap %s", name)
		}
	}
	if !gone(t, secrets, ns, "secret") || !gone(t, namespaces, "", extra) {
		t.Error("rollback left the secret or the namespace")
	}
	if got := data(t, clusters[0].Get(t, configMaps, ns, "existing"), "x"); got != "2" {
		t.Errorf("rollback touched existing: x=%q", got)
	}
}

// TestApplyRollbackOnFailure: a later step fails, the run rolls back, apply's undo runs; an
// object deleted and made again by someone else in between is left alone (UID precondition).
func TestApplyRollbackOnFailure(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	body := fmt.Sprintf(`
steps:
  - id: s
    type: kube.apply
    with:
      manifests:
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: %[1]s}, data: {k: v}}
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: b, namespace: %[1]s}, data: {k: v}}
  - {id: boom, type: assert, with: {that: "false"}}
`, ns)
	run := kubetest.Apply(t, mainCluster(), body, kubetest.Options{})
	wantRolledBack(t, run)
	if !gone(t, configMaps, ns, "a") || !gone(t, configMaps, ns, "b") {
		t.Fatal("rollback left a or b")
	}
	if st := run.Journal.Step("s").Status; st != engine.StepRolledBack {
		t.Fatalf("step s is %s", st)
	}

	// Replaced object: not deleted by undo.
	run = kubetest.Apply(t, mainCluster(), body, kubetest.Options{NoRollback: true})
	if run.Err == nil {
		t.Fatal("want the assert to fail")
	}
	if err := clusters[0].Typed.CoreV1().ConfigMaps(ns).Delete(context.Background(), "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	createConfigMap(t, ns, "a", map[string]string{"someone": "else"}, nil)
	rollback(t, run)
	if got := data(t, clusters[0].Get(t, configMaps, ns, "a"), "someone"); got != "else" {
		t.Fatalf("undo deleted the namesake of a")
	}
	if !gone(t, configMaps, ns, "b") {
		t.Fatal("undo left b")
	}
}

// TestApplyResumeKeepsCreated: the first attempt creates an object and fails on the next; the run
// is resumed with the plan fixed; the step's outputs still list the object the first attempt
// created, so that rollback deletes it.
func TestApplyResumeKeepsCreated(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	plan := func(second string) string {
		return fmt.Sprintf(`
steps:
  - id: s
    type: kube.apply
    with:
      namespace: %s
      manifests:
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: first}, data: {k: v}}
        - {apiVersion: v1, kind: ConfigMap, metadata: {name: %s}, data: {k: v}}
`, ns, second)
	}
	run := kubetest.Apply(t, mainCluster(), plan("Bad_Name"), kubetest.Options{NoRollback: true})
	kubetest.WantRunError(t, run, `step "s" failed: ConfigMap `+ns+`/Bad_Name: ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name"`)
	clusters[0].Get(t, configMaps, ns, "first")

	run = resume(t, run, plan("second"))
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	out := run.Outputs(t, "s")
	wantRefs(t, "created after resume", out["created"], "ConfigMap "+ns+"/first", "ConfigMap "+ns+"/second")
	for _, c := range out["created"].([]any) {
		if c.(map[string]any)["uid"] == "" {
			t.Fatalf("no uid: %v", c)
		}
	}
	rollback(t, run)
	if !gone(t, configMaps, ns, "first") || !gone(t, configMaps, ns, "second") {
		t.Fatal("rollback after resume left objects behind")
	}
}

// TestApplyCRDAndObjects: a CRD and an object of its kind in one step.
func TestApplyCRDAndObjects(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	group := strings.ReplaceAll(ns, "-", "") + ".example.com"
	body := fmt.Sprintf(`
steps:
  - id: s
    type: kube.apply
    with:
      namespace: %[1]s
      manifests:
        - apiVersion: apiextensions.k8s.io/v1
          kind: CustomResourceDefinition
          metadata: {name: widgets.%[2]s}
          spec:
            group: %[2]s
            scope: Namespaced
            names: {plural: widgets, singular: widget, kind: Widget}
            versions:
              - name: v1
                served: true
                storage: true
                schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
        - {apiVersion: %[2]s/v1, kind: Widget, metadata: {name: w}, spec: {size: 3}}
`, ns, group)
	dry := kubetest.Apply(t, mainCluster(), body, kubetest.Options{DryRun: true})
	if dry.Err != nil {
		t.Fatal(dry.Err)
	}
	wantRefs(t, "dry-run created", dry.Outputs(t, "s")["created"], "CustomResourceDefinition widgets."+group, "Widget "+ns+"/w")

	run := kubetest.Apply(t, mainCluster(), body, kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	wantRefs(t, "created", run.Outputs(t, "s")["created"], "CustomResourceDefinition widgets."+group, "Widget "+ns+"/w")
	w := clusters[0].Get(t, widgetsGVR(group), ns, "w")
	if size, _, _ := unstructured.NestedInt64(w.Object, "spec", "size"); size != 3 {
		t.Fatalf("widget: %v", w.Object)
	}
	rollback(t, run)
	if !gone(t, widgetsGVR(group), ns, "w") {
		t.Fatal("rollback left the widget")
	}
}

func TestApplyErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	createConfigMap(t, ns, "owned", map[string]string{"x": "1"}, nil)
	badFile := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, badFile, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\nkind: [unclosed\n")
	cases := []struct {
		name     string
		with     string
		clusters map[string]*kubetest.Cluster
		want     string
	}{
		{"unknown kind", `{manifests: [{apiVersion: example.com/v1, kind: Widget, metadata: {name: w, namespace: x}}]}`, nil,
			`step "s" failed: manifests[0]: unknown kind example.com/v1 Widget on cluster main (is its CRD installed?)`},
		{"missing namespace", `{manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: c, namespace: nope-` + ns + `}}]}`, nil,
			`step "s" failed: ConfigMap nope-` + ns + `/c: namespaces "nope-` + ns + `" not found`},
		{"no namespace for a namespaced kind", `{manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}]}`, nil,
			`step "s" failed: manifests[0]: ConfigMap c is namespaced: set metadata.namespace or the step's namespace`},
		{"namespace on a cluster-scoped kind", `{manifests: [{apiVersion: v1, kind: Namespace, metadata: {name: c, namespace: x}}]}`, nil,
			`step "s" failed: manifests[0]: Namespace c is cluster-scoped; remove metadata.namespace`},
		{"invalid object", `{namespace: ` + ns + `, manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: c}, data: {"bad key!": x}}]}`, nil,
			`step "s" failed: ConfigMap ` + ns + `/c: ConfigMap "c" is invalid: data[bad key!]: Invalid value: "bad key!"`},
		{"forbidden", `{namespace: ` + ns + `, manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}]}`, map[string]*kubetest.Cluster{"main": clusters[0].Restricted(t, "planrun-nobody")},
			`step "s" failed: ConfigMap ` + ns + `/c: configmaps "c" is forbidden: User "planrun-nobody" cannot get resource "configmaps" in API group "" in the namespace "` + ns + `"`},
		{"conflict", `{namespace: ` + ns + `, manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: owned}, data: {x: "2"}}]}`, nil,
			`step "s" failed: ConfigMap ` + ns + `/owned: Apply failed with 1 conflict: conflict with "kubeapply.test" using v1: .data.x`},
		{"missing file", `{files: [` + missing + `]}`, nil, `step "s" failed: files: open ` + missing + `: no such file or directory`},
		{"bad file", `{namespace: ` + ns + `, files: [` + badFile + `]}`, nil, `step "s" failed: file ` + badFile + `: document 2: error converting YAML to JSON`},
		{"given twice", `{namespace: ` + ns + `, manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}, {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}]}`, nil,
			`step "s" failed: manifests[1]: ConfigMap ` + ns + `/c is also given in manifests[0]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl := tc.clusters
			if cl == nil {
				cl = mainCluster()
			}
			run := kubetest.Apply(t, cl, oneStep("kube.apply", tc.with), kubetest.Options{})
			kubetest.WantRunError(t, run, tc.want)
		})
	}
	// Invalid manifests written in the plan are load errors, before anything runs.
	loadCases := []struct{ name, with, want string }{
		{"no kind", `{manifests: [{apiVersion: v1, metadata: {name: c}}]}`, `step "s": with: manifests[0]: kind: required`},
		{"no name", `{manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {generateName: c-}}]}`,
			`step "s": with: manifests[0]: metadata.name: required (server-side apply cannot use generateName)`},
		{"bad yaml", `{manifest: "kind: [x"}`, `step "s": with: manifest: document 1: error converting YAML to JSON`},
		{"bad apiVersion", `{manifest: "{apiVersion: a/b/c, kind: X, metadata: {name: x}}"}`, `step "s": with: manifest object 1: apiVersion: unexpected GroupVersion string: a/b/c`},
		{"nothing", `{namespace: x}`, `step "s": with: manifests, manifest or files: give at least one`},
	}
	for _, tc := range loadCases {
		t.Run(tc.name, func(t *testing.T) { wantLoadError(t, oneStep("kube.apply", tc.with), tc.want) })
	}
}

func widgetsGVR(group string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: group, Version: "v1", Resource: "widgets"}
}
