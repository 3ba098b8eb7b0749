package kubeapply_test

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/steps/kube/kubetest"
	_ "planrun.dev/planrun/steps/kubeget"
)

// cmState is a ConfigMap's data and labels, for comparing end states.
func cmState(t *testing.T, ns, name string) string {
	t.Helper()
	obj := clusters[0].Get(t, configMaps, ns, name)
	d, _, _ := unstructured.NestedStringMap(obj.Object, "data")
	return fmt.Sprintf("data=%v labels=%v", d, obj.GetLabels())
}

func wantCM(t *testing.T, what, ns, name, want string) {
	t.Helper()
	if got := cmState(t, ns, name); got != want {
		t.Errorf("%s: ConfigMap %s/%s: %s\nwant %s", what, ns, name, got, want)
	}
}

// TestPatchObjects: objects given in the plan, with a step-level patch, entries with patches of
// their own, an entry defaulting to the step's namespace, one in another namespace and one missing.
func TestPatchObjects(t *testing.T) {
	kubetest.Need(t, clusters)
	ns, other := clusters[0].Namespace(t), clusters[0].Namespace(t)
	createConfigMap(t, ns, "a", map[string]string{"k": "a"}, nil)
	createConfigMap(t, ns, "b", map[string]string{"k": "b"}, map[string]string{"app": "web"})
	createConfigMap(t, other, "c", map[string]string{"k": "c"}, nil)
	before := map[string]string{
		ns + "/a": "data=map[k:a] labels=map[]", ns + "/b": "data=map[k:b] labels=map[app:web]", other + "/c": "data=map[k:c] labels=map[]",
	}
	wantBefore := func(what string) {
		t.Helper()
		for key, want := range before {
			n, name, _ := strings.Cut(key, "/")
			wantCM(t, what, n, name, want)
		}
	}
	body := oneStep("kube.patch", fmt.Sprintf(`
      apiVersion: v1
      kind: ConfigMap
      namespace: %[1]s
      patch: {data: {step: "1", k: null}}
      objects:
        - {name: a}
        - {name: b, patch: {data: {own: "b"}, metadata: {labels: {app: null, tier: front}}}}
        - {name: gone}
        - {namespace: %[2]s, name: c, patch: '{"data": {"k": "C"}}'}
        - {namespace: %[2]s, name: gone}`, ns, other))
	wantOutputs := func(what string, out map[string]any) {
		t.Helper()
		if plantest.Num(t, out, "count") != 3 {
			t.Errorf("%s: count %v", what, out["count"])
		}
		wantRefs(t, what+" patched", out["patched"], "ConfigMap "+ns+"/a", "ConfigMap "+ns+"/b", "ConfigMap "+other+"/c")
		wantRefs(t, what+" missing", out["missing"], "ConfigMap "+ns+"/gone", "ConfigMap "+other+"/gone")
	}

	// Dry run: outputs say what would be patched; nothing changes.
	dry := kubetest.Apply(t, mainCluster(), body, kubetest.Options{DryRun: true})
	if dry.Err != nil {
		t.Fatal(dry.Err)
	}
	out := dry.Outputs(t, "s")
	wantOutputs("dry run", out)
	if out["dryRun"] != true {
		t.Errorf("dry run outputs: %v", out)
	}
	wantBefore("after the dry run")

	run := kubetest.Apply(t, mainCluster(), body, kubetest.Options{NoRollback: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	out = run.Outputs(t, "s")
	wantOutputs("run", out)
	if _, dry := out["dryRun"]; dry {
		t.Errorf("outputs: %v", out)
	}
	// Prior values: only the fields each object's own patch touches.
	priors := map[string]string{}
	for _, p := range out["patched"].([]any) {
		m := p.(map[string]any)
		priors[m["name"].(string)] = fmt.Sprint(m["prior"])
		if m["uid"] == "" {
			t.Errorf("no uid: %v", m)
		}
	}
	wantPriors := map[string]string{
		"a": "[map[path:/data/k value:a] map[absent:true path:/data/step]]",
		"b": "[map[absent:true path:/data/own] map[path:/metadata/labels/app value:web] map[absent:true path:/metadata/labels/tier]]",
		"c": "[map[path:/data/k value:c]]",
	}
	if !reflect.DeepEqual(priors, wantPriors) {
		t.Errorf("prior values:\n%v\nwant\n%v", priors, wantPriors)
	}
	after := func(what string) {
		t.Helper()
		wantCM(t, what, ns, "a", "data=map[step:1] labels=map[]")
		wantCM(t, what, ns, "b", "data=map[k:b own:b] labels=map[tier:front]")
		wantCM(t, what, other, "c", "data=map[k:C] labels=map[]")
	}
	after("after the run")
	if !gone(t, configMaps, ns, "gone") || !gone(t, configMaps, other, "gone") {
		t.Error("the step created the missing objects")
	}

	// Run twice: converges, same end state.
	again := kubetest.Apply(t, mainCluster(), body, kubetest.Options{NoRollback: true})
	if again.Err != nil {
		t.Fatal(again.Err)
	}
	wantOutputs("second run", again.Outputs(t, "s"))
	after("after the second run")

	// Rolling back the first run restores the prior values, and only those fields.
	if _, err := clusters[0].Typed.CoreV1().ConfigMaps(ns).Patch(context.Background(), "a", "application/merge-patch+json",
		[]byte(`{"data": {"someone": "else"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	rollback(t, run)
	wantCM(t, "after rollback", ns, "a", "data=map[k:a someone:else] labels=map[]")
	wantCM(t, "after rollback", ns, "b", before[ns+"/b"])
	wantCM(t, "after rollback", other, "c", before[other+"/c"])
}

// TestPatchObjectsFromList: objects built with ${{ }} from a kube.list step of the same plan, each
// with a patch made from its own item; rollback on failure restores them.
func TestPatchObjectsFromList(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	createConfigMap(t, ns, "web-1", map[string]string{"v": "1"}, map[string]string{"app": "web"})
	createConfigMap(t, ns, "web-2", map[string]string{"v": "2"}, map[string]string{"app": "web"})
	createConfigMap(t, ns, "db", map[string]string{"v": "3"}, map[string]string{"app": "db"})
	plan := func(selector, more string) string {
		return fmt.Sprintf(`
steps:
  - id: l
    type: kube.list
    with: {apiVersion: v1, kind: ConfigMap, namespace: %[1]s, labelSelector: "%[2]s"}
  - id: s
    type: kube.patch
    with:
      apiVersion: v1
      kind: ConfigMap
      objects: "${{ map(steps.l.outputs.items, ({namespace: .metadata.namespace, name: .metadata.name, patch: {data: {copy: .data.v + '!'}, metadata: {annotations: {was: .metadata.name}}}})) }}"
%[3]s`, ns, selector, more)
	}
	body := plan("app=web", "")
	unchanged := func(what string) {
		t.Helper()
		for name, v := range map[string]string{"web-1": "1", "web-2": "2", "db": "3"} {
			obj := clusters[0].Get(t, configMaps, ns, name)
			d, _, _ := unstructured.NestedStringMap(obj.Object, "data")
			if !reflect.DeepEqual(d, map[string]string{"v": v}) || len(obj.GetAnnotations()) != 0 {
				t.Errorf("%s: %s: data %v annotations %v", what, name, d, obj.GetAnnotations())
			}
		}
	}

	dry := kubetest.Apply(t, mainCluster(), body, kubetest.Options{DryRun: true})
	if dry.Err != nil {
		t.Fatal(dry.Err)
	}
	wantRefs(t, "dry run patched", dry.Outputs(t, "s")["patched"], "ConfigMap "+ns+"/web-1", "ConfigMap "+ns+"/web-2")
	unchanged("after the dry run")

	patched := func(what string) {
		t.Helper()
		for name, v := range map[string]string{"web-1": "1", "web-2": "2"} {
			obj := clusters[0].Get(t, configMaps, ns, name)
			if got := data(t, obj, "copy"); got != v+"!" || obj.GetAnnotations()["was"] != name || data(t, obj, "v") != v {
				t.Errorf("%s: %s: %v %v", what, name, obj.Object["data"], obj.GetAnnotations())
			}
		}
		if db := clusters[0].Get(t, configMaps, ns, "db"); data(t, db, "copy") != "" {
			t.Errorf("%s: db patched", what)
		}
	}
	run := kubetest.Apply(t, mainCluster(), body, kubetest.Options{NoRollback: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	out := run.Outputs(t, "s")
	wantRefs(t, "patched", out["patched"], "ConfigMap "+ns+"/web-1", "ConfigMap "+ns+"/web-2")
	wantRefs(t, "missing", out["missing"])
	patched("after the run")

	again := kubetest.Apply(t, mainCluster(), body, kubetest.Options{NoRollback: true})
	if again.Err != nil {
		t.Fatal(again.Err)
	}
	wantRefs(t, "second run patched", again.Outputs(t, "s")["patched"], "ConfigMap "+ns+"/web-1", "ConfigMap "+ns+"/web-2")
	patched("after the second run")

	rollback(t, run)
	unchanged("after rollback")

	// A later step fails: the run rolls back and the patch's undo restores the objects.
	failing := kubetest.Apply(t, mainCluster(), plan("app=web", "  - {id: boom, type: assert, with: {that: \"false\"}}\n"), kubetest.Options{})
	wantRolledBack(t, failing)
	unchanged("after the failed run")

	// Nothing matches: an empty list patches nothing.
	empty := kubetest.Apply(t, mainCluster(), plan("app=none", ""), kubetest.Options{})
	if empty.Err != nil {
		t.Fatal(empty.Err)
	}
	out = empty.Outputs(t, "s")
	wantRefs(t, "empty patched", out["patched"])
	wantRefs(t, "empty missing", out["missing"])
	if plantest.Num(t, out, "count") != 0 {
		t.Errorf("empty: %v", out)
	}
	unchanged("after the empty run")
}

// TestPatchObjectsEmpty: objects: [] in the plan, with or without a step-level patch.
func TestPatchObjectsEmpty(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	createConfigMap(t, ns, "a", map[string]string{"k": "a"}, nil)
	for _, with := range []string{
		`{apiVersion: v1, kind: ConfigMap, namespace: ` + ns + `, objects: [], patch: {data: {k: x}}}`,
		`{apiVersion: v1, kind: ConfigMap, objects: []}`,
	} {
		run := kubetest.Apply(t, mainCluster(), oneStep("kube.patch", with), kubetest.Options{})
		if run.Err != nil {
			t.Fatal(run.Err)
		}
		out := run.Outputs(t, "s")
		wantRefs(t, "patched", out["patched"])
		wantRefs(t, "missing", out["missing"])
		wantCM(t, with, ns, "a", "data=map[k:a] labels=map[]")
	}
}

// TestPatchObjectsSameObjectTwice: an object given twice with different patches gets both, and
// rollback restores every field either touched.
func TestPatchObjectsSameObjectTwice(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	createConfigMap(t, ns, "a", map[string]string{"x": "0", "y": "0"}, nil)
	run := kubetest.Apply(t, mainCluster(), oneStep("kube.patch", `
      apiVersion: v1
      kind: ConfigMap
      namespace: `+ns+`
      objects: [{name: a, patch: {data: {x: "1"}}}, {name: a, patch: {data: {y: "2"}}}]`), kubetest.Options{NoRollback: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	wantRefs(t, "patched", run.Outputs(t, "s")["patched"], "ConfigMap "+ns+"/a")
	wantCM(t, "after the run", ns, "a", "data=map[x:1 y:2] labels=map[]")
	rollback(t, run)
	wantCM(t, "after rollback", ns, "a", "data=map[x:0 y:0] labels=map[]")
}

func TestPatchObjectsErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	createConfigMap(t, ns, "a", map[string]string{"k": "a"}, nil)
	cm := `apiVersion: v1, kind: ConfigMap, `
	kubetest.RunErrorCases(t, mainCluster(), []kubetest.ErrorCase{
		{Name: "unknown kind", Plan: oneStep("kube.patch", `{apiVersion: example.com/v1, kind: Widget, objects: [{namespace: x, name: w}], patch: {a: b}}`),
			Want: `step "s" failed: unknown kind example.com/v1 Widget on cluster main (is its CRD installed?)`},
		{Name: "entry without namespace", Plan: oneStep("kube.patch", `{`+cm+`objects: [{namespace: `+ns+`, name: a}, {name: a}], patch: {data: {k: x}}}`),
			Want: `step "s" failed: objects[1]: namespace: required, ConfigMap is namespaced`},
		{Name: "namespace on a cluster-scoped kind", Plan: oneStep("kube.patch", `{apiVersion: v1, kind: Namespace, objects: [{namespace: x, name: `+ns+`}], patch: {metadata: {labels: {a: b}}}}`),
			Want: `step "s" failed: objects[0]: namespace: Namespace is cluster-scoped; remove namespace`},
		{Name: "invalid patch result", Plan: oneStep("kube.patch", `{`+cm+`namespace: `+ns+`, objects: [{name: a, patch: {data: {"bad key!": x}}}]}`),
			Want: `step "s" failed: ConfigMap ` + ns + `/a: ConfigMap "a" is invalid: data[bad key!]: Invalid value: "bad key!"`},
		{Name: "json patch the API refuses", Plan: oneStep("kube.patch", `{`+cm+`type: json, namespace: `+ns+`, objects: [{name: a, patch: [{op: remove, path: /data/nope}]}]}`),
			Want: `step "s" failed: ConfigMap ` + ns + `/a: the server rejected our request due to an error in our request`},
		{Name: "forbidden", Clusters: map[string]*kubetest.Cluster{"main": clusters[0].Restricted(t, "planrun-nobody")},
			Plan: oneStep("kube.patch", `{`+cm+`objects: [{namespace: `+ns+`, name: a}], patch: {data: {k: x}}}`),
			Want: `step "s" failed: ConfigMap ` + ns + `/a: configmaps "a" is forbidden: User "planrun-nobody" cannot get resource "configmaps" in API group "" in the namespace "` + ns + `"`},
		// objects made by ${{ }} are checked when the step runs.
		{Name: "templated entries without patch", Plan: oneStep("kube.patch", `{`+cm+`objects: "${{ [{namespace: '`+ns+`', name: 'a'}] }}"}`),
			Want: `plan.yaml:5:5: with: patch: required (unless every entry of objects has its own)`},
		{Name: "templated entry without name", Plan: oneStep("kube.patch", `{`+cm+`objects: "${{ [{namespace: '`+ns+`'}] }}", patch: {data: {k: x}}}`),
			Want: `plan.yaml:7:54: missing required field "name"`},
		{Name: "templated entry that is not a mapping", Plan: oneStep("kube.patch", `{`+cm+`objects: "${{ ['`+ns+`/a'] }}", patch: {data: {k: x}}}`),
			Want: `plan.yaml:7:54: expected a mapping, got string "` + ns + `/a"`},
		{Name: "templated objects and name", Plan: oneStep("kube.patch", `{`+cm+`namespace: `+ns+`, name: a, objects: "${{ [] }}", patch: {data: {k: x}}}`),
			Want: `plan.yaml:5:5: with: name, labelSelector, objects or all: give only one`},
	})
	if got := cmState(t, ns, "a"); got != "data=map[k:a] labels=map[]" {
		t.Errorf("a changed by failing steps: %s", got)
	}

	// Bad objects written in the plan are load errors.
	for _, tc := range []struct{ name, with, want string }{
		{"objects and name", `{` + cm + `namespace: x, name: a, objects: [{name: b}], patch: {data: {k: v}}}`,
			`step "s": with: name, labelSelector, objects or all: give only one`},
		{"objects and labelSelector", `{` + cm + `labelSelector: app=web, objects: [], patch: {data: {k: v}}}`,
			`step "s": with: name, labelSelector, objects or all: give only one`},
		{"none", `{` + cm + `namespace: x, patch: {data: {k: v}}}`, `step "s": with: name, labelSelector, objects or all: give one`},
		{"entry without name", `{` + cm + `objects: [{namespace: x}], patch: {data: {k: v}}}`, `missing required field "name"`},
		{"entry with an empty name", `{` + cm + `objects: [{namespace: x, name: ""}], patch: {data: {k: v}}}`, `step "s": with: field "name" must not be empty`},
		{"entry with an unknown field", `{` + cm + `objects: [{name: a, nmespace: x}], patch: {data: {k: v}}}`, `nmespace`},
		{"no patch at all", `{` + cm + `objects: [{namespace: x, name: a}]}`,
			`step "s": with: patch: required (unless every entry of objects has its own)`},
		{"an entry without patch", `{` + cm + `objects: [{namespace: x, name: a, patch: {data: {k: v}}}, {namespace: x, name: b}]}`,
			`step "s": with: patch: required (unless every entry of objects has its own)`},
		{"entry patch not a mapping", `{` + cm + `objects: [{namespace: x, name: a, patch: [1]}]}`,
			`step "s": with: objects[0].patch: a merge patch is a non-empty mapping`},
		{"entry patch bad json op", `{` + cm + `type: json, objects: [{namespace: x, name: a, patch: [{op: replace, path: /data/k, value: v}]}, {namespace: x, name: b, patch: [{op: bad, path: /x}]}]}`,
			`step "s": with: objects[1].patch[0]: op: "bad" is not add, remove, replace, move, copy or test`},
		{"entry patch bad text", `{` + cm + `objects: [{namespace: x, name: a, patch: "{a: [x"}]}`, `step "s": with: objects[0].patch: `},
		{"bad step patch with entries", `{` + cm + `objects: [{namespace: x, name: a}], patch: {$patch: replace}}`,
			`step "s": with: patch: $patch at the top level is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) { wantLoadError(t, oneStep("kube.patch", tc.with), tc.want) })
	}
}

// widgetCRDs applies a namespaced Widget and a cluster-scoped Gadget CRD of a group of the test.
func widgetCRDs(t *testing.T, group string) {
	t.Helper()
	crd := func(plural, kind, scope string) string {
		return fmt.Sprintf(`
        - apiVersion: apiextensions.k8s.io/v1
          kind: CustomResourceDefinition
          metadata: {name: %[1]s.%[4]s}
          spec:
            group: %[4]s
            scope: %[3]s
            names: {plural: %[1]s, singular: %[5]s, kind: %[2]s}
            versions:
              - name: v1
                served: true
                storage: true
                schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}`,
			plural, kind, scope, group, strings.ToLower(kind))
	}
	run := kubetest.Apply(t, mainCluster(), "steps:\n  - id: crds\n    type: kube.apply\n    with:\n      manifests:"+
		crd("widgets", "Widget", "Namespaced")+crd("gadgets", "Gadget", "Cluster")+"\n", kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	t.Cleanup(func() {
		crds := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
		for _, p := range []string{"widgets", "gadgets"} {
			_ = clusters[0].Dynamic.Resource(crds).Delete(context.Background(), p+"."+group, metav1.DeleteOptions{})
		}
	})
}

func createObject(t *testing.T, gvr schema.GroupVersionResource, obj map[string]any) {
	t.Helper()
	u := &unstructured.Unstructured{Object: obj}
	var err error
	if u.GetNamespace() != "" {
		_, err = clusters[0].Dynamic.Resource(gvr).Namespace(u.GetNamespace()).Create(context.Background(), u, metav1.CreateOptions{})
	} else {
		_, err = clusters[0].Dynamic.Resource(gvr).Create(context.Background(), u, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestDeleteAllInNamespace: every ConfigMap of one namespace; another namespace is untouched.
func TestDeleteAllInNamespace(t *testing.T) {
	kubetest.Need(t, clusters)
	ns, other := clusters[0].Namespace(t), clusters[0].Namespace(t)
	for _, n := range []string{ns, other} {
		createConfigMap(t, n, "a", map[string]string{"k": "v"}, nil)
		createConfigMap(t, n, "b", map[string]string{"k": "v"}, map[string]string{"app": "web"})
	}
	body := oneStep("kube.delete", `{apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, all: true, wait: true}`)

	dry := kubetest.Apply(t, mainCluster(), body, kubetest.Options{DryRun: true})
	if dry.Err != nil {
		t.Fatal(dry.Err)
	}
	out := dry.Outputs(t, "s")
	wantRefs(t, "dry run deleted", out["deleted"], "ConfigMap "+ns+"/a", "ConfigMap "+ns+"/b")
	if out["dryRun"] != true || plantest.Num(t, out, "count") != 2 {
		t.Errorf("dry run outputs %v", out)
	}
	for _, n := range []string{ns, other} {
		for _, name := range []string{"a", "b"} {
			if gone(t, configMaps, n, name) {
				t.Errorf("dry run deleted %s/%s", n, name)
			}
		}
	}

	run := kubetest.Apply(t, mainCluster(), body, kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	out = run.Outputs(t, "s")
	wantRefs(t, "deleted", out["deleted"], "ConfigMap "+ns+"/a", "ConfigMap "+ns+"/b")
	if _, dry := out["dryRun"]; dry || plantest.Num(t, out, "count") != 2 {
		t.Errorf("outputs %v", out)
	}
	if p := run.Progress["s"]; p != (engine.Progress{Done: 2, Total: 2, Unit: "objects gone"}) {
		t.Errorf("last progress %+v, want the objects waited for, all gone", p)
	}
	for _, name := range []string{"a", "b"} {
		if !gone(t, configMaps, ns, name) {
			t.Errorf("%s/%s not deleted", ns, name)
		}
		wantCM(t, "other namespace", other, name, map[string]string{"a": "data=map[k:v] labels=map[]", "b": "data=map[k:v] labels=map[app:web]"}[name])
	}

	again := kubetest.Apply(t, mainCluster(), body, kubetest.Options{})
	if again.Err != nil {
		t.Fatal(again.Err)
	}
	out = again.Outputs(t, "s")
	wantRefs(t, "second run deleted", out["deleted"])
	if plantest.Num(t, out, "count") != 0 {
		t.Errorf("second run outputs %v", out)
	}
	if gone(t, configMaps, other, "a") || gone(t, configMaps, other, "b") {
		t.Error("the other namespace lost objects")
	}
}

// TestDeleteAllNamespaces: every Widget in every namespace (one held by a finalizer that
// removeFinalizers takes off, waited for), and every cluster-scoped Gadget.
func TestDeleteAllNamespaces(t *testing.T) {
	kubetest.Need(t, clusters)
	ns, other := clusters[0].Namespace(t), clusters[0].Namespace(t)
	group := strings.ReplaceAll(ns, "-", "") + ".example.com"
	widgetCRDs(t, group)
	widgets := widgetsGVR(group)
	gadgets := schema.GroupVersionResource{Group: group, Version: "v1", Resource: "gadgets"}
	for _, n := range []string{ns, other} {
		createObject(t, widgets, map[string]any{"apiVersion": group + "/v1", "kind": "Widget", "metadata": map[string]any{"name": "w", "namespace": n}})
	}
	createObject(t, widgets, map[string]any{"apiVersion": group + "/v1", "kind": "Widget",
		"metadata": map[string]any{"name": "held", "namespace": other, "finalizers": []any{"example.com/hold"}}})
	createObject(t, gadgets, map[string]any{"apiVersion": group + "/v1", "kind": "Gadget", "metadata": map[string]any{"name": "g1"}})
	createObject(t, gadgets, map[string]any{"apiVersion": group + "/v1", "kind": "Gadget", "metadata": map[string]any{"name": "g2"}})
	allWidgets := []string{"Widget " + ns + "/w", "Widget " + other + "/held", "Widget " + other + "/w"}
	sort.Strings(allWidgets) // listed in namespace, then name order
	withWidgets := `{apiVersion: ` + group + `/v1, kind: Widget, all: true, wait: true, timeout: 30s, removeFinalizers: true}`

	dry := kubetest.Apply(t, mainCluster(), oneStep("kube.delete", withWidgets), kubetest.Options{DryRun: true})
	if dry.Err != nil {
		t.Fatal(dry.Err)
	}
	wantRefs(t, "dry run deleted", dry.Outputs(t, "s")["deleted"], allWidgets...)
	if held := clusters[0].Get(t, widgets, other, "held"); held.GetDeletionTimestamp() != nil || len(held.GetFinalizers()) != 1 {
		t.Errorf("dry run changed held: %v", held.Object["metadata"])
	}
	if gone(t, widgets, ns, "w") || gone(t, widgets, other, "w") {
		t.Error("dry run deleted a widget")
	}

	// Without removeFinalizers, wait runs out and says why.
	stuck := kubetest.Apply(t, mainCluster(), oneStep("kube.delete", `{apiVersion: `+group+`/v1, kind: Widget, namespace: `+other+`, all: true, wait: true, timeout: 1s}`), kubetest.Options{})
	kubetest.WantRunError(t, stuck, `step "s" failed: Widget `+other+`/held still present after 1s (finalizers: example.com/hold; removeFinalizers: true removes them)`)

	run := kubetest.Apply(t, mainCluster(), oneStep("kube.delete", withWidgets), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	// other/w went with the stuck run; held is still there, being deleted.
	// The API lists in key order: by namespace name, whatever numbers the test namespaces got.
	deleted := []string{"Widget " + ns + "/w", "Widget " + other + "/held"}
	sort.Strings(deleted)
	wantRefs(t, "deleted", run.Outputs(t, "s")["deleted"], deleted...)
	for _, r := range [][2]string{{ns, "w"}, {other, "w"}, {other, "held"}} {
		if _, err := clusters[0].Dynamic.Resource(widgets).Namespace(r[0]).Get(context.Background(), r[1], metav1.GetOptions{}); err == nil {
			t.Errorf("widget %s/%s still there after wait", r[0], r[1])
		}
	}
	again := kubetest.Apply(t, mainCluster(), oneStep("kube.delete", withWidgets), kubetest.Options{})
	if again.Err != nil {
		t.Fatal(again.Err)
	}
	wantRefs(t, "second run deleted", again.Outputs(t, "s")["deleted"])

	// A cluster-scoped kind: all of them; a namespace is refused.
	kubetest.RunErrorCases(t, mainCluster(), []kubetest.ErrorCase{
		{Name: "namespace on a cluster-scoped kind", Plan: oneStep("kube.delete", `{apiVersion: `+group+`/v1, kind: Gadget, namespace: `+ns+`, all: true}`),
			Want: `step "s" failed: namespace: Gadget is cluster-scoped; remove namespace`},
	})
	gadgetRun := kubetest.Apply(t, mainCluster(), oneStep("kube.delete", `{apiVersion: `+group+`/v1, kind: Gadget, all: true, wait: true}`), kubetest.Options{})
	if gadgetRun.Err != nil {
		t.Fatal(gadgetRun.Err)
	}
	wantRefs(t, "gadgets deleted", gadgetRun.Outputs(t, "s")["deleted"], "Gadget g1", "Gadget g2")
	if !gone(t, gadgets, "", "g1") || !gone(t, gadgets, "", "g2") {
		t.Error("gadgets left")
	}
}

func TestDeleteAllErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	createConfigMap(t, ns, "a", map[string]string{"k": "v"}, nil)
	kubetest.RunErrorCases(t, mainCluster(), []kubetest.ErrorCase{
		{Name: "unknown kind", Plan: oneStep("kube.delete", `{apiVersion: example.com/v1, kind: Widget, all: true}`),
			Want: `step "s" failed: unknown kind example.com/v1 Widget on cluster main (is its CRD installed?)`},
		{Name: "forbidden", Clusters: map[string]*kubetest.Cluster{"main": clusters[0].Restricted(t, "planrun-nobody")},
			Plan: oneStep("kube.delete", `{apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, all: true}`),
			Want: `step "s" failed: list ConfigMap: configmaps is forbidden: User "planrun-nobody" cannot list resource "configmaps" in API group "" in the namespace "` + ns + `"`},
		{Name: "templated name with all", Plan: "params:\n  n: {type: string, default: a}\n" + oneStep("kube.delete", `{apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, name: "${{ params.n }}", all: true}`),
			Want: `plan.yaml:7:5: with: name, labelSelector or all: give only one`},
	})
	if gone(t, configMaps, ns, "a") {
		t.Error("a deleted by failing steps")
	}
	for _, tc := range []struct{ name, with, want string }{
		{"all and name", `{apiVersion: v1, kind: ConfigMap, namespace: x, name: a, all: true}`, `step "s": with: name, labelSelector or all: give only one`},
		{"all and labelSelector", `{apiVersion: v1, kind: ConfigMap, labelSelector: app=web, all: true}`, `step "s": with: name, labelSelector or all: give only one`},
		{"none", `{apiVersion: v1, kind: ConfigMap, namespace: x}`, `step "s": with: name, labelSelector or all: give one`},
		{"all false alone", `{apiVersion: v1, kind: ConfigMap, namespace: x, all: false}`, `step "s": with: name, labelSelector or all: give one`},
		{"bad propagation policy", `{apiVersion: v1, kind: ConfigMap, all: true, propagationPolicy: Later}`,
			`step "s": with: propagationPolicy: "Later" is not Background, Foreground or Orphan`},
	} {
		t.Run(tc.name, func(t *testing.T) { wantLoadError(t, oneStep("kube.delete", tc.with), tc.want) })
	}
}

// TestPatchAllInNamespace: every ConfigMap of one namespace gets the annotation (as Gardener's
// migrate annotation on every extension resource of a kind); the other namespace is untouched;
// a second run converges; rollback removes the annotation again.
func TestPatchAllInNamespace(t *testing.T) {
	kubetest.Need(t, clusters)
	ns, other := clusters[0].Namespace(t), clusters[0].Namespace(t)
	for _, n := range []string{ns, other} {
		createConfigMap(t, n, "a", map[string]string{"k": "a"}, nil)
		createConfigMap(t, n, "b", map[string]string{"k": "b"}, map[string]string{"app": "web"})
	}
	body := oneStep("kube.patch", `{apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, all: true, patch: {metadata: {labels: {op: migrate}}}}`)
	unchanged := func(what string, n string) {
		t.Helper()
		wantCM(t, what, n, "a", "data=map[k:a] labels=map[]")
		wantCM(t, what, n, "b", "data=map[k:b] labels=map[app:web]")
	}

	dry := kubetest.Apply(t, mainCluster(), body, kubetest.Options{DryRun: true})
	if dry.Err != nil {
		t.Fatal(dry.Err)
	}
	out := dry.Outputs(t, "s")
	wantRefs(t, "dry run patched", out["patched"], "ConfigMap "+ns+"/a", "ConfigMap "+ns+"/b")
	if out["dryRun"] != true {
		t.Errorf("dry run outputs %v", out)
	}
	unchanged("after the dry run", ns)

	var first *kubetest.Run
	for _, what := range []string{"run", "second run"} {
		run := kubetest.Apply(t, mainCluster(), body, kubetest.Options{NoRollback: true})
		if run.Err != nil {
			t.Fatal(run.Err)
		}
		wantRefs(t, what+" patched", run.Outputs(t, "s")["patched"], "ConfigMap "+ns+"/a", "ConfigMap "+ns+"/b")
		wantCM(t, what, ns, "a", "data=map[k:a] labels=map[op:migrate]")
		wantCM(t, what, ns, "b", "data=map[k:b] labels=map[app:web op:migrate]")
		unchanged(what+": other namespace", other)
		if first == nil {
			first = run
		}
	}
	// Rolling back the first run takes the label off: it was absent before.
	rollback(t, first)
	unchanged("after rollback", ns)

	for _, tc := range []struct{ name, with, want string }{
		{"all and name", `{apiVersion: v1, kind: ConfigMap, namespace: x, name: a, all: true, patch: {data: {k: v}}}`,
			`step "s": with: name, labelSelector, objects or all: give only one`},
		{"all and objects", `{apiVersion: v1, kind: ConfigMap, objects: [{namespace: x, name: a}], all: true, patch: {data: {k: v}}}`,
			`step "s": with: name, labelSelector, objects or all: give only one`},
	} {
		t.Run(tc.name, func(t *testing.T) { wantLoadError(t, oneStep("kube.patch", tc.with), tc.want) })
	}
}

// TestPatchWhere: where keeps the objects a patch touches to those for which it holds, so that a
// step run again (after a crash) leaves alone what a controller has finished since; the objects
// it skips are not on the undo record.
func TestPatchWhere(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	createConfigMap(t, ns, "a", map[string]string{"k": "a"}, nil)
	createConfigMap(t, ns, "b", map[string]string{"k": "b"}, map[string]string{"state": "done"})
	createConfigMap(t, ns, "c", map[string]string{"k": "c"}, map[string]string{"state": "pending"})
	body := oneStep("kube.patch", `{apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, all: true, where: "object.metadata.labels?.state != 'done'", patch: {data: {op: migrate}}}`)
	run := kubetest.Apply(t, mainCluster(), body, kubetest.Options{NoRollback: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	wantRefs(t, "patched", run.Outputs(t, "s")["patched"], "ConfigMap "+ns+"/a", "ConfigMap "+ns+"/c")
	wantCM(t, "a", ns, "a", "data=map[k:a op:migrate] labels=map[]")
	wantCM(t, "b", ns, "b", "data=map[k:b] labels=map[state:done]")
	wantCM(t, "c", ns, "c", "data=map[k:c op:migrate] labels=map[state:pending]")
	rollback(t, run)
	wantCM(t, "a after rollback", ns, "a", "data=map[k:a] labels=map[]")
	wantCM(t, "c after rollback", ns, "c", "data=map[k:c] labels=map[state:pending]")

	// A named object for which where is false: not patched, not an error.
	named := kubetest.Apply(t, mainCluster(), oneStep("kube.patch", `{apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, name: b, where: "object.metadata.labels?.state != 'done'", patch: {data: {op: x}}}`), kubetest.Options{})
	if named.Err != nil {
		t.Fatal(named.Err)
	}
	wantRefs(t, "named, where false", named.Outputs(t, "s")["patched"])
	wantCM(t, "b untouched", ns, "b", "data=map[k:b] labels=map[state:done]")

	kubetest.RunErrorCases(t, mainCluster(), []kubetest.ErrorCase{
		{Name: "where that fails on an object", Plan: oneStep("kube.patch", `{where: "object.data.k > 3", apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, name: a, patch: {data: {op: x}}}`),
			Want: `plan.yaml:7:20: object.data.k > 3: invalid operation: string > int`},
		{Name: "where that is not a boolean", Plan: oneStep("kube.patch", `{where: "object.data.k", apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, name: a, patch: {data: {op: x}}}`),
			Want: `plan.yaml:7:20: object.data.k: expected true or false, got string a`},
		{Name: "where that is nil", Plan: oneStep("kube.patch", `{where: "object.data.nope", apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, name: a, patch: {data: {op: x}}}`),
			Want: `plan.yaml:7:20: object.data.nope: expected true or false, got nil`},
	})
	wantLoadError(t, oneStep("kube.patch", `{where: "object.metadata.name ==", apiVersion: v1, kind: ConfigMap, namespace: x, all: true, patch: {data: {k: v}}}`),
		`plan.yaml:7:42: step "s": with: invalid expression "object.metadata.name ==": unexpected token EOF`)
	wantLoadError(t, oneStep("kube.patch", `{where: "object.metadata.name == params.nope", apiVersion: v1, kind: ConfigMap, namespace: x, all: true, patch: {data: {k: v}}}`),
		`step "s": with: invalid expression "object.metadata.name == params.nope": unknown param "nope"`)
}
