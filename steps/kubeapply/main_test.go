package kubeapply_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"planrun.dev/planrun/engine"
	_ "planrun.dev/planrun/steps/assert"
	"planrun.dev/planrun/steps/kube/kubetest"
	_ "planrun.dev/planrun/steps/kubeapply"
)

var clusters []*kubetest.Cluster

func TestMain(m *testing.M) { kubetest.Main(m, 1, &clusters) }

func mainCluster() map[string]*kubetest.Cluster {
	return map[string]*kubetest.Cluster{"main": clusters[0]}
}

var (
	configMaps  = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	secrets     = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	namespaces  = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	deployments = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
)

// oneStep is a plan of one step "s".
func oneStep(typ, with string) string {
	return "steps:\n  - id: s\n    type: " + typ + "\n    with: " + with + "\n"
}

// wantLoadError checks the error of a plan that does not load (bad config caught by Validate).
func wantLoadError(t *testing.T, body, want string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plan.yaml")
	writeFile(t, path, "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: test}\n"+body)
	_, err := engine.Load(path, engine.LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("load error %v\nwant %q", err, want)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Fatalf("error is not one line: %q", err)
	}
}

// rollback rolls back a run on demand, as planrun rollback does.
func rollback(t *testing.T, run *kubetest.Run) *engine.Journal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	j, err := (&engine.Runner{Store: run.Store}).Rollback(ctx, "run", func(*engine.Journal) (*engine.Plan, error) { return run.Plan, nil })
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	return j
}

// resume continues a stopped run with body as the (possibly fixed) plan.
func resume(t *testing.T, run *kubetest.Run, body string) *kubetest.Run {
	t.Helper()
	p := kubetest.Load(t, mainCluster(), body, kubetest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	j, err := (&engine.Runner{Store: run.Store, NoRollback: true}).Resume(ctx, "run", func(*engine.Journal) (*engine.Plan, error) { return p, nil })
	return &kubetest.Run{Journal: j, Err: err, Store: run.Store, Plan: p}
}

func wantRolledBack(t *testing.T, run *kubetest.Run) {
	t.Helper()
	var re *engine.RunError
	if !errors.As(run.Err, &re) || re.Status != engine.RunRolledBack {
		t.Fatalf("want a rolled back run, got %v", run.Err)
	}
}

// gone reports whether an object is absent (or being deleted: namespaces are never finalized
// without a controller manager).
func gone(t *testing.T, gvr schema.GroupVersionResource, ns, name string) bool {
	t.Helper()
	obj, err := resource(gvr, ns).Get(context.Background(), name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return obj.GetDeletionTimestamp() != nil
}

func resource(gvr schema.GroupVersionResource, ns string) interface {
	Get(context.Context, string, metav1.GetOptions, ...string) (*unstructured.Unstructured, error)
} {
	if ns == "" {
		return clusters[0].Dynamic.Resource(gvr)
	}
	return clusters[0].Dynamic.Resource(gvr).Namespace(ns)
}

// refs lists "Kind ns/name" of an output list of object references.
func refs(t *testing.T, v any) []string {
	t.Helper()
	list, ok := v.([]any)
	if !ok {
		t.Fatalf("expected a list, got %T %v", v, v)
	}
	var out []string
	for _, x := range list {
		m := x.(map[string]any)
		s := m["kind"].(string) + " "
		if ns, _ := m["namespace"].(string); ns != "" {
			s += ns + "/"
		}
		out = append(out, s+m["name"].(string))
	}
	return out
}

func wantRefs(t *testing.T, what string, v any, want ...string) {
	t.Helper()
	got := refs(t, v)
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func data(t *testing.T, obj *unstructured.Unstructured, key string) string {
	t.Helper()
	v, _, _ := unstructured.NestedString(obj.Object, "data", key)
	return v
}
