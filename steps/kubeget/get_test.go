package kubeget_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	_ "planrun.dev/planrun/steps"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/kube/kubetest"
)

var clusters []*kubetest.Cluster

func TestMain(m *testing.M) { kubetest.Main(m, 1, &clusters) }

func main() map[string]*kubetest.Cluster { return map[string]*kubetest.Cluster{"main": clusters[0]} }

func TestGetAndList(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	for i := 0; i < 7; i++ {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%d", i), Labels: map[string]string{"even": fmt.Sprint(i%2 == 0)}},
			Data: map[string]string{"i": fmt.Sprint(i)}}
		if _, err := c.Typed.CoreV1().ConfigMaps(ns).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	run := kubetest.Apply(t, main(), fmt.Sprintf(`
params:
  ns: {default: %s}
steps:
  - {id: one, type: kube.get, with: {apiVersion: v1, kind: ConfigMap, namespace: "${{ params.ns }}", name: cm-3}}
  - {id: absent, type: kube.get, with: {apiVersion: v1, kind: ConfigMap, namespace: "${{ params.ns }}", name: nope, optional: true}}
  - {id: ns, type: kube.get, with: {apiVersion: v1, kind: Namespace, name: "${{ params.ns }}"}}
  - {id: even, type: kube.list, with: {apiVersion: v1, kind: ConfigMap, namespace: "${{ params.ns }}", labelSelector: even=true}}
  - {id: all, type: kube.list, with: {apiVersion: v1, kind: ConfigMap, labelSelector: even, items: false}}
  - {id: some, type: kube.list, with: {apiVersion: v1, kind: ConfigMap, namespaces: ["${{ params.ns }}", "${{ params.ns }}-absent"], labelSelector: even=false, items: false}}
  - {id: both, type: kube.list, with: {apiVersion: v1, kind: ConfigMap, namespace: "${{ params.ns }}", namespaces: ["${{ params.ns }}"], labelSelector: even}}
  - id: check
    type: assert
    with:
      that: >-
        steps.one.outputs.found && steps.one.outputs.object.data.i == "3" &&
        !steps.absent.outputs.found && steps.ns.outputs.found &&
        steps.even.outputs.count == 4 && len(steps.even.outputs.items) == 4 &&
        steps.all.outputs.count == 7 && steps.all.outputs.items == nil &&
        steps.some.outputs.count == 3 && all(steps.some.outputs.names, hasPrefix(#, params.ns + "/")) &&
        steps.both.outputs.count == 7
`, ns), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
}

func TestGetErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	cases := []struct {
		name string
		with string
		want string
	}{
		{"missing object", `{apiVersion: v1, kind: ConfigMap, namespace: ` + ns + `, name: nope}`, `step "s" failed: ConfigMap ` + ns + `/nope not found (set optional: true if it may be absent)`},
		{"unknown kind", `{apiVersion: example.com/v1, kind: Widget, namespace: x, name: y}`, `step "s" failed: unknown kind example.com/v1 Widget on cluster main (is its CRD installed?)`},
		{"namespace for a cluster-scoped kind", `{apiVersion: v1, kind: Namespace, namespace: x, name: y}`, `step "s" failed: namespace: Namespace is cluster-scoped; remove namespace`},
		{"no namespace for a namespaced kind", `{apiVersion: v1, kind: Secret, name: y}`, `step "s" failed: namespace: required, Secret is namespaced`},
		{"unknown cluster", `{cluster: "${{ 'other' }}", apiVersion: v1, kind: Secret, namespace: x, name: y}`, `step "s" failed: cluster: the plan has no cluster "other" (clusters: main)`},
		{"list: namespaces for a cluster-scoped kind", `{apiVersion: v1, kind: PersistentVolume, namespaces: [x]}`, `step "s" failed: namespace: PersistentVolume is cluster-scoped; remove namespace and namespaces`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			typ := "kube.get"
			if strings.HasPrefix(tc.name, "list: ") {
				typ = "kube.list"
			}
			run := kubetest.Apply(t, main(), "steps:\n  - {id: s, type: "+typ+", with: "+tc.with+"}\n", kubetest.Options{})
			kubetest.WantRunError(t, run, tc.want)
		})
	}
}

// What the cluster does not serve is told apart with errors.Is on kube's sentinels, never by
// message text, and discovery's own error stays reachable as the cause.
func TestNotServedSentinels(t *testing.T) {
	kubetest.Need(t, clusters)
	c, err := kube.NewClientForConfig("main", clusters[0].CP.Config)
	if err != nil {
		t.Fatal(err)
	}
	var noKind *meta.NoKindMatchError
	if _, err := c.Mapping("example.com/v1", "Widget"); !errors.Is(err, kube.ErrUnknownKind) || !errors.As(err, &noKind) || errors.Is(err, kube.ErrUnknownResource) {
		t.Fatalf("Mapping of an unknown kind: %v", err)
	}
	if _, err := c.Mapping("v1", "ConfigMap"); err != nil {
		t.Fatal(err)
	}
	var noResource *meta.NoResourceMatchError
	if _, err := c.ResourceFor("widgets.example.com"); !errors.Is(err, kube.ErrUnknownResource) || !errors.As(err, &noResource) || errors.Is(err, kube.ErrUnknownKind) {
		t.Fatalf("ResourceFor an unknown resource: %v", err)
	}
	// Through a step: the engine keeps the chain.
	run := kubetest.Apply(t, main(), "steps:\n  - {id: s, type: kube.get, with: {apiVersion: example.com/v1, kind: Widget, namespace: x, name: y}}\n", kubetest.Options{})
	if !errors.Is(run.Err, kube.ErrUnknownKind) {
		t.Fatalf("run error %v does not match kube.ErrUnknownKind", run.Err)
	}
}
