package main

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"planrun.dev/planrun/clusterstore"
	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/incluster"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/images"
	"planrun.dev/planrun/internal/s3test"
)

// TestApplyInCluster runs a plan (a kube.backup to S3, a gate, a kube.restore) as a Job on a
// complete cluster with a node: apply --in-cluster submits it, makes the runner's RBAC from the
// plan and follows the journal. The runner pod is killed (deleted without grace) while the run
// waits at the gate: the Job's next pod waits for the dead one's Lease to expire, takes the run
// over and finishes it; the restored objects equal the source. A runner without the access it
// needs fails its Job, and apply says which verb on which resource it lacked.
func TestApplyInCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster with a node")
	}
	ctx := t.Context()
	built, err := images.Build(ctx, images.Planrun)
	if err != nil {
		t.Fatal(err)
	}
	cp := controlplane.StartForTest(t, controlplane.WithNode(built[images.Planrun]))
	srv := s3test.StartForTest(t)
	if err := srv.CreateBucket("backups"); err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	for _, ns := range []string{"runs", "app", "app-copy"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.CoreV1().Secrets("runs").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3-keys"},
		StringData: map[string]string{"accessKeyID": srv.AccessKey, "secretAccessKey": srv.SecretKey}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%02d", i), Labels: map[string]string{"app": "demo"}}, Data: configMapData(i)}
		if _, err := cs.CoreV1().ConfigMaps("app").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A short lease: the next pod takes over 5 s after the killed one's last renewal.
	state := "k8s://" + cp.ContextName + "/runs?lease=5s"
	common := []string{"--state", state, "--kubeconfig", cp.Kubeconfig, "--in-cluster", "--host-network", "--image", images.PlanrunImage}
	creds := "{namespace: runs, name: s3-keys}"
	plan := writePlan(t, t.TempDir(), "plan.yaml", fmt.Sprintf(`apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: in-cluster}
steps:
  - id: backup
    type: kube.backup
    with: {to: %q, credentialsFrom: %s, resources: [configmaps], namespaces: [app], labelSelector: app=demo}
  - id: gate
    type: kube.wait
    with: {apiVersion: v1, kind: ConfigMap, namespace: runs, name: go, condition: "object != nil", timeout: 10m}
  - id: restore
    type: kube.restore
    with: {from: "${{ steps.backup.outputs.dir }}", credentialsFrom: %s, namespaceMapping: {app: app-copy}}
`, srv.URL("backups", "app"), creds, creds))

	t.Run("a runner without access fails its Job with the reason", func(t *testing.T) {
		if _, err := cs.CoreV1().ServiceAccounts("runs").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "bare"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runCLI(t, append([]string{"apply", plan, "--run-id", "denied", "--service-account", "bare"}, common...)...)
		if code == exitOK || !strings.Contains(stderr, `cannot list resource "planruns" in API group "planrun.dev"`) || strings.Count(strings.TrimSpace(stderr), "\n") > 1 {
			t.Fatalf("apply as a bare ServiceAccount: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
		}
		// Nothing is lost: the run is there, pending, for a runner that may.
		code, stdout, _ = runCLI(t, "status", "denied", "-o", "json", "--state", state, "--kubeconfig", cp.Kubeconfig)
		if code != exitOK || !strings.Contains(stdout, `"status": "Pending"`) {
			t.Fatalf("status of the denied run: exit %d: %s", code, stdout)
		}
	})

	t.Run("a killed runner pod is replaced and the run resumes", func(t *testing.T) {
		store, err := clusterstore.Open(ctx, state, clusterstore.Options{Config: cp.Config})
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			code           int
			stdout, stderr string
		}
		done := make(chan result, 1)
		go func() {
			code, stdout, stderr := runCLI(t, append([]string{"apply", plan, "--run-id", "moved"}, common...)...)
			done <- result{code, stdout, stderr}
		}()
		var first string // the runner pod killed
		waitFor(t, done, 3*time.Minute, "the run to wait at the gate", func() bool {
			j, err := store.Load(ctx, "moved")
			if err != nil || j.Step("gate") == nil || j.Step("gate").Status != engine.StepRunning {
				return false
			}
			pods, err := cs.CoreV1().Pods("runs").List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + incluster.ObjectName("moved")})
			if err != nil || len(pods.Items) != 1 {
				return false
			}
			first = pods.Items[0].Name
			return true
		})
		if err := cs.CoreV1().Pods("runs").Delete(ctx, first, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil {
			t.Fatal(err)
		}
		// Once the next runner holds the run, the gate opens: the killed one, whatever its
		// container still does, is fenced off.
		waitFor(t, done, 3*time.Minute, "the next runner to take the run over", func() bool {
			lease, err := cs.CoordinationV1().Leases("runs").Get(ctx, "planrun-run-moved", metav1.GetOptions{})
			return err == nil && lease.Spec.LeaseTransitions != nil && *lease.Spec.LeaseTransitions >= 1
		})
		if _, err := cs.CoreV1().ConfigMaps("runs").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "go"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		var r result
		select {
		case r = <-done:
		case <-time.After(5 * time.Minute):
			t.Fatal("apply --in-cluster did not end")
		}
		if r.code != exitOK || !strings.Contains(r.stdout, "restore") || !strings.Contains(r.stdout, "run moved succeeded") {
			t.Fatalf("apply --in-cluster: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
		}
		j, err := store.Load(ctx, "moved")
		if err != nil {
			t.Fatal(err)
		}
		if j.Status != engine.RunSucceeded || j.Step("backup").Attempts != 1 {
			t.Errorf("run %s, backup attempts %d: want succeeded, the backup done once", j.Status, j.Step("backup").Attempts)
		}
		// The journal says the run ended a moment before the last pod exits and the Job counts it.
		var succeeded, failed int32
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			job, err := cs.BatchV1().Jobs("runs").Get(ctx, incluster.ObjectName("moved"), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if succeeded, failed = job.Status.Succeeded, job.Status.Failed; succeeded == 1 {
				break
			}
		}
		if succeeded != 1 || failed < 1 {
			t.Errorf("runner Job: %d succeeded, %d failed; want the killed pod and one that finished", succeeded, failed)
		}
		if got, want := configMaps(t, cs, "app-copy"), configMaps(t, cs, "app"); !reflect.DeepEqual(got, want) || len(want) != 50 {
			t.Errorf("restored %d config maps, want the %d of the source, equal", len(got), len(want))
		}
		// What the PlanRun cannot own went with the run's end.
		if _, err := cs.RbacV1().ClusterRoles().Get(ctx, incluster.ObjectName("moved"), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the runner's ClusterRole after the run: %v", err)
		}
	})

	t.Run("a fleet runs each target as a Job", func(t *testing.T) {
		dir := t.TempDir()
		each := writePlan(t, dir, "each.yaml", `apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: each}
params:
  cm: {type: string, required: true}
steps:
  - {id: get, type: kube.get, with: {apiVersion: v1, kind: ConfigMap, namespace: app, name: "${{ params.cm }}"}}
  - {id: mark, type: kube.apply, with: {manifests: [{apiVersion: v1, kind: ConfigMap, metadata: {name: "${{ 'seen-' + params.cm }}", namespace: app-copy}}]}}
`)
		targets := writePlan(t, dir, "targets.yaml", "rollout: {maxParallel: 2, waves: [1, 100%]}\ntargets:\n"+
			"  - {name: a, params: {cm: cm-01}}\n  - {name: b, params: {cm: cm-02}}\n  - {name: c, params: {cm: cm-03}}\n")
		code, stdout, stderr := runCLI(t, append([]string{"apply", each, "--targets", targets, "--fleet", "jobs"}, common...)...)
		if code != exitOK || !strings.Contains(stdout, "3 succeeded") {
			t.Fatalf("apply --targets --in-cluster: exit %d\n%s\n%s", code, stdout, stderr)
		}
		for _, target := range []string{"a", "b", "c"} {
			job, err := cs.BatchV1().Jobs("runs").Get(ctx, incluster.ObjectName("jobs."+target), metav1.GetOptions{})
			if err != nil || job.Status.Succeeded+job.Status.Active < 1 && job.Status.CompletionTime == nil {
				t.Errorf("runner Job of target %s: %v %+v", target, err, job.Status)
			}
		}
		for _, cm := range []string{"cm-01", "cm-02", "cm-03"} {
			if _, err := cs.CoreV1().ConfigMaps("app-copy").Get(ctx, "seen-"+cm, metav1.GetOptions{}); err != nil {
				t.Errorf("target of %s: %v", cm, err)
			}
		}
		// The record is a ConfigMap next to the PlanRuns; fleet status reads it from there.
		code, stdout, _ = runCLI(t, "fleet", "status", "jobs", "--state", state, "--kubeconfig", cp.Kubeconfig)
		if code != exitOK || !strings.Contains(stdout, "3 succeeded") {
			t.Errorf("fleet status: exit %d\n%s", code, stdout)
		}
	})
}

// waitFor polls cond every 200 ms until it holds; it fails the test when apply ends first (its
// result is reported) or after limit.
func waitFor[T any](t *testing.T, done chan T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		select {
		case r := <-done:
			t.Fatalf("apply ended before %s: %+v", what, r)
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, limit)
		}
	}
}

// configMaps are the app=demo config maps of ns, name → data.
func configMaps(t *testing.T, cs kubernetes.Interface, ns string) map[string]map[string]string {
	t.Helper()
	list, err := cs.CoreV1().ConfigMaps(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=demo"})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, cm := range list.Items {
		out[cm.Name] = cm.Data
	}
	return out
}
