package kubeapply_test

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"planrun.dev/planrun/steps/kube/kubetest"
)

// statusPhase is a Deployment's status.conditions[0].reason and status.observedGeneration, as
// "reason/generation" ("-" when absent): nothing runs in the test cluster to change them.
func statusPhase(t *testing.T, ns, name string) string {
	t.Helper()
	d := clusters[0].Get(t, deployments, ns, name)
	conds, _, _ := unstructured.NestedSlice(d.Object, "status", "conditions")
	reason := "-"
	if len(conds) > 0 {
		reason, _ = conds[0].(map[string]any)["reason"].(string)
	}
	gen, found, _ := unstructured.NestedInt64(d.Object, "status", "observedGeneration")
	if !found {
		return reason + "/-"
	}
	return fmt.Sprintf("%s/%d", reason, gen)
}

// TestPatchStatusSubresource: with subresource: status the status changes (through the object
// it would not: the API server drops status from writes to a resource with a status
// subresource); dry run, run twice and undo go through /status too.
func TestPatchStatusSubresource(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	createObject(t, deployments, map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "web", "namespace": ns},
		"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "web"}},
				"spec": map[string]any{"containers": []any{map[string]any{"name": "web", "image": "nginx"}}}}}})
	d := clusters[0].Get(t, deployments, ns, "web")
	d.Object["status"] = map[string]any{"observedGeneration": int64(1), "conditions": []any{map[string]any{"type": "Available", "status": "True", "reason": "Ready"}}}
	if _, err := clusters[0].Dynamic.Resource(deployments).Namespace(ns).UpdateStatus(context.Background(), d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	body := oneStep("kube.patch", fmt.Sprintf(`{apiVersion: apps/v1, kind: Deployment, namespace: %s, name: web, subresource: status,
      patch: {status: {observedGeneration: 7, conditions: [{type: Available, status: "False", reason: Migrating}]}}}`, ns))

	dry := kubetest.Apply(t, mainCluster(), body, kubetest.Options{DryRun: true})
	if dry.Err != nil {
		t.Fatal(dry.Err)
	}
	if out := dry.Outputs(t, "s"); out["dryRun"] != true || out["count"] != 1 {
		t.Fatalf("dry-run outputs %v", out)
	}
	if got := statusPhase(t, ns, "web"); got != "Ready/1" {
		t.Fatalf("dry run changed the status: %s", got)
	}

	run := kubetest.Apply(t, mainCluster(), body, kubetest.Options{NoRollback: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if got := statusPhase(t, ns, "web"); got != "Migrating/7" {
		t.Fatalf("status after the patch: %s, want Migrating/7", got)
	}
	patched := run.Outputs(t, "s")["patched"].([]any)[0].(map[string]any)
	if patched["subresource"] != "status" {
		t.Errorf("outputs.patched[0] = %v, want subresource status", patched)
	}

	// Run twice: the same status.
	if again := kubetest.Apply(t, mainCluster(), body, kubetest.Options{}); again.Err != nil {
		t.Fatal(again.Err)
	}
	if got := statusPhase(t, ns, "web"); got != "Migrating/7" {
		t.Fatalf("status after the second run: %s", got)
	}

	// Undo of the first run puts the prior status back, through /status.
	rollback(t, run)
	if got := statusPhase(t, ns, "web"); got != "Ready/1" {
		t.Fatalf("status after the rollback: %s, want Ready/1", got)
	}

	// Without subresource, the API server ignores the status of the patch: nothing changes.
	plain := kubetest.Apply(t, mainCluster(), oneStep("kube.patch", fmt.Sprintf(`{apiVersion: apps/v1, kind: Deployment, namespace: %s, name: web,
      patch: {status: {observedGeneration: 9}}}`, ns)), kubetest.Options{})
	if plain.Err != nil {
		t.Fatal(plain.Err)
	}
	if got := statusPhase(t, ns, "web"); got != "Ready/1" {
		t.Fatalf("a patch of the object changed the status: %s", got)
	}
}

func TestPatchSubresourceErrors(t *testing.T) {
	wantLoadError(t, oneStep("kube.patch", `{apiVersion: apps/v1, kind: Deployment, namespace: x, name: web, subresource: scale, patch: {spec: {replicas: 1}}}`),
		`subresource: "scale" is not status`)
}
