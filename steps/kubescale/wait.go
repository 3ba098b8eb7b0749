package kubescale

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

const (
	// defaultWaitTimeout bounds a wait for pods: a pod's grace period is 30 s unless its spec
	// says otherwise, and controllers that are busy may take a while to act.
	defaultWaitTimeout = 5 * time.Minute
	waitInterval       = 250 * time.Millisecond
)

var podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// waitForPods waits until every target has as many pods as replicas: the pods its scale
// subresource's status.selector matches, in its namespace, terminating ones counted (a
// terminating pod still runs); above 0, all of them Ready.
func waitForPods(ctx context.Context, rc *engine.RunContext, c *kube.Client, m *meta.RESTMapping, kind string, targets []target, replicas int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for i, t := range targets {
		what := kube.ObjectName(kind, t.ns, t.name)
		for {
			left, err := podsNotAtReplicas(ctx, c, m, kind, t, replicas)
			if err != nil {
				return err
			}
			if left == "" {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: scaled to %d, but its pods are not after %s: %s", what, replicas, timeout, left)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(waitInterval):
			}
		}
		rc.Progress(engine.Progress{Done: int64(i + 1), Total: int64(len(targets)), Unit: "objects with their pods"})
	}
	return nil
}

// podsNotAtReplicas says what keeps a target from having replicas pods ("" when nothing does).
func podsNotAtReplicas(ctx context.Context, c *kube.Client, m *meta.RESTMapping, kind string, t target, replicas int) (string, error) {
	scale, err := c.Resource(m, t.ns).Get(ctx, t.name, metav1.GetOptions{}, "scale")
	if err != nil {
		return "", kube.ObjectError(kind, t.ns, t.name, err)
	}
	selector, _, _ := unstructured.NestedString(scale.Object, "status", "selector")
	if selector == "" {
		// Without a selector there is no telling which pods are its own; a custom resource
		// whose scale subresource has no labelSelectorPath cannot be waited for.
		return "", fmt.Errorf("%s: its scale subresource has no status.selector, so its pods cannot be waited for", kube.ObjectName(kind, t.ns, t.name))
	}
	var pods []string
	ready := 0
	err = listPages(ctx, c.Dynamic.Resource(podsGVR).Namespace(t.ns), metav1.ListOptions{LabelSelector: selector}, func(pod *unstructured.Unstructured) error {
		state := "not Ready"
		switch {
		case pod.GetDeletionTimestamp() != nil:
			state = "terminating"
		case podReady(pod):
			state = "Ready"
			ready++
		}
		pods = append(pods, pod.GetName()+" "+state)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("list the pods of %s: %w", kube.ObjectName(kind, t.ns, t.name), kube.Classify(err))
	}
	if len(pods) == replicas && ready == replicas {
		return "", nil
	}
	sort.Strings(pods)
	if len(pods) == 0 {
		return "no pods", nil
	}
	return fmt.Sprintf("%d pod(s): %s", len(pods), strings.Join(pods, ", ")), nil
}

// podReady is whether a pod's Ready condition is True.
func podReady(pod *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(pod.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Ready" && m["status"] == "True" {
			return true
		}
	}
	return false
}
