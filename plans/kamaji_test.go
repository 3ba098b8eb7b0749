package plans_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/testcerts"
)

const (
	kjPlan      = "kamaji-datastore-migration.yaml"
	kjNamespace = "default"
	kjTenant    = "tenant-00"
	// kjPrefix is the tenant API server's --etcd-prefix, as Kamaji names it (<namespace>_<name>).
	kjPrefix  = "/default_tenant-00"
	kjMessage = "tenant-00 is being migrated to datastore dedicated: writes are refused until it is done (planrun run r)"
)

var (
	tcpGVR       = schema.GroupVersionResource{Group: "kamaji.clastix.io", Version: "v1alpha1", Resource: "tenantcontrolplanes"}
	dataStoreGVR = schema.GroupVersionResource{Group: "kamaji.clastix.io", Version: "v1alpha1", Resource: "datastores"}
	kjTeams      = []string{"shop", "payments", "search"}
)

// kjEnv is a Kamaji management cluster (stand-in CRDs, a TenantControlPlane, two DataStores),
// two etcd servers (default: plain http; dedicated: TLS with client certificates, whose Secrets
// are in the management cluster as Kamaji's DataStore references them), the tenant's
// kube-apiserver on the default etcd under its own prefix, and a stand-in for Kamaji's
// controller that moves the tenant API server when spec.dataStore changes.
type kjEnv struct {
	dir                string
	mgmt               *controlplane.ControlPlane
	mdyn               dynamic.Interface
	def, dedicated     *controlplane.Etcd
	dedicatedTLS       *tls.Config
	dedicatedFlags     []string // kube-apiserver flags for the dedicated etcd's client TLS
	tenant             *controlplane.ControlPlane
	tenants            map[string]*controlplane.ControlPlane // by TenantControlPlane name, tenant-00 (tenant) included
	tdyn               dynamic.Interface
	tcs                kubernetes.Interface
	ctrl               *kamajiStandIn
	tenantKubeconfig   string
	dedicatedEndpoints string
}

func startKamaji(t *testing.T) *kjEnv {
	t.Helper()
	e := startKamajiBase(t)
	// The tenant's API server on the default datastore, under its own prefix; its admin
	// kubeconfig is where the plan reads it (Kamaji keeps it in a Secret).
	e.tenantKubeconfig = filepath.Join(e.dir, "tenant.kubeconfig")
	e.tenant = e.addTenant(t, kjTenant, e.tenantKubeconfig, kjDebugOutput(t))
	tcfg := rest.CopyConfig(e.tenant.Config)
	tcfg.QPS, tcfg.Burst = -1, 0
	e.tdyn = dynamic.NewForConfigOrDie(tcfg)
	e.tcs = kubernetes.NewForConfigOrDie(tcfg)
	seedTenant(t, e)
	e.ctrl = startStandIn(t, e)
	return e
}

// startKamajiBase starts Kamaji's side without tenants: the two etcd datastores, the management
// cluster with the stand-in CRDs, the DataStores and their certificates' Secrets.
func startKamajiBase(t *testing.T) *kjEnv {
	t.Helper()
	e := &kjEnv{dir: t.TempDir(), tenants: map[string]*controlplane.ControlPlane{}}
	ctx := t.Context()
	certDir := t.TempDir()
	ca := testcerts.NewCA(t, "dedicated-etcd-ca")
	serverPEM, serverKeyPEM := ca.Issue(t, "dedicated-0", true)
	clientPEM, clientKeyPEM := ca.Issue(t, "root", false)
	testcerts.WriteFiles(t, certDir, map[string][]byte{"ca.crt": ca.PEM, "server.crt": serverPEM, "server.key": serverKeyPEM,
		"client.crt": clientPEM, "client.key": clientKeyPEM})
	e.def = controlplane.StartEtcdForTest(t)
	e.dedicated = controlplane.StartEtcdTLSForTest(t, controlplane.EtcdTLS{CertFile: filepath.Join(certDir, "server.crt"),
		KeyFile: filepath.Join(certDir, "server.key"), TrustedCAFile: filepath.Join(certDir, "ca.crt")})
	e.dedicatedFlags = []string{"--etcd-cafile=" + filepath.Join(certDir, "ca.crt"), "--etcd-certfile=" + filepath.Join(certDir, "client.crt"),
		"--etcd-keyfile=" + filepath.Join(certDir, "client.key")}
	pair, err := tls.X509KeyPair(clientPEM, clientKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	e.dedicatedTLS = &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}

	e.mgmt = controlplane.StartForTest(t)
	cfg := rest.CopyConfig(e.mgmt.Config)
	cfg.QPS, cfg.Burst = -1, 0
	e.mdyn = dynamic.NewForConfigOrDie(cfg)
	mcs := kubernetes.NewForConfigOrDie(cfg)

	// Kamaji's side: CRDs, the DataStores with their certificates' Secrets.
	applyFile(t, e.mdyn, "../testdata/kamaji/crds.yaml")
	waitServed(t, e.mdyn, tcpGVR, dataStoreGVR)
	for _, ns := range []string{"kamaji-system", "dedicated"} {
		if _, err := mcs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range map[string]map[string][]byte{
		"dedicated-certs":             {"ca.crt": ca.PEM, "ca.key": ca.KeyPEM},
		"dedicated-root-client-certs": {"tls.crt": clientPEM, "tls.key": clientKeyPEM},
	} {
		if _, err := mcs.CoreV1().Secrets("dedicated").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ref := func(name, key string) map[string]any {
		return map[string]any{"secretReference": map[string]any{"name": name, "namespace": "dedicated", "keyPath": key}}
	}
	e.dedicatedEndpoints = strings.TrimPrefix(e.dedicated.URL, "https://")
	for _, ds := range []map[string]any{
		{"name": "default", "spec": map[string]any{"driver": "etcd", "endpoints": []any{strings.TrimPrefix(e.def.URL, "http://")}}},
		{"name": "dedicated", "spec": map[string]any{"driver": "etcd", "endpoints": []any{e.dedicatedEndpoints},
			"tlsConfig": map[string]any{
				"certificateAuthority": map[string]any{"certificate": ref("dedicated-certs", "ca.crt"), "privateKey": ref("dedicated-certs", "ca.key")},
				"clientCertificate":    map[string]any{"certificate": ref("dedicated-root-client-certs", "tls.crt"), "privateKey": ref("dedicated-root-client-certs", "tls.key")},
			}}},
	} {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "kamaji.clastix.io/v1alpha1", "kind": "DataStore",
			"metadata": map[string]any{"name": ds["name"]}, "spec": ds["spec"]}}
		if _, err := e.mdyn.Resource(dataStoreGVR).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// addTenant starts a tenant API server on the default datastore under Kamaji's prefix for it
// (/default_NAME), writes its admin kubeconfig to kubeconfig, and creates its Ready
// TenantControlPlane on the management cluster.
func (e *kjEnv) addTenant(t *testing.T, name, kubeconfig string, opts ...controlplane.Option) *controlplane.ControlPlane {
	t.Helper()
	ctx := t.Context()
	cp := controlplane.StartForTest(t, append([]controlplane.Option{controlplane.WithEtcdURL(e.def.URL), controlplane.WithAPIServerFlags("--etcd-prefix=/" + kjNamespace + "_" + name),
		controlplane.WithKubeconfigPath(kubeconfig), controlplane.WithContextName(name + "-admin")}, opts...)...)
	e.tenants[name] = cp
	tcp := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "kamaji.clastix.io/v1alpha1", "kind": "TenantControlPlane",
		"metadata": map[string]any{"name": name, "namespace": kjNamespace, "labels": map[string]any{"tenant.clastix.io": name}},
		"spec": map[string]any{
			"dataStore":      "default",
			"controlPlane":   map[string]any{"deployment": map[string]any{"replicas": int64(2)}, "service": map[string]any{"serviceType": "LoadBalancer"}},
			"kubernetes":     map[string]any{"version": "v1.37.0", "kubelet": map[string]any{"cgroupfs": "systemd"}},
			"networkProfile": map[string]any{"port": int64(6443)},
			"addons":         map[string]any{"coreDNS": map[string]any{}, "kubeProxy": map[string]any{}},
		}}}
	got, err := e.mdyn.Resource(tcpGVR).Namespace(kjNamespace).Create(ctx, tcp, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.Object["status"] = map[string]any{
		"controlPlaneEndpoint": strings.TrimPrefix(cp.Config.Host, "https://"),
		"kubeconfig":           map[string]any{"admin": map[string]any{"secretName": name + "-admin-kubeconfig"}},
		"storage":              map[string]any{"driver": "etcd", "dataStoreName": "default", "setup": map[string]any{"schema": kjNamespace + "_" + name, "user": kjNamespace + "_" + name}},
		"kubernetesResources":  map[string]any{"version": map[string]any{"version": "v1.37.0", "status": "Ready"}},
	}
	if _, err := e.mdyn.Resource(tcpGVR).Namespace(kjNamespace).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return cp
}

func waitServed(t *testing.T, dyn dynamic.Interface, gvrs ...schema.GroupVersionResource) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for _, gvr := range gvrs {
		for {
			_, err := dyn.Resource(gvr).List(t.Context(), metav1.ListOptions{Limit: 1})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not served: %v", gvr.Resource, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// seedTenant fills the tenant cluster: per team namespace 200 ConfigMaps (~1 KiB), 60 Secrets,
// a ServiceAccount, 6 Deployments with status, each owning 2 ReplicaSets (owner references to
// the Deployments' UIDs), and a Service.
func seedTenant(t *testing.T, e *kjEnv) {
	t.Helper()
	ctx := t.Context()
	work := make(chan func() error)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range 16 {
		wg.Go(func() {
			for f := range work {
				if err := f(); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for _, ns := range kjTeams {
		if _, err := e.tcs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": ns}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range kjTeams {
		for i := range 200 {
			work <- func() error {
				_, err := e.tcs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("config-%03d", i), Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%6)}, Annotations: map[string]string{"example.com/rev": fmt.Sprint(i)}},
					Data:       map[string]string{"settings.yaml": strings.Repeat(fmt.Sprintf("key-%d: value-%s-%d\n", i, ns, i), 40), "mode": "production"},
				}, metav1.CreateOptions{})
				return err
			}
		}
		for i := range 60 {
			work <- func() error {
				_, err := e.tcs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("secret-%02d", i)},
					Type:       corev1.SecretTypeOpaque,
					Data:       map[string][]byte{"password": fmt.Appendf(nil, "s3cret-%s-%d", ns, i), "token": []byte(strings.Repeat("x", 256))},
				}, metav1.CreateOptions{})
				return err
			}
		}
		work <- func() error {
			_, err := e.tcs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "deployer"}}, metav1.CreateOptions{})
			return err
		}
		work <- func() error {
			_, err := e.tcs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "app-0"}, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
			return err
		}
		for d := range 6 {
			work <- func() error {
				return seedDeployment(ctx, e.tcs, ns, fmt.Sprintf("app-%d", d), 3, corev1.PodSpec{Containers: []corev1.Container{{Name: fmt.Sprintf("app-%d", d)}}})
			}
		}
	}
	close(work)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("seeding the tenant: %d errors, first: %v", len(errs), errs[0])
	}
}

// seedDeployment creates a Deployment with status and its two ReplicaSets (the old one scaled to
// 0), owned by it as the deployment controller would have made them.
// kamajiStandIn stands in for Kamaji's controller: when a TenantControlPlane's spec.dataStore
// differs from status.storage.dataStoreName, it restarts the tenant's API server on that
// datastore's etcd (same prefix, same address and certificates, as Kamaji keeps the Service and
// the certificates) and records the datastore in the status. Each tenant has its own loop, so
// that tenants moving at once move at once.
type kamajiStandIn struct {
	mu       sync.Mutex
	broken   bool                // the new API server never comes up: the tenant is not moved
	moves    map[string][]string // by tenant
	lastErr  error
	stop     context.CancelFunc
	finished sync.WaitGroup
}

func startStandIn(t *testing.T, e *kjEnv) *kamajiStandIn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &kamajiStandIn{stop: cancel, moves: map[string][]string{}}
	// Registered after the tenants' control planes: cleanups run last first, so the controller
	// stops before the API servers it restarts.
	t.Cleanup(func() {
		cancel()
		c.finished.Wait()
	})
	tcps := e.mdyn.Resource(tcpGVR).Namespace(kjNamespace)
	for name, tenant := range e.tenants {
		c.finished.Go(func() {
			for ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
				tcp, err := tcps.Get(ctx, name, metav1.GetOptions{})
				if err != nil {
					if ctx.Err() == nil {
						t.Logf("stand-in controller: %v", err)
					}
					continue
				}
				want, _, _ := unstructured.NestedString(tcp.Object, "spec", "dataStore")
				have, _, _ := unstructured.NestedString(tcp.Object, "status", "storage", "dataStoreName")
				if want == have {
					continue
				}
				var url string
				var flags []string
				switch want {
				case "default":
					url = e.def.URL
					flags = []string{"--etcd-cafile=", "--etcd-certfile=", "--etcd-keyfile="}
				case "dedicated":
					url, flags = e.dedicated.URL, e.dedicatedFlags
				default:
					t.Logf("stand-in controller: unknown DataStore %q", want)
					continue // Kamaji would report the unknown DataStore
				}
				c.mu.Lock()
				broken := c.broken
				c.mu.Unlock()
				if broken {
					continue
				}
				t.Logf("stand-in controller: moving %s from %s to %s", name, have, want)
				err = tenant.Restart(ctx, url, flags...)
				if err != nil && ctx.Err() == nil {
					t.Logf("stand-in controller: moving %s to %s: %v", name, want, err)
				}
				c.mu.Lock()
				c.lastErr = err
				if err == nil {
					c.moves[name] = append(c.moves[name], want)
				}
				c.mu.Unlock()
				if err != nil {
					continue
				}
				patch := fmt.Appendf(nil, `{"status":{"storage":{"dataStoreName":%q}}}`, want)
				for ctx.Err() == nil {
					if _, err := tcps.Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err == nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	return c
}

// Moves are the datastores tenant-00 was moved to, in order, and the last error of a move.
func (c *kamajiStandIn) Moves() ([]string, error) { return c.MovesOf(kjTenant) }

// MovesOf are the datastores a tenant was moved to, in order, and the last error of a move.
func (c *kamajiStandIn) MovesOf(tenant string) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.moves[tenant]...), c.lastErr
}

// skippedResources change by themselves (the API server renews its lease) or are not stored.
var skippedResources = map[string]bool{"leases": true, "events": true}

// volatileKey: keys the API server itself rewrites while it runs (leases of its identity, of
// the kubernetes Service's endpoints, of its peer address), and events.
func volatileKey(k string) bool {
	for _, part := range []string{"/leases/", "/masterleases/", "/peerserverleases/", "/events/"} {
		if strings.Contains(k, part) {
			return true
		}
	}
	return false
}

// tenantSnapshot is every object the tenant API serves, by "group/resource ns/name", with
// metadata.resourceVersion removed (it is the etcd revision, which a copy to another etcd
// changes).
func tenantSnapshot(t *testing.T, cfg *rest.Config) map[string]map[string]any {
	t.Helper()
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	dc := discovery.NewDiscoveryClientForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	lists, err := dc.ServerPreferredResources()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	for _, l := range lists {
		gv, _ := schema.ParseGroupVersion(l.GroupVersion)
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || skippedResources[r.Name] || !containsVerb(r.Verbs, "list") {
				continue
			}
			items, err := dyn.Resource(gv.WithResource(r.Name)).List(t.Context(), metav1.ListOptions{})
			if err != nil {
				t.Fatalf("list %s: %v", r.Name, err)
			}
			for _, o := range items.Items {
				unstructured.RemoveNestedField(o.Object, "metadata", "resourceVersion")
				out[gv.Group+"/"+r.Name+" "+o.GetNamespace()+"/"+o.GetName()] = o.Object
			}
		}
	}
	return out
}

func containsVerb(verbs []string, v string) bool {
	for _, x := range verbs {
		if x == v {
			return true
		}
	}
	return false
}

// compareSnapshots reports every object missing, added or different (UID and content).
func compareSnapshots(t *testing.T, what string, before, after map[string]map[string]any, ignore func(key string) bool) {
	t.Helper()
	keys := make([]string, 0, len(before))
	for k := range before {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	problems := 0
	problem := func(format string, args ...any) {
		if problems++; problems <= 20 {
			t.Errorf(what+": "+format, args...)
		}
	}
	for _, k := range keys {
		if ignore != nil && ignore(k) {
			continue
		}
		a, ok := after[k]
		if !ok {
			problem("%s missing", k)
			continue
		}
		b := before[k]
		bm, _ := b["metadata"].(map[string]any)
		am, _ := a["metadata"].(map[string]any)
		if bm["uid"] != am["uid"] {
			problem("%s: UID %v, want %v", k, am["uid"], bm["uid"])
		}
		if nb, na := normalized(b), normalized(a); nb != na {
			problem("%s differs:\n before %s\n after  %s", k, nb, na)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok && (ignore == nil || !ignore(k)) {
			problem("%s was not there before", k)
		}
	}
	if problems > 20 {
		t.Errorf("%s: … %d problems in all", what, problems)
	}
}

func countTeamObjects(snap map[string]map[string]any) int {
	n := 0
	for k := range snap {
		for _, ns := range kjTeams {
			if strings.Contains(k, " "+ns+"/") {
				n++
			}
		}
	}
	return n
}

func (e *kjEnv) planArgs(extra ...string) []string {
	plan, _ := filepath.Abs(kjPlan)
	args := []string{"apply", plan, "--kubeconfig", e.mgmt.Kubeconfig, "--run-id", "r",
		"--set", "tenant=" + kjTenant, "--set", "from=default", "--set", "to=dedicated", "--set", "switchTimeout=2m",
		"--set", "fromEndpoints=[" + e.def.URL + "]",
		"--set", "toEndpoints=[" + e.dedicated.URL + "]",
		"--set", "toTLS={ca: {name: dedicated-certs, namespace: dedicated, keyPath: ca.crt}, cert: {name: dedicated-root-client-certs, namespace: dedicated, keyPath: tls.crt}, key: {name: dedicated-root-client-certs, namespace: dedicated, keyPath: tls.key}}"}
	return append(args, extra...)
}

func (e *kjEnv) resumeArgs() []string {
	return []string{"resume", "r", "--break-lock", "--kubeconfig", e.mgmt.Kubeconfig}
}

func (e *kjEnv) run(t *testing.T, k *plantest.KillPoint, plain bool, onEvent func(engine.Event), args ...string) plantest.Result {
	t.Helper()
	return plantest.RunBinary(t, planrunBin, e.dir, plantest.RunOptions{Kill: k, Plain: plain, OnEvent: onEvent}, args...)
}

func (e *kjEnv) tcp(t *testing.T) *unstructured.Unstructured {
	t.Helper()
	tcp, err := e.mdyn.Resource(tcpGVR).Namespace(kjNamespace).Get(t.Context(), kjTenant, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tcp
}

// tcpState is "spec.dataStore status.kubernetesResources.version.status status.storage.dataStoreName".
func (e *kjEnv) tcpState(t *testing.T) string {
	tcp := e.tcp(t)
	ds, _, _ := unstructured.NestedString(tcp.Object, "spec", "dataStore")
	st, _, _ := unstructured.NestedString(tcp.Object, "status", "kubernetesResources", "version", "status")
	on, _, _ := unstructured.NestedString(tcp.Object, "status", "storage", "dataStoreName")
	return ds + " " + st + " " + on
}

// etcdKeys counts the keys under the tenant prefix of an etcd, and returns their values.
func etcdKeys(t *testing.T, url string, tlsCfg *tls.Config) map[string]string {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, TLS: tlsCfg, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, kjPrefix+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("etcd %s: %v", url, err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

func etcdPut(t *testing.T, url string, tlsCfg *tls.Config, key, value string) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, TLS: tlsCfg, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(t.Context(), key, value); err != nil {
		t.Fatal(err)
	}
}

// tryWrite creates a ConfigMap in the tenant and returns the error.
func (e *kjEnv) tryWrite(ctx context.Context, name string, dryRun bool) error {
	opts := metav1.CreateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err := e.tcs.CoreV1().ConfigMaps(kjTeams[0]).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"a": "b"}}, opts)
	return err
}

// wantRefused checks that a write is refused by the plan's freeze, with its message.
func wantRefused(t *testing.T, err error) {
	t.Helper()
	if err == nil || !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), kjMessage) {
		t.Errorf("a write to the tenant during the migration: %v\nwant it refused with %q", err, kjMessage)
	}
}

// assertWritable checks that no freeze is left in the tenant and that writes go through.
func (e *kjEnv) assertWritable(t *testing.T) {
	t.Helper()
	l, err := e.tcs.AdmissionregistrationV1().ValidatingAdmissionPolicies().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range l.Items {
		t.Errorf("freeze left behind in the tenant: ValidatingAdmissionPolicy %s", p.Name)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := e.tryWrite(t.Context(), "probe", true)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a write to the tenant is still refused: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// assertMigratedKamaji checks the end state of a migration: the tenant API (same endpoint and
// credentials) is served from the dedicated etcd with every object as before, the old data is
// still on the default etcd, writes are allowed, the TenantControlPlane is Ready on dedicated.
func assertMigratedKamaji(t *testing.T, e *kjEnv, before map[string]map[string]any, defaultKeys map[string]string) {
	t.Helper()
	if got := e.tcpState(t); got != "dedicated Ready dedicated" {
		t.Errorf("TenantControlPlane: spec.dataStore, status, status.storage.dataStoreName = %s; want dedicated Ready dedicated", got)
	}
	if moves, err := e.ctrl.Moves(); len(moves) != 1 || moves[0] != "dedicated" || err != nil {
		t.Errorf("the tenant API server was moved %v (last error %v), want once to dedicated", moves, err)
	}
	if e.tenant.EtcdURL != e.dedicated.URL {
		t.Fatalf("the tenant API server runs on %s, want the dedicated etcd %s", e.tenant.EtcdURL, e.dedicated.URL)
	}
	// The plan's client config (the tenant kubeconfig written before the move) still works, and
	// the API server on the dedicated etcd serves every object as it was.
	after := tenantSnapshot(t, e.tenant.Config)
	compareSnapshots(t, "tenant on dedicated", before, after, nil)
	e.assertWritable(t)

	// The keys on dedicated are those on default, byte for byte (besides the freeze, lifted
	// on dedicated only, and the API server's own lease and bookkeeping keys).
	onDedicated := etcdKeys(t, e.dedicated.URL, e.dedicatedTLS)
	onDefault := etcdKeys(t, e.def.URL, nil)
	same := 0
	for k, v := range onDefault {
		if strings.Contains(k, "/validatingadmissionpolic") || volatileKey(k) {
			continue
		}
		if onDedicated[k] != v {
			t.Errorf("etcd key %s differs between default and dedicated", k)
		} else {
			same++
		}
	}
	if same < countTeamObjects(before) {
		t.Errorf("%d equal keys, fewer than the %d team objects", same, countTeamObjects(before))
	}
	// The old data is where it was: every key seeded before the migration is still on the
	// default etcd with the same value.
	for k, v := range defaultKeys {
		if volatileKey(k) {
			continue
		}
		if onDefault[k] != v {
			t.Errorf("old data on default changed: %s", k)
			break
		}
	}
}

// TestKamajiMigrates moves the tenant from the default to the dedicated datastore, checking that
// a write during the migration is refused with the plan's message.
func TestKamajiMigrates(t *testing.T) {
	e := startKamaji(t)
	before := tenantSnapshot(t, e.tenant.Config)
	defaultKeys := etcdKeys(t, e.def.URL, nil)
	t.Logf("tenant: %d objects (%d in the team namespaces), %d etcd keys", len(before), countTeamObjects(before), len(defaultKeys))

	var duringErr error
	var duringState string
	r := e.run(t, nil, false, func(ev engine.Event) {
		if ev.Type == engine.EventStepSucceeded && ev.StepID == "freeze" {
			duringState = e.tcpState(t)
			duringErr = e.tryWrite(t.Context(), "written-during-migration", false)
		}
	}, e.planArgs()...)
	if r.Code != 0 {
		t.Fatalf("apply exited %d\n%s", r.Code, r)
	}
	if duringState != "default Migrating default" {
		t.Errorf("TenantControlPlane during the freeze: %s, want default Migrating default", duringState)
	}
	wantRefused(t, duringErr)
	assertMigratedKamaji(t, e, before, defaultKeys)
	j := loadJournal(t, e.dir, "r")
	// The copy took every key of the tenant, and the freeze (policy and binding) with them.
	if out := j.Step("copy").Outputs; fmt.Sprint(out["keys"]) != fmt.Sprint(len(defaultKeys)+2) || fmt.Sprint(out["prefix"]) != kjPrefix+"/" || out["targetPolicy"] != "refuse" {
		t.Errorf("copy outputs %v; want %d keys under %s/", out, len(defaultKeys)+2, kjPrefix)
	}
	if st := j.Step("verify").Status; st != engine.StepSucceeded {
		t.Errorf("verify %s", st)
	}

	// A kube-apiserver started on the default etcd with the same prefix still serves the old
	// data, frozen as it was copied: left in place, as Kamaji does.
	old := controlplane.StartForTest(t, controlplane.WithEtcdURL(e.def.URL), controlplane.WithAPIServerFlags("--etcd-prefix="+kjPrefix))
	oldSnap := tenantSnapshot(t, old.Config)
	compareSnapshots(t, "old data on default", before, oldSnap, func(k string) bool {
		return strings.HasPrefix(k, "admissionregistration.k8s.io/validatingadmissionpolic")
	})
	frozen := 0
	for k := range oldSnap {
		if strings.HasPrefix(k, "admissionregistration.k8s.io/validatingadmissionpolic") {
			frozen++
		}
	}
	if frozen != 2 {
		t.Errorf("old data: %d freeze objects, want the policy and its binding", frozen)
	}

	// Applied again: the tenant is on dedicated, nothing happens.
	if r := e.run(t, nil, false, nil, append(e.planArgs(), "--run-id", "again")...); r.Code != 0 {
		t.Fatalf("second apply exited %d\n%s", r.Code, r)
	}
	for _, rec := range loadJournal(t, e.dir, "again").Steps {
		if want := engine.StepSkipped; rec.ID != "tcp" && rec.Status != want {
			t.Errorf("second apply: step %s %s, want %s", rec.ID, rec.Status, want)
		}
	}
	if moves, _ := e.ctrl.Moves(); len(moves) != 1 {
		t.Errorf("moves after the second apply: %v", moves)
	}
}

// TestKamajiKilledAndResumed kills planrun during the copy; the tenant stays frozen meanwhile,
// and the resumed run reaches the same end state.
func TestKamajiKilledAndResumed(t *testing.T) {
	e := startKamaji(t)
	before := tenantSnapshot(t, e.tenant.Config)
	defaultKeys := etcdKeys(t, e.def.URL, nil)
	slow := []string{"--set", "copyParallel=1", "--set", "copyBatchOps=1"}
	r := e.run(t, &plantest.KillPoint{Event: engine.EventStepProgress, Step: "copy", MinDone: 50}, false, nil, e.planArgs(slow...)...)
	if !r.Killed {
		t.Fatalf("not killed during the copy (exit %d)\n%s", r.Code, r)
	}
	if st := loadJournal(t, e.dir, "r").Step("copy").Status; st != engine.StepRunning {
		t.Fatalf("killed with copy %s", st)
	}
	partial := len(etcdKeys(t, e.dedicated.URL, e.dedicatedTLS))
	t.Logf("killed with %d of %d keys copied", partial, len(defaultKeys))
	if got := e.tcpState(t); got != "default Migrating default" {
		t.Errorf("TenantControlPlane while the run is dead: %s", got)
	}
	wantRefused(t, e.tryWrite(t.Context(), "written-while-dead", false))

	r = e.run(t, nil, false, nil, e.resumeArgs()...)
	if r.Code != 0 {
		t.Fatalf("resume exited %d\n%s", r.Code, r)
	}
	if st := loadJournal(t, e.dir, "r").Status; st != engine.RunSucceeded {
		t.Fatalf("run %s", st)
	}
	assertMigratedKamaji(t, e, before, defaultKeys)
}

// TestKamajiRollsBack: the copy on dedicated is tampered with before the verify (planrun killed
// right after the copy); the verify fails and the run rolls back: the tenant is writable again
// on its old datastore, status Ready, spec.dataStore unchanged, nothing left on dedicated.
func TestKamajiRollsBack(t *testing.T) {
	e := startKamaji(t)
	before := tenantSnapshot(t, e.tenant.Config)
	r := e.run(t, &plantest.KillPoint{Event: engine.EventStepSucceeded, Step: "copy"}, false, nil, e.planArgs()...)
	if !r.Killed {
		t.Fatalf("not killed after the copy (exit %d)\n%s", r.Code, r)
	}
	etcdPut(t, e.dedicated.URL, e.dedicatedTLS, kjPrefix+"/configmaps/"+kjTeams[0]+"/intruder", "not from the source")

	r = e.run(t, nil, false, nil, e.resumeArgs()...)
	if r.Code != 1 {
		t.Fatalf("resume exited %d, want 1\n%s", r.Code, r)
	}
	j := loadJournal(t, e.dir, "r")
	if j.Status != engine.RunRolledBack {
		t.Fatalf("run %s, want RolledBack\n%s", j.Status, r)
	}
	if rec := j.Step("verify"); rec.Status != engine.StepFailed || !strings.Contains(rec.Error, "intruder") {
		t.Errorf("verify %s: %s", rec.Status, rec.Error)
	}
	for _, s := range []string{"switch", "unfreeze", "status-ready"} {
		if st := j.Step(s).Status; st != engine.StepPending {
			t.Errorf("step %s %s, want Pending", s, st)
		}
	}
	if got := e.tcpState(t); got != "default Ready default" {
		t.Errorf("TenantControlPlane after the rollback: %s, want default Ready default", got)
	}
	if moves, _ := e.ctrl.Moves(); len(moves) != 0 || e.tenant.EtcdURL != e.def.URL {
		t.Errorf("the tenant API server was moved: %v (on %s)", moves, e.tenant.EtcdURL)
	}
	if n := len(etcdKeys(t, e.dedicated.URL, e.dedicatedTLS)); n != 0 {
		t.Errorf("%d keys left under the tenant prefix on dedicated", n)
	}
	compareSnapshots(t, "tenant after the rollback", before, tenantSnapshot(t, e.tenant.Config), nil)
	e.assertWritable(t)
}

// TestKamajiDryRun changes nothing and says what would happen.
func TestKamajiDryRun(t *testing.T) {
	e := startKamaji(t)
	before := tenantSnapshot(t, e.tenant.Config)
	tcpBefore := e.tcp(t)
	r := e.run(t, nil, true, nil, append(e.planArgs(), "--dry-run")...)
	if r.Code != 0 {
		t.Fatalf("dry run exited %d\n%s", r.Code, r)
	}
	for _, want := range []string{"status-migrating", "freeze", "copy", "switch", "unfreeze", "status-ready"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("the dry run does not mention %s", want)
		}
	}
	t.Logf("dry run output:\n%s", r.Stdout)
	if tcp := e.tcp(t); tcp.GetResourceVersion() != tcpBefore.GetResourceVersion() {
		t.Errorf("the dry run changed the TenantControlPlane: %s", e.tcpState(t))
	}
	if n := len(etcdKeys(t, e.dedicated.URL, e.dedicatedTLS)); n != 0 {
		t.Errorf("the dry run wrote %d keys to dedicated", n)
	}
	if moves, _ := e.ctrl.Moves(); len(moves) != 0 {
		t.Errorf("the tenant API server was moved: %v", moves)
	}
	compareSnapshots(t, "tenant after the dry run", before, tenantSnapshot(t, e.tenant.Config), nil)
	e.assertWritable(t)
	if _, err := os.Stat(filepath.Join(e.dir, "runs", "r")); !os.IsNotExist(err) {
		t.Errorf("the dry run left a run folder (%v)", err)
	}
}

// kjDebugOutput sends the tenant API server's output to $KJ_DEBUG_LOG when set.
func kjDebugOutput(t *testing.T) controlplane.Option {
	path := os.Getenv("KJ_DEBUG_LOG")
	if path == "" {
		return func(*controlplane.Options) {}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return controlplane.WithOutput(f)
}

// TestKamajiRollsBackAfterSwitch: the tenant's API server does not come up on the new datastore
// (the stand-in controller never moves it); the wait times out after the switch and the run
// rolls back through the switch too: spec.dataStore back to default, the keys copied to
// dedicated deleted, the freeze lifted, the status Ready.
func TestKamajiRollsBackAfterSwitch(t *testing.T) {
	e := startKamaji(t)
	e.ctrl.mu.Lock()
	e.ctrl.broken = true
	e.ctrl.mu.Unlock()
	before := tenantSnapshot(t, e.tenant.Config)
	r := e.run(t, nil, false, nil, e.planArgs("--set", "switchTimeout=5s")...)
	if r.Code != 1 {
		t.Fatalf("apply exited %d, want 1\n%s", r.Code, r)
	}
	j := loadJournal(t, e.dir, "r")
	if j.Status != engine.RunRolledBack {
		t.Fatalf("run %s, want RolledBack\n%s", j.Status, r)
	}
	if rec := j.Step("switched"); rec.Status != engine.StepFailed || !strings.Contains(rec.Error, `timed out after 5s waiting until object.status.storage.dataStoreName == params.to`) {
		t.Errorf("switched %s: %s", rec.Status, rec.Error)
	}
	for _, id := range []string{"switch-back", "switched-back"} {
		if rec := j.Step(id); rec == nil || rec.RollbackOf != "switch" || rec.Status != engine.StepSucceeded {
			t.Errorf("rollback step %s: %+v", id, rec)
		}
	}
	if got := e.tcpState(t); got != "default Ready default" {
		t.Errorf("TenantControlPlane after the rollback: %s, want default Ready default", got)
	}
	if n := len(etcdKeys(t, e.dedicated.URL, e.dedicatedTLS)); n != 0 {
		t.Errorf("%d keys left under the tenant prefix on dedicated", n)
	}
	if e.tenant.EtcdURL != e.def.URL {
		t.Errorf("the tenant API server runs on %s", e.tenant.EtcdURL)
	}
	compareSnapshots(t, "tenant after the rollback", before, tenantSnapshot(t, e.tenant.Config), nil)
	e.assertWritable(t)
}
