package etcdcopy_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/testcerts"
)

func TestTLS(t *testing.T) {
	need(t)
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "etcd-ca")
	serverCert, serverKey := ca.Issue(t, "etcd-server", true)
	clientCert, clientKey := ca.Issue(t, "planrun", false)
	other := testcerts.NewCA(t, "other-ca")
	otherCert, otherKey := other.Issue(t, "stranger", false)
	testcerts.WriteFiles(t, dir, map[string][]byte{
		"ca.crt": ca.PEM, "server.crt": serverCert, "server.key": serverKey,
		"client.crt": clientCert, "client.key": clientKey,
		"other-ca.crt": other.PEM, "other.crt": otherCert, "other.key": otherKey,
		"garbage.crt": []byte("not a certificate"),
	})
	f := func(name string) string { return filepath.Join(dir, name) }
	secure := controlplane.StartEtcdTLSForTest(t, controlplane.EtcdTLS{CertFile: f("server.crt"), KeyFile: f("server.key"), TrustedCAFile: f("ca.crt")})
	from, to := prefix(t, "from"), prefix(t, "to")
	seed(t, src, from, 500, 200)

	store := func(name, tls string) string {
		return fmt.Sprintf("  %s: {endpoints: [%q], dialTimeout: 2s, tls: {%s}}\n", name, secure.URL, tls)
	}
	good := store("secure", fmt.Sprintf("ca: %s, cert: %s, key: %s", f("ca.crt"), f("client.crt"), f("client.key")))
	j := mustApply(t, datastores(good+fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: secure, prefix: %q, targetPrefix: %q}}
  - {id: back, type: etcd.copy, with: {source: secure, target: dst, prefix: %q, targetPrefix: %q}}
  - {id: verify, type: etcd.verify, with: {source: secure, target: dst, prefix: %q, targetPrefix: %q}}
`, from, to, to, to, to, to)))
	if plantest.Num(t, j.Step("copy").Outputs, "keys") != 500 || plantest.Num(t, j.Step("verify").Outputs, "keys") != 500 {
		t.Fatalf("outputs %v %v", j.Step("copy").Outputs, j.Step("verify").Outputs)
	}
	sameContent(t, kvs(t, src, from, 0), kvs(t, dst, to, 0))

	cases := []struct{ name, tls, want string }{
		{"no client certificate", "ca: " + f("ca.crt"), `step "copy" failed: target: datastore "secure": no endpoint answered within 2s: ` + secure.URL + `: TLS handshake: remote error: tls: certificate required`},
		{"client certificate of another CA", fmt.Sprintf("ca: %s, cert: %s, key: %s", f("ca.crt"), f("other.crt"), f("other.key")),
			`step "copy" failed: target: datastore "secure": no endpoint answered within 2s: ` + secure.URL + `: TLS handshake: remote error: tls: certificate required`},
		{"server of another CA", fmt.Sprintf("ca: %s, cert: %s, key: %s", f("other-ca.crt"), f("client.crt"), f("client.key")),
			`step "copy" failed: target: datastore "secure": no endpoint answered within 2s: ` + secure.URL + `: TLS handshake: tls: failed to verify certificate: x509: certificate signed by unknown authority`},
		{"CA file not PEM", "ca: " + f("garbage.crt"),
			`step "copy" failed: target: datastore "secure" (` + secure.URL + `): tls: ` + f("garbage.crt") + ` holds no PEM certificate`},
		{"key does not match", fmt.Sprintf("ca: %s, cert: %s, key: %s", f("ca.crt"), f("client.crt"), f("other.key")),
			`step "copy" failed: target: datastore "secure" (` + secure.URL + `): tls: client certificate ` + f("client.crt") + ` and ` + f("other.key") + `: tls: private key does not match public key`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := apply(t, datastores(store("secure", tc.tls)+fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: secure, prefix: %q, targetPrefix: %q}}
`, from, prefix(t, "x"))), runOpts{})
			plantest.WantError(t, err, tc.want)
		})
	}
}

// TestTLSFromSecrets reads the TLS material from Kubernetes Secrets on a real API server: one
// Secret with all three items, and one Secret per item as Kamaji's DataStore declares them.
func TestTLSFromSecrets(t *testing.T) {
	need(t)
	dir := t.TempDir()
	ca := testcerts.NewCA(t, "etcd-ca")
	serverCert, serverKey := ca.Issue(t, "etcd-server", true)
	clientCert, clientKey := ca.Issue(t, "planrun", false)
	testcerts.WriteFiles(t, dir, map[string][]byte{"ca.crt": ca.PEM, "server.crt": serverCert, "server.key": serverKey})
	f := func(name string) string { return filepath.Join(dir, name) }
	secure := controlplane.StartEtcdTLSForTest(t, controlplane.EtcdTLS{CertFile: f("server.crt"), KeyFile: f("server.key"), TrustedCAFile: f("ca.crt")})
	cp := controlplane.StartForTest(t)
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kamaji-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]map[string][]byte{
		"etcd-certs":             {"ca.crt": ca.PEM, "ca.key": []byte("not needed")},
		"etcd-root-client-certs": {"tls.crt": clientCert, "tls.key": clientKey},
		"all-in-one":             {"ca.crt": ca.PEM, "tls.crt": clientCert, "tls.key": clientKey},
	} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "kamaji-system"}, Data: data}
		if _, err := cs.CoreV1().Secrets("kamaji-system").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	clusters := fmt.Sprintf("clusters:\n  management: {kubeconfig: %q, context: %q}\n", cp.Kubeconfig, cp.ContextName)
	from := prefix(t, "from")
	seed(t, src, from, 50, 100)
	for name, tls := range map[string]string{
		"one secret": `secret: {name: all-in-one, namespace: kamaji-system}`,
		"per item": `caFrom: {name: etcd-certs, namespace: kamaji-system, key: ca.crt},
      certFrom: {name: etcd-root-client-certs, namespace: kamaji-system, key: tls.crt},
      keyFrom: {name: etcd-root-client-certs, namespace: kamaji-system, key: tls.key}`,
	} {
		t.Run(name, func(t *testing.T) {
			to := prefix(t, "to")
			j := mustApply(t, clusters+datastores(fmt.Sprintf(`  secure:
    endpoints: [%q]
    tls: {%s}
steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: secure, prefix: %q, targetPrefix: %q}}
  - {id: verify, type: etcd.verify, with: {source: src, target: secure, prefix: %q, targetPrefix: %q, revision: "${{ steps.copy.outputs.revision }}"}}
`, secure.URL, tls, from, to, from, to)))
			if plantest.Num(t, j.Step("verify").Outputs, "keys") != 50 {
				t.Fatalf("verify outputs %v", j.Step("verify").Outputs)
			}
		})
	}
	_, err := apply(t, clusters+datastores(fmt.Sprintf(`  secure:
    endpoints: [%q]
    tls: {caFrom: {name: etcd-certs, namespace: kamaji-system, key: ca.crt}, certFrom: {name: etcd-root-client-certs, namespace: kamaji-system, key: cert.pem}, keyFrom: {name: etcd-root-client-certs, namespace: kamaji-system, key: tls.key}}
steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: secure, prefix: %q}}
`, secure.URL, from)), runOpts{})
	plantest.WantError(t, err, `step "copy" failed: target: datastore "secure" (`+secure.URL+`): tls.certFrom: Secret kamaji-system/etcd-root-client-certs has no key "cert.pem"`)
}
