package plans_test

// Helpers shared by the end-to-end tests of the shipped plans: the planrun binary built once
// (internal/plantest runs it as a process), applying YAML files, listing objects, seeding
// Deployments, reading a run's journal.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
)

// planrunBin is the planrun binary, built once for the tests that run plans as a process.
var planrunBin string

func TestMain(m *testing.M) { plantest.MainWithPlanrun(m, "../cmd/planrun", &planrunBin) }

// applyFile creates the objects of a YAML file (CRDs and admission objects).
func applyFile(t *testing.T, dyn dynamic.Interface, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(obj) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		gv, _ := schema.ParseGroupVersion(u.GetAPIVersion())
		res := map[string]string{"CustomResourceDefinition": "customresourcedefinitions", "ValidatingAdmissionPolicy": "validatingadmissionpolicies", "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings"}[u.GetKind()]
		if _, err := dyn.Resource(gv.WithResource(res)).Create(t.Context(), u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// loadJournal reads the journal of run id from dir/runs.
func loadJournal(t *testing.T, dir, id string) *engine.Journal {
	t.Helper()
	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// addObjects lists the objects of a resource (in namespace ns, or all of them when ns is empty)
// into out, keyed "resource ns/name"; a resource that is not served adds nothing.
func addObjects(t *testing.T, dyn dynamic.Interface, out map[string]*unstructured.Unstructured, gvr schema.GroupVersionResource, ns string) {
	t.Helper()
	var r dynamic.ResourceInterface = dyn.Resource(gvr)
	if ns != "" {
		r = dyn.Resource(gvr).Namespace(ns)
	}
	l, err := r.List(t.Context(), metav1.ListOptions{})
	if apierrors.IsNotFound(err) {
		return // no CRD
	}
	if err != nil {
		t.Fatalf("list %s: %v", gvr.Resource, err)
	}
	for i := range l.Items {
		o := &l.Items[i]
		out[gvr.Resource+" "+o.GetNamespace()+"/"+o.GetName()] = o
	}
}

// normalized is the JSON form of v, for comparisons that ignore Go types.
func normalized(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// seedDeployment creates a Deployment of n replicas as its controller leaves it after two
// rollouts: with status, and owning two ReplicaSets (revision 1 at 0 replicas, revision 2 at n,
// with status), whose pods are pod with the revision's image in its first container.
func seedDeployment(ctx context.Context, cs kubernetes.Interface, ns, name string, n int32, pod corev1.PodSpec) error {
	labels := map[string]string{"app": name}
	tmpl := func(image string) corev1.PodTemplateSpec {
		spec := *pod.DeepCopy()
		spec.Containers[0].Image = image
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}
	}
	d, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: map[string]string{"deployment.kubernetes.io/revision": "2"}},
		Spec:       appsv1.DeploymentSpec{Replicas: &n, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl("registry.example.com/" + name + ":2")},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: n, ReadyReplicas: n, AvailableReplicas: n, UpdatedReplicas: n,
		Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable", Message: "Deployment has minimum availability."}}}
	if d, err = cs.AppsV1().Deployments(ns).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
		return err
	}
	for rev, replicas := range []int32{0, n} {
		r := replicas
		rs, err := cs.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, rev+1), Labels: labels,
				Annotations:     map[string]string{"deployment.kubernetes.io/revision": fmt.Sprint(rev + 1)},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: new(true), BlockOwnerDeletion: new(true)}}},
			Spec: appsv1.ReplicaSetSpec{Replicas: &r, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl(fmt.Sprintf("registry.example.com/%s:%d", name, rev+1))},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		rs.Status = appsv1.ReplicaSetStatus{Replicas: r, ReadyReplicas: r, AvailableReplicas: r, FullyLabeledReplicas: r, ObservedGeneration: 1}
		if _, err := cs.AppsV1().ReplicaSets(ns).UpdateStatus(ctx, rs, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// poll waits up to two minutes for cond, failing the test with what it waited for and the last
// state cond described. Controllers on a loaded 2-core machine may take a while to schedule,
// start, stop or collect, never that long.
func poll(t *testing.T, what string, cond func() (done bool, state string, err error)) {
	t.Helper()
	var state string
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		done, s, err := cond()
		state = s
		return done, err
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last: %s)", what, err, state)
	}
}

// podsOf lists the pods of namespace ns matching selector, as "name phase" (terminating ones
// "name terminating"), and counts those Running and Ready and not terminating.
func podsOf(ctx context.Context, cs kubernetes.Interface, ns, selector string) (all []string, ready int, err error) {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, 0, fmt.Errorf("list pods %s in %s: %w", selector, ns, err)
	}
	for _, p := range pods.Items {
		state := string(p.Status.Phase)
		if p.DeletionTimestamp != nil {
			state = "terminating"
		}
		all = append(all, p.Name+" "+state)
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
	}
	return all, ready, nil
}

// waitPods waits until the pods of ns matching selector are exactly n, all Running and Ready
// (n 0: until they are gone, terminating ones too).
func waitPods(t *testing.T, cs kubernetes.Interface, ns, selector string, n int) {
	t.Helper()
	poll(t, fmt.Sprintf("%d Ready pods %s in %s", n, selector, ns), func() (bool, string, error) {
		all, ready, err := podsOf(t.Context(), cs, ns, selector)
		return len(all) == n && ready == n, fmt.Sprint(all), err
	})
}
