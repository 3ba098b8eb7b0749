package kubetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"planrun.dev/planrun/internal/controlplane"
)

// Poll waits for cond, checking every 200 ms for up to three minutes, and fails the test with
// what if it never holds (or returns an error). The bound is generous on purpose: on a loaded
// 2-core machine a complete cluster may take a while to schedule, start or collect pods, never
// that long; tests assert what happens, not how fast.
func Poll(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 3*time.Minute, true, func(context.Context) (bool, error) {
		return cond()
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// BusyboxSpec is a pod spec running script with sh in the node's busybox image, which is never
// pulled, with a one-second grace period so that stopping it takes no longer than that.
func BusyboxSpec(script string) corev1.PodSpec {
	grace := int64(1)
	return corev1.PodSpec{
		TerminationGracePeriodSeconds: &grace,
		Containers: []corev1.Container{{
			Name: "main", Image: controlplane.BusyboxImage, ImagePullPolicy: corev1.PullNever,
			Command: []string{"sh", "-c", script},
		}},
	}
}

// Pods lists the pods of ns that match selector ("" for all), failing the test if it cannot.
func (c *Cluster) Pods(t testing.TB, ns, selector string) []corev1.Pod {
	t.Helper()
	list, err := c.Typed.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatalf("listing pods in %s: %v", ns, err)
	}
	return list.Items
}

// PodSummary is one "name phase" word per pod ("name phase(terminating)" for a pod being
// deleted), for test messages and for comparing sets of pods.
func PodSummary(pods []corev1.Pod) string {
	var parts []string
	for _, p := range pods {
		s := p.Name + " " + string(p.Status.Phase)
		if p.DeletionTimestamp != nil {
			s += "(terminating)"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

// WaitRunning waits until exactly n pods of ns match selector, all Running and none being
// deleted, and returns them.
func (c *Cluster) WaitRunning(t testing.TB, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	Poll(t, fmt.Sprintf("%d Running pod(s) %q in %s", n, selector, ns), func() (bool, error) {
		pods = c.Pods(t, ns, selector)
		if len(pods) != n {
			return false, nil
		}
		for _, p := range pods {
			if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
				return false, nil
			}
		}
		return true, nil
	})
	return pods
}
