package kubescale_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube/kubetest"
)

// TestStepsRetryConflicts runs kube.scale and kube.quiesce, and their undo, against a Deployment
// that something else writes to between the steps' reads and their writes, as controllers do
// (status, annotations) on a busy cluster: a write guarded by the resourceVersion read then meets
// a conflict, and the step must read again and retry instead of failing the run ("the object has
// been modified"). The steps reach the cluster through a proxy that, before every other write to
// the Deployment, writes an annotation to it: each guarded write meets exactly one conflict.
func TestStepsRetryConflicts(t *testing.T) {
	kubetest.Need(t, clusters)
	for _, tc := range []struct {
		name string
		// run runs the step against Deployment web (3 replicas) in ns, through the meddling
		// cluster, and checks the outcome.
		run func(t *testing.T, ns string, through map[string]*kubetest.Cluster)
	}{
		{"kube.scale and its undo", func(t *testing.T, ns string, through map[string]*kubetest.Cluster) {
			run := kubetest.Apply(t, through, scalePlan(`{apiVersion: apps/v1, kind: Deployment, namespace: `+ns+`, name: web, replicas: 0}`), kubetest.Options{NoRollback: true})
			if run.Err != nil {
				t.Fatal(run.Err)
			}
			wantReplicas(t, deployments, ns, "web", 0, "3")
			rollBack(t, run)
			wantReplicas(t, deployments, ns, "web", 3, "-")
		}},
		{"kube.quiesce and its undo", func(t *testing.T, ns string, through map[string]*kubetest.Cluster) {
			run := kubetest.Apply(t, through, "steps:\n  - {id: q, type: kube.quiesce, with: {namespace: "+ns+"}}\n", kubetest.Options{NoRollback: true})
			if run.Err != nil {
				t.Fatal(run.Err)
			}
			wantReplicas(t, deployments, ns, "web", 0, "3")
			rollBack(t, run)
			wantReplicas(t, deployments, ns, "web", 3, "-")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := clusters[0].Namespace(t)
			deployment(t, ns, "web", 3, nil)
			var mu sync.Mutex
			writes, meddled := 0, 0
			through := clusters[0].Through(t, func(r *http.Request) {
				if r.Method != http.MethodPatch && r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/namespaces/"+ns+"/deployments/web") {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if writes++; writes%2 == 0 {
					return
				}
				patch := fmt.Sprintf(`{"metadata":{"annotations":{"example.com/meddled":"%d"}}}`, writes)
				if _, err := clusters[0].Typed.AppsV1().Deployments(ns).Patch(r.Context(), "web", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
					t.Errorf("meddling: %v", err)
				}
				meddled++
			})
			tc.run(t, ns, map[string]*kubetest.Cluster{"main": through})
			if meddled == 0 {
				t.Fatal("no write was meddled with")
			}
		})
	}
}

// rollBack rolls a finished run back on demand (planrun rollback).
func rollBack(t *testing.T, run *kubetest.Run) {
	t.Helper()
	r := &engine.Runner{Store: run.Store}
	j, err := r.Rollback(ctx(), "run", func(*engine.Journal) (*engine.Plan, error) { return run.Plan, nil })
	if err != nil || j.Status != engine.RunRolledBack {
		t.Fatalf("rollback: %v (status %s)", err, j.Status)
	}
}
