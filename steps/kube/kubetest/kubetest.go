// Package kubetest runs plans against real control planes in the tests of Kubernetes step
// types: one control plane per test package (started in TestMain), a fresh namespace per test.
// A package whose steps need controllers and running pods (Jobs, quiescing) starts complete
// clusters with MainWith(m, n, &clusters, controlplane.WithNode()).
package kubetest

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
)

// Cluster is a running control plane with clients for it.
type Cluster struct {
	CP      *controlplane.ControlPlane
	Dynamic dynamic.Interface
	Typed   kubernetes.Interface
	// Complete is true when the cluster runs controllers (and maybe a node): its namespaces
	// take pods only once their default service account exists.
	Complete bool
}

// Main starts n control planes (kube-apiserver and etcd only), runs the package's tests and
// stops them. With PLANRUN_SKIP_CONTROLPLANE=1 it runs no control plane and the tests that need
// one skip.
func Main(m *testing.M, n int, clusters *[]*Cluster) { MainWith(m, n, clusters) }

// MainWith is Main with options for every control plane: controlplane.WithNode() starts
// complete clusters (controllers, scheduler and a node running the busybox image) whose Jobs,
// Deployments and DaemonSets really run pods.
func MainWith(m *testing.M, n int, clusters *[]*Cluster, opts ...controlplane.Option) {
	if os.Getenv(controlplane.SkipEnv) == "1" {
		os.Exit(m.Run())
	}
	// A complete cluster builds its node's images on the first run on a machine.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	var started []*Cluster
	for i := 0; i < n; i++ {
		o := controlplane.Options{ContextName: fmt.Sprintf("cluster-%d", i)}
		for _, opt := range opts {
			opt(&o)
		}
		cp, err := controlplane.Start(ctx, o)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kubetest: starting control plane %d: %v\n", i, err)
			for _, c := range started {
				c.CP.Stop()
			}
			os.Exit(1)
		}
		// A Ctrl-C would otherwise end the test binary with the node's pods, mounts and
		// bridge left behind.
		controlplane.StopOnInterrupt(cp)
		started = append(started, &Cluster{CP: cp, Dynamic: dynamic.NewForConfigOrDie(cp.Config), Typed: kubernetes.NewForConfigOrDie(cp.Config),
			Complete: o.Controllers || o.Node})
	}
	cancel()
	*clusters = started
	code := m.Run()
	for _, c := range started {
		c.CP.Stop()
	}
	os.Exit(code)
}

// Need skips a test when the package runs without control planes.
func Need(t testing.TB, clusters []*Cluster) {
	t.Helper()
	if len(clusters) == 0 {
		t.Skipf("no control plane (%s=1)", controlplane.SkipEnv)
	}
}

var nsCounter atomic.Int64

// Namespace creates a fresh namespace for one test. On a complete cluster it also waits for the
// namespace's default service account, without which no pod can be created there.
func (c *Cluster) Namespace(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%s", nsCounter.Add(1), notInLabel.ReplaceAllString(strings.ToLower(t.Name()), "-"))
	if len(name) > 63 {
		name = strings.TrimRight(name[:63], "-")
	}
	_, err := c.Typed.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	if c.Complete {
		Poll(t, "the default service account of namespace "+name, func() (bool, error) {
			_, err := c.Typed.CoreV1().ServiceAccounts(name).Get(context.Background(), "default", metav1.GetOptions{})
			return err == nil, nil
		})
	}
	return name
}

// notInLabel matches what a namespace name cannot hold: test names have /, _, . and #.
var notInLabel = regexp.MustCompile(`[^a-z0-9-]+`)

// Run is the outcome of a plan run in a test.
type Run = plantest.Run

// Options for Apply and Load.
type Options = plantest.Options

// Apply loads a plan (header added: apiVersion, kind, metadata) and runs it. The plan's clusters
// are pointed at the given control planes by name ("main" if the plan declares none).
func Apply(t testing.TB, clusters map[string]*Cluster, body string, opts Options) *Run {
	t.Helper()
	return plantest.RunPlan(t, Load(t, clusters, body, opts), opts)
}

// Load loads a plan as Apply does, without running it.
func Load(t testing.TB, clusters map[string]*Cluster, body string, opts Options) *engine.Plan {
	t.Helper()
	p := plantest.MustLoad(t, body, opts)
	if p.Clusters == nil {
		p.Clusters = map[string]*engine.Cluster{}
	}
	if len(p.Clusters) == 0 {
		p.Clusters["main"] = &engine.Cluster{}
	}
	for name, c := range p.Clusters {
		cl, ok := clusters[name]
		if !ok {
			t.Fatalf("plan cluster %q has no control plane in the test", name)
		}
		c.Kubeconfig, c.Context = cl.CP.Kubeconfig, cl.CP.ContextName
	}
	return p
}

// Get reads an object, failing the test if it cannot.
func (c *Cluster) Get(t testing.TB, gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	t.Helper()
	var r dynamic.ResourceInterface = c.Dynamic.Resource(gvr)
	if ns != "" {
		r = c.Dynamic.Resource(gvr).Namespace(ns)
	}
	obj, err := r.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get %s %s/%s: %v", gvr.Resource, ns, name, err)
	}
	return obj
}
