package kubescale_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube/kubetest"
)

// TestStepsRetryConflicts scales and quiesces a Deployment that something else keeps writing to,
// as controllers do (status, annotations) on a busy cluster: a write of the steps guarded by the
// resourceVersion they read then meets a conflict, and the step must read again and retry
// instead of failing the run ("the object has been modified").
func TestStepsRetryConflicts(t *testing.T) {
	kubetest.Need(t, clusters)
	for _, tc := range []struct {
		name string
		// run runs the step against Deployment web (3 replicas) in ns a few times, checking
		// each outcome.
		run func(t *testing.T, ns string)
	}{
		{"kube.scale", func(t *testing.T, ns string) {
			for i := range 5 {
				to := []int{0, 2}[i%2]
				run := kubetest.Apply(t, main(), scalePlan(fmt.Sprintf(`{apiVersion: apps/v1, kind: Deployment, namespace: %s, name: web, replicas: %d}`, ns, to)), kubetest.Options{})
				if run.Err != nil {
					t.Fatalf("scale %d to %d: %v", i+1, to, run.Err)
				}
				wantReplicas(t, deployments, ns, "web", int64(to), "3")
			}
		}},
		{"kube.quiesce and its undo", func(t *testing.T, ns string) {
			for i := range 5 {
				run := kubetest.Apply(t, main(), "steps:\n  - {id: q, type: kube.quiesce, with: {namespace: "+ns+"}}\n  - {id: later, type: assert, with: {that: \"false\"}}\n", kubetest.Options{})
				if st := run.Journal.Step("q").Status; st != engine.StepRolledBack {
					t.Fatalf("quiesce and rollback %d: step %s: %v", i+1, st, run.Err)
				}
				wantReplicas(t, deployments, ns, "web", 3, "-")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := clusters[0].Namespace(t)
			deployment(t, ns, "web", 3, nil)
			// The other writer: an annotation changed every 20 ms until the subtest ends,
			// busier than any controller, so that a step that did not retry would most likely
			// meet a conflict in one of its runs.
			ctx, stop := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			wg.Go(func() {
				for i := 0; ctx.Err() == nil; i++ {
					patch := fmt.Sprintf(`{"metadata":{"annotations":{"example.com/churn":"%d"}}}`, i)
					_, _ = clusters[0].Typed.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType, []byte(patch), metav1.PatchOptions{})
					select {
					case <-ctx.Done():
					case <-time.After(20 * time.Millisecond):
					}
				}
			})
			defer wg.Wait()
			defer stop()
			tc.run(t, ns)
		})
	}
}
