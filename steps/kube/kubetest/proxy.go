package kubetest

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"testing"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"planrun.dev/planrun/internal/controlplane"
)

// Through is c seen through a proxy that calls before with every request and then passes it on,
// as the admin: a test can make something happen at an exact point between a step's requests (a
// conflicting write between its read and its write, say), which racing the step from the outside
// could only make likely. before runs in the proxy's goroutine; the request reaches the API
// server once it returns.
func (c *Cluster) Through(t testing.TB, before func(*http.Request)) *Cluster {
	t.Helper()
	upstream, err := url.Parse(c.CP.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	transport, err := rest.TransportFor(c.CP.Config)
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(r *httputil.ProxyRequest) { r.SetURL(upstream) },
		Transport:     transport,
		FlushInterval: -1, // watches stream
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		before(r)
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	name := c.CP.ContextName
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: srv.URL,
		CertificateAuthorityData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{} // the proxy authenticates upstream
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	kc.CurrentContext = name
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return &Cluster{CP: &controlplane.ControlPlane{Kubeconfig: path, ContextName: name}, Dynamic: c.Dynamic, Typed: c.Typed, Complete: c.Complete}
}
