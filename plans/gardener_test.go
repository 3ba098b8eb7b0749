package plans_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/etcdtest"
	"planrun.dev/planrun/internal/plantest"
)

const (
	gdPlan        = "gardener-control-plane-migration.yaml"
	gdProject     = "dev"
	gdShoot       = "web"
	gdGardenNS    = "garden-dev"
	gdTechnicalID = "shoot--dev--web"
	gdSourceSeed  = "seed-a"
	gdDestSeed    = "seed-b"
	gdOperation   = "gardener.cloud/operation"
	gdSnapshot    = "migration/final-full-snapshot.db"
	// gdShootKeys is how many keys the shoot's etcd holds besides the API server's own.
	gdShootKeys = 2000
)

var (
	shootGVR      = gdCore("shoots")
	seedGVR       = gdCore("seeds")
	shootStateGVR = gdCore("shootstates")
	deploymentGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}
	// gdExtensions are the extension resources of a shoot's control plane, by kind, with the
	// names the test gives them in the control-plane namespace (the BackupEntry is
	// cluster-scoped and named <technicalID>--<shoot uid>).
	gdExtensions = []struct {
		kind, resource string
		names          []string
		purposes       []string // spec.purpose per name, "" for none
		stateful       bool     // the controller keeps a status.state
	}{
		{"Infrastructure", "infrastructures", []string{"web"}, nil, true},
		{"Network", "networks", []string{"web"}, nil, false},
		{"ControlPlane", "controlplanes", []string{"web", "web-exposure"}, []string{"normal", "exposure"}, true},
		{"Worker", "workers", []string{"web"}, nil, true},
		{"OperatingSystemConfig", "operatingsystemconfigs", []string{"web-pool-a-original", "web-pool-a-downloader"}, []string{"reconcile", "provision"}, false},
		{"ContainerRuntime", "containerruntimes", []string{"web-gvisor"}, nil, false},
		{"Extension", "extensions", []string{"shoot-dns-service", "shoot-cert-service"}, nil, true},
		{"DNSRecord", "dnsrecords", []string{"web-external", "web-internal"}, nil, true},
		{"BackupEntry", "backupentries", nil, nil, true},
	}
)

func gdCore(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "core.gardener.cloud", Version: "v1beta1", Resource: resource}
}

func gdExt(resource string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: "extensions.gardener.cloud", Version: "v1alpha1", Resource: resource}
}

// gdEnv is a garden and two seeds on two API servers (the source seed's API server also serves
// the garden, as Gardener's "soil" does), the shoot's etcd on the source seed, the two seeds'
// backup buckets as folders, and a stand-in for the extension controllers of the source seed.
type gdEnv struct {
	dir              string
	src, dst         *controlplane.ControlPlane
	sdyn, ddyn       dynamic.Interface
	etcd             *controlplane.Etcd
	shootUID         string
	buckets          *gdBuckets
	dataDir          string
	ctrl             *gdStandIn
	etcdHash         string // sha256 of every key and value of the shoot's etcd
	etcdKeys         int
	earlierBackupSum map[string]string // backup entry files before the migration, by relative path
}

// startGardener starts the garden, the seeds and the shoot's etcd, with the seeds' backup
// buckets as folders, or on two S3 servers with s3.
func startGardener(t *testing.T, s3 bool) *gdEnv {
	t.Helper()
	e := &gdEnv{dir: t.TempDir()}
	ctx := t.Context()
	cps := controlplane.StartManyForTest(t, 2)
	e.src, e.dst = cps[0], cps[1]
	dyn := func(cfg *rest.Config) dynamic.Interface {
		c := rest.CopyConfig(cfg)
		c.QPS, c.Burst = -1, 0
		return dynamic.NewForConfigOrDie(c)
	}
	e.sdyn, e.ddyn = dyn(e.src.Config), dyn(e.dst.Config)
	for name, cp := range map[string]*controlplane.ControlPlane{"source-seed.kubeconfig": e.src, "destination-seed.kubeconfig": e.dst} {
		b, err := os.ReadFile(cp.Kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(e.dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var extGVRs []schema.GroupVersionResource
	for _, x := range gdExtensions {
		extGVRs = append(extGVRs, gdExt(x.resource))
	}
	for _, d := range []dynamic.Interface{e.sdyn, e.ddyn} {
		applyFile(t, d, "../testdata/gardener/crds.yaml")
		waitServed(t, d, append([]schema.GroupVersionResource{shootGVR, seedGVR, shootStateGVR}, extGVRs...)...)
	}
	e.etcd = controlplane.StartEtcdForTest(t)
	if s3 {
		e.buckets = startS3Buckets(t)
	} else {
		e.buckets = &gdBuckets{srcDir: filepath.Join(e.dir, "buckets", gdSourceSeed), dstDir: filepath.Join(e.dir, "buckets", gdDestSeed)}
	}
	e.dataDir = filepath.Join(e.dir, "destination", "etcd-main")

	// The garden: the project namespace, both seeds (healthy, with backups), the shoot on the
	// source seed and its ShootState as gardenlet keeps it.
	create := func(d dynamic.Interface, gvr schema.GroupVersionResource, ns string, obj map[string]any, status map[string]any) *unstructured.Unstructured {
		t.Helper()
		u := &unstructured.Unstructured{Object: obj}
		var r dynamic.ResourceInterface = d.Resource(gvr)
		if ns != "" {
			r = d.Resource(gvr).Namespace(ns)
		}
		got, err := r.Create(ctx, u, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
		}
		if status != nil {
			got.Object["status"] = status
			if got, err = r.UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
				t.Fatalf("%s %s status: %v", u.GetKind(), u.GetName(), err)
			}
		}
		return got
	}
	namespace := func(d dynamic.Interface, name string) {
		create(d, schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, "", map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name}}, nil)
	}
	namespace(e.sdyn, gdGardenNS)
	namespace(e.sdyn, "garden")
	for name, srv := range e.buckets.secrets() {
		create(e.sdyn, schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, "garden", map[string]any{"apiVersion": "v1", "kind": "Secret",
			"metadata":   map[string]any{"name": name},
			"stringData": map[string]any{"accessKeyID": srv.AccessKey, "secretAccessKey": srv.SecretKey}}, nil)
	}
	for _, seed := range []string{gdSourceSeed, gdDestSeed} {
		s := create(e.sdyn, seedGVR, "", map[string]any{"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Seed",
			"metadata": map[string]any{"name": seed},
			"spec": map[string]any{
				"provider": map[string]any{"type": "local", "region": "local"},
				"backup":   e.buckets.seedBackup(seed),
				"ingress":  map[string]any{"domain": "ingress." + seed + ".local.gardener.cloud"},
			}}, map[string]any{"conditions": gdConditions("True", "")})
		if seed == gdDestSeed && e.buckets.s3() {
			e.buckets.makeDestination(t, string(s.GetUID()))
		}
	}
	shoot := create(e.sdyn, shootGVR, gdGardenNS, map[string]any{"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot",
		"metadata": map[string]any{"name": gdShoot, "labels": map[string]any{"shoot.gardener.cloud/status": "healthy"}},
		"spec": map[string]any{
			"seedName":          gdSourceSeed,
			"cloudProfileName":  "local",
			"region":            "local",
			"secretBindingName": "local",
			"kubernetes":        map[string]any{"version": "1.37.0"},
			"networking":        map[string]any{"type": "calico", "nodes": "10.10.0.0/16"},
			"provider": map[string]any{"type": "local", "workers": []any{map[string]any{"name": "pool-a", "minimum": int64(1), "maximum": int64(3),
				"machine": map[string]any{"type": "local"}, "cri": map[string]any{"name": "containerd"}}}},
		}}, nil)
	e.shootUID = string(shoot.GetUID())
	shoot.Object["status"] = map[string]any{
		"seedName":      gdSourceSeed,
		"technicalID":   gdTechnicalID,
		"uid":           e.shootUID,
		"lastOperation": map[string]any{"type": "Reconcile", "state": "Succeeded", "progress": int64(100), "description": "Shoot cluster has been successfully reconciled."},
		"conditions":    gdConditions("True", ""),
	}
	if _, err := e.sdyn.Resource(shootGVR).Namespace(gdGardenNS).UpdateStatus(ctx, shoot, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	create(e.sdyn, shootStateGVR, gdGardenNS, map[string]any{"apiVersion": "core.gardener.cloud/v1beta1", "kind": "ShootState",
		"metadata": map[string]any{"name": gdShoot},
		"spec": map[string]any{"gardener": []any{map[string]any{"name": "ca", "type": "secret", "labels": map[string]any{"persist": "true"},
			"data": map[string]any{"ca.crt": "LS0tLS1CRUdJTi...", "ca.key": "LS0tLS1CRUdJTi..."}}}}}, nil)

	// The source seed: the control-plane namespace with the shoot's kube-apiserver and its
	// extension resources, each reconciled with a state of its own.
	namespace(e.sdyn, gdTechnicalID)
	create(e.sdyn, deploymentGVR, gdTechnicalID, gdDeployment("kube-apiserver", 2), nil)
	create(e.sdyn, deploymentGVR, gdTechnicalID, gdDeployment("gardener-resource-manager", 2), nil)
	for _, x := range gdExtensions {
		names, ns := x.names, gdTechnicalID
		if x.kind == "BackupEntry" {
			names, ns = []string{e.backupEntry()}, ""
		}
		for i, name := range names {
			spec := map[string]any{"type": "local", "providerConfig": map[string]any{"apiVersion": "local.provider.extensions.gardener.cloud/v1alpha1", "kind": x.kind + "Config", "index": int64(i)}}
			if x.purposes != nil {
				spec["purpose"] = x.purposes[i]
			}
			if x.kind == "BackupEntry" {
				spec["bucketName"] = gdSourceBucket
				spec["region"] = "local"
			}
			status := map[string]any{"observedGeneration": int64(1),
				"lastOperation": map[string]any{"type": "Reconcile", "state": "Succeeded", "progress": int64(100)}}
			if x.stateful {
				status["state"] = map[string]any{"kind": x.kind, "name": name, "generation": int64(1), "data": strings.Repeat(x.kind[:1], 64)}
			}
			obj := map[string]any{"apiVersion": "extensions.gardener.cloud/v1alpha1", "kind": x.kind, "metadata": map[string]any{"name": name}, "spec": spec}
			create(e.sdyn, gdExt(x.resource), ns, obj, status)
		}
	}

	// The shoot's etcd, as its kube-apiserver left it: objects under /registry/, some updated
	// and deleted (so that the revision is not the key count), and a key with a lease.
	e.seedShootEtcd(t)

	// The source bucket holds the shoot's earlier backups: a full snapshot and deltas.
	e.earlierBackupSum = map[string]string{}
	for name, size := range map[string]int{"v2/Full-00000000-00001000-1763700000": 256 << 10,
		"v2/Incr-00001001-00001400-1763700600.gz": 40 << 10, "v2/Incr-00001401-00001800-1763701200.gz": 40 << 10} {
		b := make([]byte, size)
		rand.Read(b)
		e.buckets.put(t, e.backupEntry()+"/"+name, b)
		sum := sha256.Sum256(b)
		e.earlierBackupSum[name] = hex.EncodeToString(sum[:])
	}
	e.ctrl = startGardenerStandIn(t, e)
	return e
}

func gdConditions(status, message string) []any {
	var out []any
	for _, c := range []string{"GardenletReady", "BackupBucketsReady", "ExtensionsReady", "SeedSystemComponentsHealthy"} {
		cond := map[string]any{"type": c, "status": "True", "reason": "Healthy", "lastTransitionTime": "2026-11-21T10:00:00Z"}
		if c == "SeedSystemComponentsHealthy" && status != "True" {
			cond["status"], cond["reason"], cond["message"] = status, "ComponentsUnhealthy", message
		}
		out = append(out, cond)
	}
	return out
}

func gdDeployment(name string, replicas int64) map[string]any {
	labels := map[string]any{"app": "kubernetes", "role": name}
	return map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": name, "labels": labels},
		"spec": map[string]any{"replicas": replicas, "selector": map[string]any{"matchLabels": labels},
			"template": map[string]any{"metadata": map[string]any{"labels": labels},
				"spec": map[string]any{"containers": []any{map[string]any{"name": name, "image": "registry.k8s.io/" + name + ":v1.37.0"}}}}}}
}

func (e *gdEnv) backupEntry() string { return gdTechnicalID + "--" + e.shootUID }

// seedShootEtcd writes the shoot's keys and records their hash.
func (e *gdEnv) seedShootEtcd(t *testing.T) {
	t.Helper()
	cli := gdEtcdClient(t, e.etcd.URL)
	ctx := t.Context()
	for i := range gdShootKeys {
		ns := []string{"default", "kube-system", "shop", "payments"}[i%4]
		res := []string{"configmaps", "secrets", "pods", "services"}[i%4]
		key := fmt.Sprintf("/registry/%s/%s/object-%04d", res, ns, i)
		val := fmt.Sprintf(`{"kind":%q,"metadata":{"name":"object-%04d","namespace":%q,"uid":"%08x-0000"},"data":{"v":%q}}`, res, i, ns, i, strings.Repeat("x", 200+i%300))
		if _, err := cli.Put(ctx, key, val); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < gdShootKeys; i += 10 {
		key := fmt.Sprintf("/registry/%s/%s/object-%04d", []string{"configmaps", "secrets", "pods", "services"}[i%4], []string{"default", "kube-system", "shop", "payments"}[i%4], i)
		if i%20 == 0 {
			if _, err := cli.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		} else if _, err := cli.Put(ctx, key, `{"updated":true}`); err != nil {
			t.Fatal(err)
		}
	}
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/registry/leases/kube-system/kube-controller-manager", "holder", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	e.etcdKeys, e.etcdHash = gdEtcdHash(t, e.etcd.URL)
}

func gdEtcdClient(t *testing.T, url string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// gdEtcdHash is the number of keys of an etcd and the sha256 of every key and value, in order.
func gdEtcdHash(t *testing.T, url string) (int, string) {
	t.Helper()
	return etcdtest.Digest(t, gdEtcdClient(t, url))
}

// gdStandIn stands in for the extension controllers of the source seed: an extension resource
// annotated gardener.cloud/operation=migrate or restore gets its operation done (status.state
// advanced, lastOperation Migrate or Restore Succeeded) and the annotation removed. It records
// every operation, with the kube-apiserver's replicas at that moment.
type gdStandIn struct {
	mu       sync.Mutex
	ops      []string // "migrate Worker web (kube-apiserver replicas 0)"
	finished chan struct{}
}

func startGardenerStandIn(t *testing.T, e *gdEnv) *gdStandIn {
	ctx, cancel := context.WithCancel(context.Background())
	c := &gdStandIn{finished: make(chan struct{})}
	t.Cleanup(func() {
		cancel()
		<-c.finished
	})
	go func() {
		defer close(c.finished)
		for ctx.Err() == nil {
			time.Sleep(150 * time.Millisecond)
			for _, x := range gdExtensions {
				var r dynamic.ResourceInterface = e.sdyn.Resource(gdExt(x.resource))
				if x.kind != "BackupEntry" {
					r = e.sdyn.Resource(gdExt(x.resource)).Namespace(gdTechnicalID)
				}
				list, err := r.List(ctx, metav1.ListOptions{})
				if err != nil {
					continue
				}
				for _, obj := range list.Items {
					op := obj.GetAnnotations()[gdOperation]
					if op != "migrate" && op != "restore" {
						continue
					}
					if err := c.operate(ctx, e, r, &obj, op); err != nil && ctx.Err() == nil {
						t.Logf("stand-in extension controller: %s %s: %v", x.kind, obj.GetName(), err)
					}
				}
			}
		}
	}()
	return c
}

func (c *gdStandIn) operate(ctx context.Context, e *gdEnv, r dynamic.ResourceInterface, obj *unstructured.Unstructured, op string) error {
	// What the kube-apiserver runs at when the controller is asked (before it acts), so that
	// the test sees that the plan stopped it before asking for a migration.
	d, err := e.sdyn.Resource(deploymentGVR).Namespace(gdTechnicalID).Get(ctx, "kube-apiserver", metav1.GetOptions{})
	if err != nil {
		return err
	}
	replicas, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas")
	typ := map[string]string{"migrate": "Migrate", "restore": "Restore"}[op]
	status := map[string]any{"lastOperation": map[string]any{"type": typ, "state": "Succeeded", "progress": int64(100)}}
	if st, ok, _ := unstructured.NestedMap(obj.Object, "status", "state"); ok {
		gen, _, _ := unstructured.NestedInt64(st, "generation")
		st["generation"] = gen + 1
		st["lastOperation"] = op
		status["state"] = st
	}
	patch := []byte(normalized(map[string]any{"status": status}))
	if _, err := r.Patch(ctx, obj.GetName(), types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		return err
	}
	if _, err := r.Patch(ctx, obj.GetName(), types.MergePatchType, []byte(`{"metadata":{"annotations":{"gardener.cloud/operation":null}}}`), metav1.PatchOptions{}); err != nil {
		return err
	}
	c.mu.Lock()
	c.ops = append(c.ops, fmt.Sprintf("%s %s %s (kube-apiserver replicas %d)", op, obj.GetKind(), obj.GetName(), replicas))
	c.mu.Unlock()
	return nil
}

func (c *gdStandIn) Ops() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := append([]string(nil), c.ops...)
	sort.Strings(out)
	return out
}

func (e *gdEnv) planArgs(extra ...string) []string {
	plan, _ := filepath.Abs(gdPlan)
	args := []string{"apply", plan, "--kubeconfig", e.src.Kubeconfig, "--run-id", "r",
		"--set", "project=" + gdProject, "--set", "shoot=" + gdShoot, "--set", "destinationSeed=" + gdDestSeed,
		"--set", "etcdEndpoints=[" + e.etcd.URL + "]",
		"--set", "destinationEtcdDataDir=" + e.dataDir, "--set", "operationTimeout=1m"}
	args = append(args, e.buckets.args()...)
	return append(args, extra...)
}

func (e *gdEnv) run(t *testing.T, k *plantest.KillPoint, plain bool, args ...string) plantest.Result {
	t.Helper()
	return plantest.RunBinary(t, planrunBin, e.dir, plantest.RunOptions{Kill: k, Plain: plain}, args...)
}

func (e *gdEnv) resumeArgs() []string {
	return []string{"resume", "r", "--break-lock", "--kubeconfig", e.src.Kubeconfig}
}

// gdObjects is every object the migration may touch, by "resource ns/name": the shoot, the
// seeds, the ShootState, the control plane's Deployments and extension resources.
func (e *gdEnv) gdObjects(t *testing.T) map[string]*unstructured.Unstructured {
	t.Helper()
	out := map[string]*unstructured.Unstructured{}
	add := func(gvr schema.GroupVersionResource, ns string) { addObjects(t, e.sdyn, out, gvr, ns) }
	add(shootGVR, gdGardenNS)
	add(seedGVR, "")
	add(shootStateGVR, gdGardenNS)
	add(deploymentGVR, gdTechnicalID)
	for _, x := range gdExtensions {
		if x.kind == "BackupEntry" {
			add(gdExt(x.resource), "")
		} else {
			add(gdExt(x.resource), gdTechnicalID)
		}
	}
	return out
}

func (e *gdEnv) get(t *testing.T, gvr schema.GroupVersionResource, ns, name string) *unstructured.Unstructured {
	t.Helper()
	var r dynamic.ResourceInterface = e.sdyn.Resource(gvr)
	if ns != "" {
		r = e.sdyn.Resource(gvr).Namespace(ns)
	}
	o, err := r.Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func str(o *unstructured.Unstructured, path ...string) string {
	v, _, _ := unstructured.NestedFieldNoCopy(o.Object, path...)
	if v == nil {
		return "<none>"
	}
	return fmt.Sprint(v)
}

// shootState is "spec.seedName status.seedName lastOperation.type lastOperation.state".
func (e *gdEnv) shootState(t *testing.T) string {
	s := e.get(t, shootGVR, gdGardenNS, gdShoot)
	return strings.Join([]string{str(s, "spec", "seedName"), str(s, "status", "seedName"),
		str(s, "status", "lastOperation", "type"), str(s, "status", "lastOperation", "state")}, " ")
}

func (e *gdEnv) apiServerReplicas(t *testing.T) string {
	return str(e.get(t, deploymentGVR, gdTechnicalID, "kube-apiserver"), "spec", "replicas")
}

// withoutVolatile is an object without what changes by itself (resourceVersion, generation,
// managedFields), for field-by-field comparisons.
func withoutVolatile(o *unstructured.Unstructured) map[string]any {
	c := o.DeepCopy()
	for _, f := range []string{"resourceVersion", "generation", "managedFields"} {
		unstructured.RemoveNestedField(c.Object, "metadata", f)
	}
	return c.Object
}

// assertGardenerMigrated checks the end state of a migration, field by field.
func assertGardenerMigrated(t *testing.T, e *gdEnv, before map[string]*unstructured.Unstructured) {
	t.Helper()
	after := e.gdObjects(t)
	if len(after) != len(before) {
		t.Errorf("%d objects after the migration, %d before", len(after), len(before))
	}

	// The shoot: on the destination seed, Restore Succeeded; nothing else changed.
	shoot := after["shoots "+gdGardenNS+"/"+gdShoot]
	if got := e.shootState(t); got != "seed-b seed-b Restore Succeeded" {
		t.Errorf("Shoot: spec.seedName status.seedName lastOperation = %s; want seed-b seed-b Restore Succeeded", got)
	}
	if p := str(shoot, "status", "lastOperation", "progress"); p != "100" {
		t.Errorf("Shoot lastOperation.progress %s", p)
	}
	want := withoutVolatile(before["shoots "+gdGardenNS+"/"+gdShoot])
	got := withoutVolatile(shoot)
	for _, f := range [][]string{{"spec", "seedName"}, {"status", "seedName"}, {"status", "lastOperation"}} {
		unstructured.RemoveNestedField(want, f...)
		unstructured.RemoveNestedField(got, f...)
	}
	if normalized(got) != normalized(want) {
		t.Errorf("Shoot changed besides seedName and lastOperation:\n%s\nwant\n%s", normalized(got), normalized(want))
	}
	// Seeds and the other Deployment: untouched.
	for k, b := range before {
		if strings.HasPrefix(k, "seeds ") || k == "deployments "+gdTechnicalID+"/gardener-resource-manager" {
			if after[k].GetResourceVersion() != b.GetResourceVersion() {
				t.Errorf("%s changed", k)
			}
		}
	}
	// The kube-apiserver on the source seed is stopped, and was stopped before any extension
	// was asked to migrate.
	if r := e.apiServerReplicas(t); r != "0" {
		t.Errorf("kube-apiserver on the source seed: replicas %s, want 0", r)
	}
	var wantOps []string
	for _, x := range gdExtensions {
		names := x.names
		if x.kind == "BackupEntry" {
			names = []string{e.backupEntry()}
		}
		for _, n := range names {
			wantOps = append(wantOps, fmt.Sprintf("migrate %s %s (kube-apiserver replicas 0)", x.kind, n))
		}
	}
	sort.Strings(wantOps)
	if got := e.ctrl.Ops(); strings.Join(got, "\n") != strings.Join(wantOps, "\n") {
		t.Errorf("extension operations:\n%s\nwant each migrated once, with the kube-apiserver stopped:\n%s", strings.Join(got, "\n"), strings.Join(wantOps, "\n"))
	}

	// Every extension resource: migrated (annotation gone, Migrate Succeeded), spec as before,
	// and its final state in the ShootState.
	stateOf := map[string]any{}
	for _, a := range assertExtensions(t, before, after, "Migrate") {
		if st, ok := a.Object["status"].(map[string]any)["state"]; ok {
			if g := fmt.Sprint(st.(map[string]any)["generation"]); g != "2" {
				t.Errorf("%s %s: state generation %s, want 2 (advanced by the migration)", a.GetKind(), a.GetName(), g)
			}
			stateOf[a.GetKind()+"/"+a.GetName()] = st
		}
	}
	ss := after["shootstates "+gdGardenNS+"/"+gdShoot]
	exts, _, _ := unstructured.NestedSlice(ss.Object, "spec", "extensions")
	gotStates := map[string]any{}
	for _, x := range exts {
		m := x.(map[string]any)
		key := fmt.Sprint(m["kind"], "/", m["name"])
		gotStates[key] = m["state"]
		obj := after[gdKeyOf(e, m["kind"].(string), m["name"].(string))]
		if obj == nil {
			t.Errorf("ShootState lists %s, which does not exist", key)
			continue
		}
		if p, _, _ := unstructured.NestedString(obj.Object, "spec", "purpose"); fmt.Sprint(m["purpose"]) != fmt.Sprint(map[bool]any{true: p, false: nil}[p != ""]) {
			t.Errorf("ShootState %s purpose %v, want %q", key, m["purpose"], p)
		}
	}
	if len(exts) != len(stateOf) {
		t.Errorf("ShootState spec.extensions has %d entries, want one per stateful extension resource (%d)", len(exts), len(stateOf))
	}
	if normalized(gotStates) != normalized(stateOf) {
		t.Errorf("ShootState spec.extensions states:\n%s\nwant the final status.state of each stateful extension resource:\n%s", normalized(gotStates), normalized(stateOf))
	}
	if normalized(ss.Object["spec"].(map[string]any)["gardener"]) != normalized(before["shootstates "+gdGardenNS+"/"+gdShoot].Object["spec"].(map[string]any)["gardener"]) {
		t.Error("ShootState spec.gardener changed")
	}

	// The backups: the final snapshot in the source bucket, the whole entry copied, byte for
	// byte, to the destination bucket.
	srcFiles, dstFiles := e.buckets.files(t, false, e.backupEntry()), e.buckets.files(t, true, e.backupEntry())
	for name, sum := range e.earlierBackupSum {
		if srcFiles[name] != sum || dstFiles[name] != sum {
			t.Errorf("backup %s: source %s, destination %s, want %s", name, srcFiles[name], dstFiles[name], sum)
		}
	}
	if srcFiles[gdSnapshot] == "" || srcFiles[gdSnapshot+".manifest.json"] == "" {
		t.Errorf("no final snapshot in the source bucket: %v", srcFiles)
	}
	if normalized(srcFiles) != normalized(dstFiles) {
		t.Errorf("destination bucket %v\nwant the source's %v", dstFiles, srcFiles)
	}

	// A fresh etcd started on the restored data directory serves the shoot's keys, every one,
	// with the same values (hash over keys and values).
	restored, err := controlplane.StartEtcdOnDataDir(t.Context(), "", e.dataDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Stop()
	n, h := gdEtcdHash(t, restored.URL)
	if n != e.etcdKeys || h != e.etcdHash {
		t.Errorf("restored etcd: %d keys, hash %s; want the shoot's %d keys, hash %s", n, h, e.etcdKeys, e.etcdHash)
	}
	if e.etcdKeys < gdShootKeys*9/10 {
		t.Errorf("only %d keys in the shoot's etcd", e.etcdKeys)
	}
}

// assertExtensions checks every extension resource of before in after: there, no longer
// annotated, its last operation op Succeeded, its spec unchanged; it returns them.
func assertExtensions(t *testing.T, before, after map[string]*unstructured.Unstructured, op string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for k, b := range before {
		if !isExtensionKey(k) {
			continue
		}
		a := after[k]
		if a == nil {
			t.Errorf("%s is gone", k)
			continue
		}
		if _, ok := a.GetAnnotations()[gdOperation]; ok {
			t.Errorf("%s still annotated %s", k, gdOperation)
		}
		if got := str(a, "status", "lastOperation", "type") + " " + str(a, "status", "lastOperation", "state"); got != op+" Succeeded" {
			t.Errorf("%s lastOperation %s, want %s Succeeded", k, got, op)
		}
		if normalized(a.Object["spec"]) != normalized(b.Object["spec"]) {
			t.Errorf("%s spec changed: %s", k, normalized(a.Object["spec"]))
		}
		out = append(out, a)
	}
	return out
}

func isExtensionKey(k string) bool {
	for _, x := range gdExtensions {
		if strings.HasPrefix(k, x.resource+" ") {
			return true
		}
	}
	return false
}

func gdKeyOf(e *gdEnv, kind, name string) string {
	for _, x := range gdExtensions {
		if x.kind == kind {
			if kind == "BackupEntry" {
				return x.resource + " /" + name
			}
			return x.resource + " " + gdTechnicalID + "/" + name
		}
	}
	return ""
}

// gdFiles is the sha256 of every file under dir, by path relative to dir.
func gdFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		sum := sha256.Sum256(b)
		out[filepath.ToSlash(rel)] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}

// assertUntouched checks that the garden and the source seed hold the objects of before at the
// same resourceVersions (and no others), that no extension was asked for an operation, that
// nothing was restored on the destination, and that the buckets hold what they held.
func (e *gdEnv) assertUntouched(t *testing.T, what string, before map[string]*unstructured.Unstructured) {
	t.Helper()
	after := e.gdObjects(t)
	if len(after) != len(before) {
		t.Errorf("%s: %d objects, %d before", what, len(after), len(before))
	}
	for k, b := range before {
		if a := after[k]; a == nil || a.GetResourceVersion() != b.GetResourceVersion() {
			t.Errorf("%s: %s changed", what, k)
		}
	}
	if ops := e.ctrl.Ops(); len(ops) > 0 {
		t.Errorf("%s: extension operations %v", what, ops)
	}
	if _, err := os.Stat(e.dataDir); !os.IsNotExist(err) {
		t.Errorf("%s: the destination data directory exists (%v)", what, err)
	}
	if files := e.buckets.files(t, true, ""); len(files) > 0 {
		t.Errorf("%s: files in the destination bucket: %v", what, files)
	}
	if files := e.buckets.files(t, false, e.backupEntry()); normalized(files) != normalized(e.earlierBackupSum) {
		t.Errorf("%s: source bucket %v, want %v", what, files, e.earlierBackupSum)
	}
}

// TestGardenerMigrates moves the shoot's control plane from seed-a to seed-b, with the seeds'
// backups in folders and in S3 buckets (two servers, credentials from the Secrets the seeds
// name); applied again, the plan changes nothing.
func TestGardenerMigrates(t *testing.T) {
	for _, tc := range []struct {
		name string
		s3   bool
	}{{"folders", false}, {"s3 buckets", true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := startGardener(t, tc.s3)
			before := e.gdObjects(t)
			r := e.run(t, nil, false, e.planArgs()...)
			if r.Code != 0 {
				t.Fatalf("apply exited %d\n%s", r.Code, r)
			}
			assertGardenerMigrated(t, e, before)

			migrated := e.gdObjects(t)
			ops := e.ctrl.Ops()
			state := func() string {
				return normalized([]map[string]string{e.buckets.files(t, false, ""), e.buckets.files(t, true, ""), gdFiles(t, e.dataDir)})
			}
			buckets := state()
			r2 := e.run(t, nil, true, e.planArgs("--run-id", "again")...)
			if r2.Code != 0 {
				t.Fatalf("second apply exited %d\n%s", r2.Code, r2)
			}
			j := loadJournal(t, e.dir, "again")
			for _, rec := range j.Steps {
				if want := map[bool]engine.StepStatus{true: engine.StepSucceeded, false: engine.StepSkipped}[rec.ID == "shoot"]; rec.Status != want {
					t.Errorf("second apply: step %s %s, want %s", rec.ID, rec.Status, want)
				}
			}
			for k, m := range migrated {
				if a := e.gdObjects(t)[k]; a == nil || a.GetResourceVersion() != m.GetResourceVersion() {
					t.Errorf("second apply changed %s", k)
				}
			}
			if got := e.ctrl.Ops(); len(got) != len(ops) {
				t.Errorf("second apply asked for extension operations: %v", got[len(ops):])
			}
			if got := state(); got != buckets {
				t.Error("second apply changed the buckets or the restored data directory")
			}
			e.buckets.assertNoSecrets(t, e.dir, r.Stdout, r.Stderr, r2.Stdout, r2.Stderr)
		})
	}
}

// TestGardenerKilledAndResumed kills planrun three times. First after the extensions were
// annotated, with the checkpoint then set back to "migrate-controlplane running", as if the
// process had died between its API calls and its checkpoint; the extension controller migrates
// both ControlPlanes meanwhile, and the step run again must not ask for a second migration. Then
// right after the final snapshot, and at the first file of the backup copy. The resumed run
// reaches the same end state.
func TestGardenerKilledAndResumed(t *testing.T) {
	e := startGardener(t, true)
	before := e.gdObjects(t)
	r := e.run(t, &plantest.KillPoint{Event: engine.EventStepSucceeded, Step: "migrate-backupentry"}, false, e.planArgs()...)
	if !r.Killed {
		t.Fatalf("not killed after migrate-backupentry (exit %d)\n%s", r.Code, r)
	}
	if got := e.shootState(t); got != "seed-b seed-a Migrate Processing" {
		t.Errorf("Shoot while the run is dead: %s", got)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Contains(e.ctrl.Ops(), "migrate ControlPlane web (kube-apiserver replicas 0)") || !slices.Contains(e.ctrl.Ops(), "migrate ControlPlane web-exposure (kube-apiserver replicas 0)") {
		if time.Now().After(deadline) {
			t.Fatalf("the ControlPlanes were not migrated: %v", e.ctrl.Ops())
		}
		time.Sleep(100 * time.Millisecond)
	}
	store := engine.NewDirStore(filepath.Join(e.dir, "runs"))
	j := loadJournal(t, e.dir, "r")
	rec := j.Step("migrate-controlplane")
	rec.Status, rec.Outputs, rec.Finished = engine.StepRunning, nil, nil
	if err := store.Save(t.Context(), j); err != nil {
		t.Fatal(err)
	}

	r = e.run(t, &plantest.KillPoint{Event: engine.EventStepSucceeded, Step: "final-snapshot"}, false, e.resumeArgs()...)
	if !r.Killed {
		t.Fatalf("not killed after final-snapshot (exit %d)\n%s", r.Code, r)
	}
	// Run again, the step still records both ControlPlanes for its undo (their prior values
	// from the first attempt), and asked for no second migration (checked at the end).
	if rec := loadJournal(t, e.dir, "r").Step("migrate-controlplane"); rec.Status != engine.StepSucceeded || plantest.Num(t, rec.Outputs, "count") != 2 {
		t.Errorf("migrate-controlplane run again: %s, outputs %v; want Succeeded with both ControlPlanes on its undo record", rec.Status, rec.Outputs)
	}
	r = e.run(t, &plantest.KillPoint{Event: engine.EventStepProgress, Step: "copy-backups", MinDone: 1}, false, e.resumeArgs()...)
	if !r.Killed {
		t.Fatalf("not killed during copy-backups (exit %d)\n%s", r.Code, r)
	}
	t.Logf("killed with copy-backups %s, %d files in the destination bucket", loadJournal(t, e.dir, "r").Step("copy-backups").Status,
		len(e.buckets.files(t, true, e.backupEntry())))

	r = e.run(t, nil, false, e.resumeArgs()...)
	if r.Code != 0 {
		t.Fatalf("resume exited %d\n%s", r.Code, r)
	}
	if st := loadJournal(t, e.dir, "r").Status; st != engine.RunSucceeded {
		t.Fatalf("run %s", st)
	}
	assertGardenerMigrated(t, e, before) // each extension migrated exactly once
}

// TestGardenerRollsBack injects a failure after the control plane was stopped and migrated: the
// run rolls back, every extension resource is taken back by its controller (restore), the
// kube-apiserver runs again, the shoot is as it was, the shoot's etcd untouched, and a data
// directory the run restored is removed again.
func TestGardenerRollsBack(t *testing.T) {
	for _, tc := range []struct {
		name       string
		inject     func(t *testing.T, e *gdEnv)
		failedStep string
		wantError  func(e *gdEnv) string
		restored   bool // restore-etcd succeeded before the failure
	}{
		{"data directory not empty", func(t *testing.T, e *gdEnv) {
			if err := os.MkdirAll(e.dataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(e.dataDir, "someone-elses"), []byte("data"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "restore-etcd", func(e *gdEnv) string { return "dataDir: " + e.dataDir + " is not empty" }, false},
		{"last status write refused", func(t *testing.T, e *gdEnv) {
			// An admission policy in the garden refuses the shoot's final Restore Succeeded.
			applyFile(t, e.sdyn, "../testdata/gardener/refuse-restore-succeeded.yaml")
			e.waitRefused(t)
		}, "status-done", func(*gdEnv) string { return "the test refuses Restore Succeeded" }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startGardener(t, true)
			before := e.gdObjects(t)
			tc.inject(t, e)
			r := e.run(t, nil, false, e.planArgs()...)
			if r.Code != 1 {
				t.Fatalf("apply exited %d, want 1\n%s", r.Code, r)
			}
			j := loadJournal(t, e.dir, "r")
			if j.Status != engine.RunRolledBack {
				t.Fatalf("run %s, want RolledBack\n%s", j.Status, r)
			}
			if rec := j.Step(tc.failedStep); rec.Status != engine.StepFailed || !strings.Contains(rec.Error, tc.wantError(e)) {
				t.Errorf("%s %s: %s; want it failed with %q", tc.failedStep, rec.Status, rec.Error, tc.wantError(e))
			}
			if rec := j.Step("restore-etcd"); tc.restored && rec.Status != engine.StepRolledBack {
				t.Errorf("restore-etcd %s, want RolledBack", rec.Status)
			}
			if got := e.shootState(t); got != "seed-a seed-a Reconcile Succeeded" {
				t.Errorf("Shoot after the rollback: %s, want seed-a seed-a Reconcile Succeeded", got)
			}
			if r := e.apiServerReplicas(t); r != "2" {
				t.Errorf("kube-apiserver after the rollback: replicas %s, want 2", r)
			}
			after := e.gdObjects(t)
			shootKey := "shoots " + gdGardenNS + "/" + gdShoot
			if normalized(withoutVolatile(after[shootKey])) != normalized(withoutVolatile(before[shootKey])) {
				t.Errorf("Shoot after the rollback:\n%s\nwant\n%s", normalized(withoutVolatile(after[shootKey])), normalized(withoutVolatile(before[shootKey])))
			}
			for k, b := range before {
				if strings.HasPrefix(k, "seeds ") || k == "deployments "+gdTechnicalID+"/gardener-resource-manager" {
					if a := after[k]; a == nil || a.GetResourceVersion() != b.GetResourceVersion() {
						t.Errorf("%s changed", k)
					}
				}
			}
			var restores []string
			for _, a := range assertExtensions(t, before, after, "Restore") {
				restores = append(restores, fmt.Sprintf("restore %s %s (kube-apiserver replicas 0)", a.GetKind(), a.GetName()))
			}
			// Each extension migrated once, then restored once, before the kube-apiserver was
			// started again.
			var ops []string
			for _, op := range e.ctrl.Ops() {
				if strings.HasPrefix(op, "restore ") {
					ops = append(ops, op)
				}
			}
			sort.Strings(restores)
			if strings.Join(ops, "\n") != strings.Join(restores, "\n") {
				t.Errorf("restore operations:\n%s\nwant one per extension resource:\n%s", strings.Join(ops, "\n"), strings.Join(restores, "\n"))
			}
			if n, h := gdEtcdHash(t, e.etcd.URL); n != e.etcdKeys || h != e.etcdHash {
				t.Errorf("the shoot's etcd changed: %d keys, hash %s", n, h)
			}
			if tc.restored {
				if _, err := os.Stat(e.dataDir); !os.IsNotExist(err) {
					t.Errorf("the restored data directory is still there (%v)", err)
				}
			} else if entries, _ := os.ReadDir(e.dataDir); len(entries) != 1 || entries[0].Name() != "someone-elses" {
				t.Errorf("the data directory changed: %v", entries)
			}
		})
	}
}

// waitRefused waits until the garden's admission refuses the shoot's Restore Succeeded (a
// new policy takes a moment to be enforced), proven by a dry-run status write.
func (e *gdEnv) waitRefused(t *testing.T) {
	t.Helper()
	patch := []byte(`{"status":{"lastOperation":{"type":"Restore","state":"Succeeded"}}}`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := e.sdyn.Resource(shootGVR).Namespace(gdGardenNS).Patch(t.Context(), gdShoot, types.MergePatchType, patch,
			metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}}, "status")
		if err != nil && strings.Contains(err.Error(), "the test refuses Restore Succeeded") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the policy does not refuse the write: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestGardenerDryRunAndPrechecks: a dry run changes nothing and says, step by step, what it would
// do, and finds a destination data directory that is not empty; then the plan refuses a
// destination seed without backups, an unhealthy one, one being deleted, a source seed without
// backups and a shoot in the middle of another operation, each with a message that says why,
// changing nothing.
func TestGardenerDryRunAndPrechecks(t *testing.T) {
	e := startGardener(t, false)
	before := e.gdObjects(t)

	r := e.run(t, nil, true, append(e.planArgs(), "--dry-run")...)
	if r.Code != 0 {
		t.Fatalf("dry run exited %d\n%s", r.Code, r)
	}
	t.Logf("dry run output:\n%s", r.Stdout)
	for _, want := range []string{
		"▶ seed-name (kube.patch): merge patch Shoot garden-dev/web", "✔ seed-name dry run: not applied",
		"▶ status-migrate (kube.patch): merge patch of the status of Shoot garden-dev/web", "✔ status-migrate dry run: not applied",
		"▶ stop-apiserver (kube.scale): scale Deployment shoot--dev--web/kube-apiserver to 0", "✔ stop-apiserver dry run: not applied",
		"▶ migrate-worker (kube.patch): merge patch every Worker in namespace shoot--dev--web", "✔ migrate-worker dry run: not applied",
		"▶ migrate-backupentry (kube.patch): merge patch BackupEntry " + e.backupEntry(), "✔ migrate-backupentry dry run: not applied",
		"▶ shoot-state (kube.apply)", "✔ shoot-state dry run: not applied",
		"▶ final-snapshot (etcd.snapshot): snapshot datastore \"shoot\" to " + e.buckets.snapshotLocation(e.backupEntry()), "✔ final-snapshot dry run: not applied",
		"▶ copy-backups (files.copy)", "✔ copy-backups dry run: not applied",
		"▶ status-restore (kube.patch)", "✔ status-restore dry run: not applied",
		"▶ restore-etcd (etcd.restore)", "✔ restore-etcd dry run: not applied",
		"▶ status-done (kube.patch)", "✔ status-done dry run: not applied",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("the dry run does not say %q", want)
		}
	}
	e.assertUntouched(t, "after the dry run", before)
	if _, err := os.Stat(filepath.Join(e.dir, "runs", "r")); !os.IsNotExist(err) {
		t.Errorf("the dry run left a run folder (%v)", err)
	}

	backup := `{"spec":{"backup":{"provider":"local","region":"local","credentialsRef":{"apiVersion":"v1","kind":"Secret","name":"backup","namespace":"garden"}}}}`
	for _, tc := range []struct {
		name   string
		change func(t *testing.T) (undo func())
		want   string
		dryRun bool // the refusal comes from a dry run
	}{
		{"dry run: destination data directory not empty", func(t *testing.T) func() {
			if err := os.MkdirAll(e.dataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(e.dataDir, "member"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return func() { os.RemoveAll(e.dataDir) }
		}, `step "restore-etcd" failed: dataDir: ` + e.dataDir + ` is not empty`, true},
		{"destination without backup", func(t *testing.T) func() {
			e.mergePatch(t, seedGVR, "", gdDestSeed, `{"spec":{"backup":null}}`, "")
			return func() { e.mergePatch(t, seedGVR, "", gdDestSeed, backup, "") }
		}, `step "seeds-have-backups" failed: assertion failed: destination seed seed-b has no backup configuration (.spec.backup); control-plane migration moves etcd backups between the seeds' buckets`, false},
		{"source without backup", func(t *testing.T) func() {
			e.mergePatch(t, seedGVR, "", gdSourceSeed, `{"spec":{"backup":null}}`, "")
			return func() { e.mergePatch(t, seedGVR, "", gdSourceSeed, backup, "") }
		}, `step "seeds-have-backups" failed: assertion failed: source seed seed-a has no backup configuration (.spec.backup); control-plane migration moves etcd backups between the seeds' buckets`, false},
		{"shoot busy", func(t *testing.T) func() {
			e.mergePatch(t, shootGVR, gdGardenNS, gdShoot, `{"status":{"lastOperation":{"type":"Reconcile","state":"Processing","progress":40}}}`, "status")
			return func() {
				e.mergePatch(t, shootGVR, gdGardenNS, gdShoot, `{"status":{"lastOperation":{"type":"Reconcile","state":"Succeeded","progress":100}}}`, "status")
			}
		}, `step "shoot-ready" failed: assertion failed: Shoot garden-dev/web has spec.seedName seed-a, status.seedName seed-a, technicalID shoot--dev--web and last operation Reconcile Processing; the plan moves a shoot whose last operation Succeeded and that is not being moved to another seed`, false},
		{"unhealthy", func(t *testing.T) func() {
			e.mergePatch(t, seedGVR, "", gdDestSeed, `{"status":{"conditions":`+normalized(gdConditions("False", "istio-ingressgateway is not available"))+`}}`, "status")
			return func() {
				e.mergePatch(t, seedGVR, "", gdDestSeed, `{"status":{"conditions":`+normalized(gdConditions("True", ""))+`}}`, "status")
			}
		}, `step "destination-healthy" failed: assertion failed: destination seed seed-b is not healthy: SeedSystemComponentsHealthy=False (istio-ingressgateway is not available)`, false},
		{"being deleted", func(t *testing.T) func() {
			e.mergePatch(t, seedGVR, "", gdDestSeed, `{"metadata":{"finalizers":["gardener"]}}`, "")
			if err := e.sdyn.Resource(seedGVR).Delete(t.Context(), gdDestSeed, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}, `step "destination-healthy" failed: assertion failed: destination seed seed-b is being deleted`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			undo := tc.change(t)
			changed := e.gdObjects(t)
			args := e.planArgs("--run-id", "refused-"+strings.ReplaceAll(tc.name, " ", "-"))
			if tc.dryRun {
				args = append(args, "--dry-run")
			}
			r := e.run(t, nil, true, args...)
			if r.Code != 1 || !strings.Contains(r.Stdout+r.Stderr, tc.want) {
				t.Errorf("exit %d\n%s\n%s\nwant the error %q", r.Code, r.Stdout, r.Stderr, tc.want)
			}
			if tc.dryRun {
				// The dry run found what the real run would fail on; the data directory is
				// the test's own, removed before checking that nothing else changed.
				if entries, _ := os.ReadDir(e.dataDir); len(entries) != 1 {
					t.Errorf("the data directory changed: %v", entries)
				}
				undo()
				e.assertUntouched(t, "after the dry run", changed)
				return
			}
			e.assertUntouched(t, "after the refusal", changed)
			undo()
		})
	}
}

func (e *gdEnv) mergePatch(t *testing.T, gvr schema.GroupVersionResource, ns, name, patch, sub string) {
	t.Helper()
	var r dynamic.ResourceInterface = e.sdyn.Resource(gvr)
	if ns != "" {
		r = e.sdyn.Resource(gvr).Namespace(ns)
	}
	var subs []string
	if sub != "" {
		subs = []string{sub}
	}
	if _, err := r.Patch(t.Context(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, subs...); err != nil {
		t.Fatal(err)
	}
}
