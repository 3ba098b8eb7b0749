package controlplane_test

import (
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"planrun.dev/planrun/internal/controlplane"
)

// Restart moves an API server to another etcd behind the same address and credentials: the
// Config and the kubeconfig written at the start keep working, and the data is the new etcd's.
func TestRestartOnAnotherEtcd(t *testing.T) {
	first, second := controlplane.StartEtcdForTest(t), controlplane.StartEtcdForTest(t)
	cp := controlplane.StartForTest(t, controlplane.WithEtcdURL(first.URL), controlplane.WithAPIServerFlags("--etcd-prefix=/tenant"))
	host := cp.Config.Host
	createNamespace(t, cp.Config, "on-first")

	if err := cp.Restart(t.Context(), second.URL); err != nil {
		t.Fatal(err)
	}
	if cp.Config.Host != host || cp.EtcdURL != second.URL {
		t.Fatalf("after Restart: host %s (want %s), etcd %s (want %s)", cp.Config.Host, host, cp.EtcdURL, second.URL)
	}
	// The kubeconfig written before the restart: same server, same CA, same client certificate.
	kc, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	assertNamespace(t, kc, "on-first", false)
	createNamespace(t, kc, "on-second")

	// Back on the first etcd, under the same prefix (--etcd-prefix is kept): its data again.
	if err := cp.Restart(t.Context(), first.URL); err != nil {
		t.Fatal(err)
	}
	assertNamespace(t, cp.Config, "on-first", true)
	assertNamespace(t, cp.Config, "on-second", false)
}

func TestRestartRejectsBadInput(t *testing.T) {
	cp := controlplane.StartForTest(t)
	if err := cp.Restart(t.Context(), "localhost:2379"); err == nil {
		t.Error("Restart on an etcd without a URL scheme succeeded")
	}
	if err := cp.Restart(t.Context(), cp.EtcdURL, "etcd-prefix=/x"); err == nil {
		t.Error("Restart with a flag without -- succeeded")
	}
	assertNamespace(t, cp.Config, "default", true) // still running
}
