package kubewait_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	_ "planrun.dev/planrun/steps"
	"planrun.dev/planrun/steps/kube/kubetest"
)

var clusters []*kubetest.Cluster

func TestMain(m *testing.M) { kubetest.Main(m, 1, &clusters) }

func main() map[string]*kubetest.Cluster { return map[string]*kubetest.Cluster{"main": clusters[0]} }

func ctx() context.Context { return context.Background() }

func plan(with string) string { return "steps:\n  - {id: s, type: kube.wait, with: " + with + "}\n" }

// later runs fn in the background after a pause, while the plan waits; the channel gives its error.
func later(fn func() error) <-chan error {
	done := make(chan error, 1)
	go func() {
		time.Sleep(500 * time.Millisecond)
		done <- fn()
	}()
	return done
}

func check(t *testing.T, done <-chan error) {
	t.Helper()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func configMap(t *testing.T, ns, name string, labels, data map[string]string) {
	t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Data: data}
	if _, err := clusters[0].Typed.CoreV1().ConfigMaps(ns).Create(ctx(), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func deployment(t *testing.T, ns, name string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{Replicas: new(int32(2)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}},
	}
	d, err := clusters[0].Typed.AppsV1().Deployments(ns).Create(ctx(), d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// setReady plays the Deployment controller: it writes status.readyReplicas.
func setReady(ns, name string, ready int32) error {
	deps := clusters[0].Typed.AppsV1().Deployments(ns)
	d, err := deps.Get(ctx(), name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	d.Status.Replicas, d.Status.ReadyReplicas = 2, ready
	_, err = deps.UpdateStatus(ctx(), d, metav1.UpdateOptions{})
	return err
}

// The condition over one object becomes true when another client changes the object: the
// step sees it through its watch, at once (the timeout is far away).
func TestWaitForObject(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	deployment(t, ns, "web")
	p := plan(`{apiVersion: apps/v1, kind: Deployment, namespace: ` + ns + `, name: web, condition: "object.status.readyReplicas >= object.spec.replicas", timeout: 1m}`)
	done := later(func() error { return setReady(ns, "web", 2) })
	start := time.Now()
	run := kubetest.Apply(t, main(), p, kubetest.Options{})
	check(t, done)
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the wait took %s: the change was not seen through the watch", took)
	}
	out := run.Outputs(t, "s")
	obj, _ := out["object"].(map[string]any)
	status, _ := obj["status"].(map[string]any)
	if out["found"] != true || out["satisfied"] != true || out["count"] != 1 || fmt.Sprint(status["readyReplicas"]) != "2" {
		t.Fatalf("outputs %v", out)
	}

	// Run again: already true, it returns at once with the same outputs.
	start = time.Now()
	run = kubetest.Apply(t, main(), p, kubetest.Options{})
	if run.Err != nil || time.Since(start) > 5*time.Second || run.Outputs(t, "s")["satisfied"] != true {
		t.Fatalf("second run: %v after %s", run.Err, time.Since(start))
	}
}

// Waiting for an object that does not exist yet: object is nil until it is created.
func TestWaitForObjectCreated(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	done := later(func() error {
		_, err := clusters[0].Typed.CoreV1().ConfigMaps(ns).Create(ctx(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "flag"}, Data: map[string]string{"state": "done"}}, metav1.CreateOptions{})
		return err
	})
	run := kubetest.Apply(t, main(), plan(`{apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, name: flag, condition: 'object.data.state == "done"', timeout: 1m}`)+
		`  - {id: check, type: assert, with: {that: 'steps.s.outputs.object.data.state == "done"'}}`+"\n", kubetest.Options{})
	check(t, done)
	if run.Err != nil {
		t.Fatal(run.Err)
	}
}

func TestWaitForList(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	labels := map[string]string{"batch": "b1"}
	configMap(t, ns, "part-0", labels, map[string]string{"done": "true"})
	configMap(t, ns, "part-1", labels, map[string]string{"done": "false"})
	configMap(t, ns, "unrelated", nil, map[string]string{"done": "false"})
	done := later(func() error {
		cms := clusters[0].Typed.CoreV1().ConfigMaps(ns)
		cm, err := cms.Get(ctx(), "part-1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		cm.Data["done"] = "true"
		if _, err := cms.Update(ctx(), cm, metav1.UpdateOptions{}); err != nil {
			return err
		}
		_, err = cms.Create(ctx(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "part-2", Labels: labels}, Data: map[string]string{"done": "true"}}, metav1.CreateOptions{})
		return err
	})
	run := kubetest.Apply(t, main(), plan(`{apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, labelSelector: batch=b1, condition: 'count == 3 && all(items, .data.done == "true")', timeout: 1m}`), kubetest.Options{})
	check(t, done)
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	out := run.Outputs(t, "s")
	if out["count"] != 3 || fmt.Sprint(out["names"]) != fmt.Sprintf("[%[1]s/part-0 %[1]s/part-1 %[1]s/part-2]", ns) {
		t.Fatalf("outputs %v", out)
	}
	if _, ok := out["items"]; ok {
		t.Errorf("items without items: true: %v", out)
	}

	// items: true gives the objects as they were when the condition held.
	run = kubetest.Apply(t, main(), plan(`{apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, labelSelector: batch=b1, condition: 'count == 3', items: true}`), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	items, _ := run.Outputs(t, "s")["items"].([]any)
	var got []string
	for _, it := range items {
		o := it.(map[string]any)
		got = append(got, fmt.Sprint(o["metadata"].(map[string]any)["name"], "=", o["data"].(map[string]any)["done"]))
	}
	if fmt.Sprint(got) != "[part-0=true part-1=true part-2=true]" {
		t.Errorf("items: %v", got)
	}
}

func TestWaitUntilGone(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	configMap(t, ns, "old", nil, nil)
	for i := 0; i < 3; i++ {
		configMap(t, ns, fmt.Sprint("tmp-", i), map[string]string{"tmp": "yes"}, nil)
	}
	done := later(func() error {
		cms := clusters[0].Typed.CoreV1().ConfigMaps(ns)
		if err := cms.Delete(ctx(), "old", metav1.DeleteOptions{}); err != nil {
			return err
		}
		return cms.DeleteCollection(ctx(), metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "tmp=yes"})
	})
	run := kubetest.Apply(t, main(), `
steps:
  - {id: one, type: kube.wait, with: {apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, name: old, for: gone, timeout: 1m}}
  - {id: all, type: kube.wait, with: {apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, labelSelector: tmp=yes, for: gone, timeout: 1m}}
  - {id: check, type: assert, with: {that: '!steps.one.outputs.found && steps.all.outputs.count == 0'}}
`, kubetest.Options{})
	check(t, done)
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	list, err := clusters[0].Typed.CoreV1().ConfigMaps(ns).List(ctx(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cm := range list.Items {
		if cm.Name == "old" || strings.HasPrefix(cm.Name, "tmp-") {
			t.Errorf("%s still exists", cm.Name)
		}
	}
}

// A timeout says, in one line, what was awaited and what was last seen.
func TestWaitTimeout(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	deployment(t, ns, "web")
	configMap(t, ns, "a", map[string]string{"app": "x"}, map[string]string{"k": "v"})
	configMap(t, ns, "b", map[string]string{"app": "x"}, nil)
	cases := []struct{ name, with, want string }{
		{"field not set yet", `{apiVersion: apps/v1, kind: Deployment, namespace: ` + ns + `, name: web, condition: "object.status.readyReplicas >= 2", timeout: 1s}`,
			`step "s" failed: Deployment ` + ns + `/web: timed out after 1s waiting until object.status.readyReplicas >= 2; last seen: spec {"progressDeadlineSeconds":600,"replicas":2,`},
		{"condition false", `{apiVersion: v1, kind: ConfigMap, namespace: ` + ns + `, name: a, condition: 'object.data.k == "w"', timeout: 1s}`,
			`step "s" failed: ConfigMap ` + ns + `/a: timed out after 1s waiting until object.data.k == "w"; last seen: {"data":{"k":"v"}}`},
		{"missing object", `{apiVersion: v1, kind: ConfigMap, namespace: ` + ns + `, name: nope, condition: 'object.data.k == "v"', timeout: 1s}`,
			`step "s" failed: ConfigMap ` + ns + `/nope: timed out after 1s waiting until object.data.k == "v"; last seen: not found (condition: cannot fetch k from <nil> (1:13))`},
		{"list", `{apiVersion: v1, kind: ConfigMap, namespace: ` + ns + `, labelSelector: app=x, condition: "count == 3", timeout: 1s}`,
			`step "s" failed: ConfigMap in namespace ` + ns + ` matching app=x: timed out after 1s waiting until count == 3; last seen: 2 objects: ` + ns + `/a, ` + ns + `/b`},
		{"not gone", `{apiVersion: v1, kind: ConfigMap, namespace: ` + ns + `, name: a, for: gone, timeout: 1s}`,
			`step "s" failed: ConfigMap ` + ns + `/a: timed out after 1s waiting to be gone; last seen: {"data":{"k":"v"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			run := kubetest.Apply(t, main(), plan(tc.with), kubetest.Options{})
			kubetest.WantRunError(t, run, tc.want)
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("took %s", took)
			}
		})
	}
	// The state is cut to about 300 characters.
	big := strings.Repeat("x", 1000)
	configMap(t, ns, "big", nil, map[string]string{"k": big})
	run := kubetest.Apply(t, main(), plan(`{apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, name: big, for: gone, timeout: 1s}`), kubetest.Options{})
	if run.Err == nil || !strings.HasSuffix(run.Err.Error(), "xxx…") || len(run.Err.Error()) > 500 {
		t.Fatalf("error %v", run.Err)
	}
}

// A dry run does not wait (nothing before it changed anything): it says whether the condition
// holds now.
func TestWaitDryRun(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	configMap(t, ns, "a", nil, map[string]string{"k": "v"})
	start := time.Now()
	run := kubetest.Apply(t, main(), `
steps:
  - {id: never, type: kube.wait, with: {apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, name: a, condition: 'object.data.k == "w"', timeout: 1m}}
  - {id: now, type: kube.wait, with: {apiVersion: v1, kind: ConfigMap, namespace: `+ns+`, name: a, condition: 'object.data.k == "v"'}}
`, kubetest.Options{DryRun: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the dry run waited %s", took)
	}
	if out := run.Outputs(t, "never"); out["dryRun"] != true || out["satisfied"] != false || out["found"] != true {
		t.Errorf("outputs %v", out)
	}
	if out := run.Outputs(t, "now"); out["dryRun"] != true || out["satisfied"] != true {
		t.Errorf("outputs %v", out)
	}
}

func TestWaitErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	configMap(t, ns, "a", nil, map[string]string{"k": "v"})
	kubetest.RunErrorCases(t, main(), []kubetest.ErrorCase{
		{Name: "unknown kind", Plan: plan(`{apiVersion: example.com/v1, kind: Widget, namespace: x, name: y, for: gone}`),
			Want: `step "s" failed: unknown kind example.com/v1 Widget on cluster main (is its CRD installed?)`},
		{Name: "no namespace", Plan: plan(`{apiVersion: v1, kind: ConfigMap, name: a, for: gone}`),
			Want: `step "s" failed: namespace: required, ConfigMap is namespaced`},
		{Name: "namespace for a cluster-scoped kind", Plan: plan(`{apiVersion: v1, kind: Namespace, namespace: x, name: y, for: gone}`),
			Want: `step "s" failed: namespace: Namespace is cluster-scoped; remove namespace`},
		{Name: "forbidden", Clusters: map[string]*kubetest.Cluster{"main": clusters[0].Restricted(t, "nobody")}, Plan: plan(`{apiVersion: v1, kind: ConfigMap, namespace: ` + ns + `, name: a, for: gone}`),
			Want: `step "s" failed: ConfigMap ` + ns + `/a: configmaps "a" is forbidden: User "nobody" cannot list resource "configmaps" in API group "" in the namespace "` + ns + `"`},
		{Name: "condition that can never work", Plan: plan(`{condition: "object.metadata.name > 3", apiVersion: v1, kind: ConfigMap, namespace: ` + ns + `, name: a}`),
			Want: `plan.yaml:5:49: object.metadata.name > 3: invalid operation: string > int (1:22)`},
		{Name: "condition that is not a boolean", Plan: plan(`{condition: "object.data.k", apiVersion: v1, kind: ConfigMap, namespace: ` + ns + `, name: a}`),
			Want: `plan.yaml:5:49: object.data.k: expected true or false, got string v`},
	})
}

// Invalid configs, the condition's syntax and names included, are refused when the plan loads,
// at the step's position, before anything touches a cluster.
func TestLoadErrors(t *testing.T) {
	cases := []struct{ with, want string }{
		{`{apiVersion: v1, kind: ConfigMap, namespace: n, name: a, condition: "object.status.ready =="}`, `plan.yaml:5:126: step "s": with: invalid expression "object.status.ready ==": unexpected token EOF`},
		{`{apiVersion: v1, kind: ConfigMap, namespace: n, name: a, condition: "obj.ready"}`, `plan.yaml:5:105: step "s": with: invalid expression "obj.ready": unknown name obj`},
		{`{apiVersion: v1, kind: ConfigMap, namespace: n, name: a, condition: "count + 1"}`, `plan.yaml:5:105: step "s": with: expression "count + 1" gives int, not true or false`},
		{`{apiVersion: v1, kind: ConfigMap, namespace: n, name: a, condition: "count == params.nope"}`, `plan.yaml:5:121: step "s": with: invalid expression "count == params.nope": unknown param "nope" (the plan has no params)`},
		{`{apiVersion: v1, kind: ConfigMap, namespace: n, name: a, condition: "count == ${{ 1 }}"}`, `plan.yaml:5:114: step "s": with: ${{ inside an expression`},
		{`{apiVersion: v1, kind: ConfigMap, namespace: n, name: a}`, `step "s": with: condition or for: one is required`},
		{`{apiVersion: v1, kind: ConfigMap, namespace: n, name: a, for: gone, condition: "true"}`, `step "s": with: condition and for: give only one`},
		{`{apiVersion: v1, kind: ConfigMap, namespace: n, name: a, for: ready}`, `step "s": with: for: expected gone, got "ready"`},
		{`{apiVersion: v1, kind: ConfigMap, namespace: n, name: a, labelSelector: x, for: gone}`, `step "s": with: name and labelSelector/fieldSelector: give only one`},
		{`{apiVersion: v1, kind: ConfigMap, labelSelector: "a in (", for: gone}`, `step "s": with: labelSelector: `},
		{`{apiVersion: v1, kind: ConfigMap, namespace: n, name: a, for: gone, timeout: -1s}`, `step "s": with: expected a duration such as 30s or 5m, got "-1s"`},
		{`{kind: ConfigMap, namespace: n, name: a, for: gone}`, `missing required field "apiVersion"`},
		{`{apiVersion: v1, kind: ConfigMap, namespace: n, name: a, for: gone, items: true}`, `step "s": with: items: a wait for one named object has outputs.object; items is for lists`},
	}
	for _, tc := range cases {
		path := filepath.Join(t.TempDir(), "plan.yaml")
		src := "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: test}\n" + plan(tc.with)
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := engine.Load(path, engine.LoadOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s\nerror %v\nwant %q", tc.with, err, tc.want)
		}
	}
}
