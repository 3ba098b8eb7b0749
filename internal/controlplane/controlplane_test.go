package controlplane_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"planrun.dev/planrun/internal/controlplane"
)

var namespacesGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

func TestStartServesNamespacesThroughConfigAndKubeconfig(t *testing.T) {
	const contextName = "smoke-test"
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	start := time.Now()
	cp := controlplane.StartForTest(t,
		controlplane.WithContextName(contextName), controlplane.WithKubeconfigPath(kubeconfig))
	t.Logf("control plane ready in %v at %s (etcd %s)", time.Since(start).Round(time.Millisecond), cp.Config.Host, cp.EtcdURL)

	if cp.Kubeconfig != kubeconfig || cp.ContextName != contextName {
		t.Errorf("Kubeconfig, ContextName = %q, %q; want %q, %q", cp.Kubeconfig, cp.ContextName, kubeconfig, contextName)
	}
	for _, want := range []string{"default", "kube-system"} {
		if got := namespaceNames(t, cp.Config); !slices.Contains(got, want) {
			t.Errorf("namespaces through Config = %v; want %q among them", got, want)
		}
	}

	// Load the file the way a user's tool would: by path and explicit context name.
	fromFile, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig},
		&clientcmd.ConfigOverrides{CurrentContext: contextName},
	).ClientConfig()
	if err != nil {
		t.Fatalf("loading %s with context %s: %v", kubeconfig, contextName, err)
	}
	for _, want := range []string{"default", "kube-system"} {
		if got := namespaceNames(t, fromFile); !slices.Contains(got, want) {
			t.Errorf("namespaces through kubeconfig = %v; want %q among them", got, want)
		}
	}
}

func TestStartManyGivesIndependentControlPlanes(t *testing.T) {
	cps := controlplane.StartManyForTest(t, 2)
	if cps[0].Config.Host == cps[1].Config.Host || cps[0].EtcdURL == cps[1].EtcdURL {
		t.Fatalf("control planes share an address: %s on %s, %s on %s",
			cps[0].Config.Host, cps[0].EtcdURL, cps[1].Config.Host, cps[1].EtcdURL)
	}
	createNamespace(t, cps[0].Config, "only-in-first")
	assertNamespace(t, cps[0].Config, "only-in-first", true)
	assertNamespace(t, cps[1].Config, "only-in-first", false)
}

// Two API servers on one external etcd with different --etcd-prefix values must not see each
// other's objects, and an API server with the same prefix must see them.
func TestStartOnExternalEtcdWithPrefix(t *testing.T) {
	etcd := controlplane.StartEtcdForTest(t)
	onPrefix := func(prefix string) controlplane.Option {
		return controlplane.WithAPIServerFlags("--etcd-prefix=" + prefix)
	}
	a := controlplane.StartForTest(t, controlplane.WithEtcdURL(etcd.URL), onPrefix("/a"))
	b := controlplane.StartForTest(t, controlplane.WithEtcdURL(etcd.URL), onPrefix("/b"))
	if a.EtcdURL != etcd.URL || b.EtcdURL != etcd.URL {
		t.Fatalf("EtcdURL = %s, %s; want %s", a.EtcdURL, b.EtcdURL, etcd.URL)
	}

	createNamespace(t, a.Config, "only-under-a")
	assertNamespace(t, b.Config, "only-under-a", false)

	// Stopping an API server leaves the external etcd and its data: a new one on prefix /a
	// finds the namespace again.
	if err := a.Stop(); err != nil {
		t.Fatalf("stopping the first API server: %v", err)
	}
	again := controlplane.StartForTest(t, controlplane.WithEtcdURL(etcd.URL), onPrefix("/a"))
	assertNamespace(t, again.Config, "only-under-a", true)
}

// Mistakes in the options fail Start before any process runs, so this needs no binaries.
func TestStartRejectsBadOptions(t *testing.T) {
	for name, opts := range map[string]controlplane.Options{
		"flag without --":    {APIServerFlags: []string{"etcd-prefix=/x"}},
		"flag without name":  {APIServerFlags: []string{"--=x"}},
		"etcd without a URL": {EtcdURL: "localhost:2379"},
	} {
		if cp, err := controlplane.Start(t.Context(), opts); err == nil {
			_ = cp.Stop()
			t.Errorf("%s: Start succeeded; want an error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func namespaceNames(t *testing.T, cfg *rest.Config) []string {
	t.Helper()
	list, err := dynamicClient(t, cfg).Resource(namespacesGVR).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing namespaces at %s: %v", cfg.Host, err)
	}
	var names []string
	for _, ns := range list.Items {
		names = append(names, ns.GetName())
	}
	return names
}

func createNamespace(t *testing.T, cfg *rest.Config, name string) {
	t.Helper()
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName(name)
	if _, err := dynamicClient(t, cfg).Resource(namespacesGVR).Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s at %s: %v", name, cfg.Host, err)
	}
}

func assertNamespace(t *testing.T, cfg *rest.Config, name string, wantPresent bool) {
	t.Helper()
	_, err := dynamicClient(t, cfg).Resource(namespacesGVR).Get(context.Background(), name, metav1.GetOptions{})
	switch {
	case wantPresent && err != nil:
		t.Errorf("namespace %s at %s: %v; want it present", name, cfg.Host, err)
	case !wantPresent && err == nil:
		t.Errorf("namespace %s at %s exists; want it absent", name, cfg.Host)
	case !wantPresent && !apierrors.IsNotFound(err):
		t.Errorf("namespace %s at %s: %v; want NotFound", name, cfg.Host, err)
	}
}

func dynamicClient(t *testing.T, cfg *rest.Config) *dynamic.DynamicClient {
	t.Helper()
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("dynamic client for %s: %v", cfg.Host, err)
	}
	return client
}
