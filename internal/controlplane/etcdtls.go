package controlplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"planrun.dev/planrun/internal/childproc"
)

// EtcdTLS are the PEM files of a TLS-secured etcd: its server certificate and key, and the CA
// that signed the client certificates it accepts (client-cert-auth is on).
type EtcdTLS struct {
	CertFile      string
	KeyFile       string
	TrustedCAFile string
}

// StartEtcdTLS starts an etcd that serves clients over https only and requires a client
// certificate signed by certs.TrustedCAFile. Its URL is https://127.0.0.1:port; its health is
// checked on a separate plain-http metrics listener. binaryDir empty means FindBinaries.
func StartEtcdTLS(ctx context.Context, binaryDir string, certs EtcdTLS, output io.Writer) (*Etcd, error) {
	if binaryDir == "" {
		var err error
		if binaryDir, err = FindBinaries(ctx); err != nil {
			return nil, err
		}
	}
	// A free port found here may be taken by another process before etcd binds it (tests of
	// other packages start servers at the same time): etcd then exits saying so, and another
	// pair of ports is tried.
	for attempt := 1; ; attempt++ {
		e, taken, err := startEtcdTLS(binaryDir, certs, output)
		if err == nil || !taken || attempt == maxPortAttempts {
			return e, err
		}
	}
}

// maxPortAttempts bounds the retries of a start that lost its port to another process.
const maxPortAttempts = 5

// startEtcdTLS is one attempt of StartEtcdTLS; taken reports that a port was taken meanwhile.
func startEtcdTLS(binaryDir string, certs EtcdTLS, output io.Writer) (_ *Etcd, taken bool, _ error) {
	dir, err := os.MkdirTemp("", "planrun-etcd-tls-")
	if err != nil {
		return nil, false, fmt.Errorf("creating a folder for etcd: %w", err)
	}
	fail := func(err error) (*Etcd, bool, error) {
		_ = os.RemoveAll(dir)
		return nil, false, err
	}
	clientPort, err := freePort()
	if err != nil {
		return fail(err)
	}
	metricsPort, err := freePort()
	if err != nil {
		return fail(err)
	}
	clientURL := fmt.Sprintf("https://127.0.0.1:%d", clientPort)
	metricsURL := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", metricsPort)}
	out := &childproc.Tail{}
	e := &envtest.Etcd{
		// envtest checks health on URL; the metrics listener answers /health in plain http.
		URL:          metricsURL,
		Path:         filepath.Join(binaryDir, "etcd"),
		DataDir:      filepath.Join(dir, "data"),
		StartTimeout: startTimeout,
		StopTimeout:  stopTimeout,
		Out:          processOutput(out, output),
		Err:          processOutput(out, output),
	}
	if err := os.MkdirAll(e.DataDir, 0o700); err != nil {
		return fail(fmt.Errorf("creating etcd data folder: %w", err))
	}
	args := e.Configure()
	args.Set("listen-client-urls", clientURL)
	args.Set("advertise-client-urls", clientURL)
	args.Set("listen-metrics-urls", metricsURL.String())
	args.Set("cert-file", certs.CertFile)
	args.Set("key-file", certs.KeyFile)
	args.Set("trusted-ca-file", certs.TrustedCAFile)
	args.Set("client-cert-auth", "true")
	if err := e.Start(); err != nil {
		_ = e.Stop()
		_, _, err = fail(childproc.WithTail(fmt.Errorf("starting etcd %s with TLS in %s: %w", e.Path, dir, err), "etcd", out))
		// etcd's own last words: the only place that says the port was the problem.
		return nil, strings.Contains(out.String(), "address already in use"), err
	}
	return &Etcd{URL: clientURL, etcd: e, dir: dir}, false, nil
}

// StartEtcdTLSForTest starts a TLS-secured etcd (see StartEtcdTLS) stopped when the test ends.
func StartEtcdTLSForTest(t testing.TB, certs EtcdTLS) *Etcd {
	t.Helper()
	skipIfAsked(t)
	e, err := StartEtcdTLS(t.Context(), "", certs, nil)
	if err != nil {
		t.Fatalf("controlplane: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("controlplane: %v", err)
		}
	})
	return e
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
