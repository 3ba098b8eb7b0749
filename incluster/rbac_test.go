package incluster

import (
	"context"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/clusterstore"
	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
)

// TestRunnerRules: a runner with the Role NewRBAC makes, and nothing else, runs a run submitted
// to the store as an in-cluster runner does (resume it, checkpoint it, hold its Lease) and writes
// its event log, which a follower reads.
func TestRunnerRules(t *testing.T) {
	ctx := t.Context()
	cp := controlplane.StartForTest(t)
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "runs"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	state := "k8s://" + cp.ContextName + "/runs"
	admin, err := clusterstore.Open(ctx, state, clusterstore.Options{Config: cp.Config, ArtifactDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	rbac := NewRBAC(ObjectName("r1"), "runs", "r1", nil)
	if _, err := cs.CoreV1().ServiceAccounts("runs").Create(ctx, rbac.ServiceAccount, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().Roles("runs").Create(ctx, rbac.Role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.RbacV1().RoleBindings("runs").Create(ctx, rbac.RoleBinding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(rbac.Role.Rules, func(r rbacv1.PolicyRule) bool {
		return slices.Equal(r.Resources, []string{clusterstore.EventLogResource}) && slices.Equal(r.Verbs, clusterstore.EventLogVerbs)
	}) {
		t.Errorf("no rule for the event log in %+v", rbac.Role.Rules)
	}

	p, err := engine.Parse("plan.yaml", []byte(`apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: p}
steps:
  - {id: check, type: assert, with: {that: "1 == 1"}}
  - {id: note, type: assert, with: {that: "1 == 2", warn: true, message: just so}}
`), engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&engine.Runner{Store: admin}).Submit(ctx, p, engine.ApplyOptions{RunID: "r1"}); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(cp.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:runs:" + rbac.ServiceAccount.Name}
	var runner *clusterstore.Store
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		// The binding takes a moment to reach the authorizer.
		if runner, err = clusterstore.Open(ctx, state, clusterstore.Options{Config: cfg, ArtifactDir: t.TempDir()}); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	j, err := (&engine.Runner{Store: runner}).Resume(rctx, "r1", func(*engine.Journal) (*engine.Plan, error) { return p, nil })
	if err != nil || j.Status != engine.RunSucceeded {
		t.Fatalf("the runner's run: %v, %v", j, err)
	}
	events, _, err := admin.ReadEvents("r1", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []engine.EventType
	for _, e := range events {
		got = append(got, e.Type)
	}
	want := []engine.EventType{engine.EventRunStarted, engine.EventStepStarted, engine.EventStepSucceeded,
		engine.EventStepStarted, engine.EventStepWarning, engine.EventStepSucceeded, engine.EventRunFinished}
	if !slices.Equal(got, want) {
		t.Fatalf("event log %v, want %v", got, want)
	}
}
