package main

import (
	"context"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
)

// TestKubeconfigFlagsWithoutClusters: a plan that declares no clusters works on the cluster
// --kubeconfig and --context name, for apply and for resume.
func TestKubeconfigFlagsWithoutClusters(t *testing.T) {
	cp := controlplane.StartForTest(t)
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "flags-only"}}
	if _, err := cs.CoreV1().Namespaces().Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	plan := writePlan(t, dir, "plan.yaml", `apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: flags}
steps:
  - {id: ns, type: kube.get, with: {apiVersion: v1, kind: Namespace, name: flags-only}}
`)
	flags := []string{"--kubeconfig", cp.Kubeconfig, "--context", cp.ContextName}
	r := runPlanrun(t, dir, nil, append([]string{"apply", plan, "--run-id", "r"}, flags...)...)
	if r.Code != 0 {
		t.Fatalf("apply: %s", r)
	}
	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(t.Context(), "r")
	if err != nil {
		t.Fatal(err)
	}
	if s := j.Step("ns"); s.Status != engine.StepSucceeded || s.Outputs["found"] != true {
		t.Fatalf("step ns: %s %v", s.Status, s.Outputs)
	}
}
