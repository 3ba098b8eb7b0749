package kubebackup_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiresource "k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"planrun.dev/planrun/engine"
	_ "planrun.dev/planrun/steps"
	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubebackup"
	"planrun.dev/planrun/steps/storage"
)

var clusters []*kubetest.Cluster

func TestMain(m *testing.M) { kubetest.Main(m, 1, &clusters) }

func main() map[string]*kubetest.Cluster { return map[string]*kubetest.Cluster{"main": clusters[0]} }

var ctx = context.Background()

func configMap(name string, labels map[string]string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Data: data}
}

// createMany creates n objects in parallel.
func createMany(t testing.TB, n int, create func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	next := make(chan int)
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := create(i); err != nil {
					errs <- err
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func readManifest(t *testing.T, dir string) *archive.Manifest {
	t.Helper()
	return readManifestAt(t, storage.OpenLocal(dir))
}

func readManifestAt(t *testing.T, loc storage.Location) *archive.Manifest {
	t.Helper()
	m, err := archive.ReadManifest(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func resource(t *testing.T, m *archive.Manifest, gr string) archive.Resource {
	t.Helper()
	for _, r := range m.Resources {
		if r.GroupResource() == gr {
			return r
		}
	}
	t.Fatalf("manifest has no resource %s", gr)
	return archive.Resource{}
}

// readObjects reads every object of a resource in a backup folder.
func readObjects(t *testing.T, dir string, r archive.Resource) []map[string]any {
	t.Helper()
	return readObjectsAt(t, storage.OpenLocal(dir), archive.None, r)
}

// readObjectsAt reads every object of a resource in a backup stored with compression c.
func readObjectsAt(t *testing.T, loc storage.Location, c archive.Compression, r archive.Resource) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, f := range r.Files {
		rd, err := archive.Open(ctx, loc, c, f)
		if err != nil {
			t.Fatal(err)
		}
		for {
			line, err := rd.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			var obj map[string]any
			if err := json.Unmarshal(line, &obj); err != nil {
				t.Fatalf("%s: %v", f.Path, err)
			}
			out = append(out, obj)
		}
		rd.Close()
	}
	return out
}

func jsonRoundTrip(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// outputs of a step as later steps and the checkpoint see them (after a JSON round trip).
func outputs(t *testing.T, run *kubetest.Run, step string) map[string]any {
	t.Helper()
	return jsonRoundTrip(t, run.Outputs(t, step))
}

func TestBackupNamespace(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	for i := 0; i < 3; i++ {
		if _, err := c.Typed.CoreV1().ConfigMaps(ns).Create(ctx, configMap(fmt.Sprintf("cm-%d", i), nil, map[string]string{"i": fmt.Sprint(i), "multi": "line\none"}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s-%d", i)}, StringData: map[string]string{"password": "hunter" + fmt.Sprint(i)}}
		if _, err := c.Typed.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	one := int32(1)
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{
		Replicas: &one, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}}}}}
	if _, err := c.Typed.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	crName := ns + "-reader"
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: crName}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}}}}
	if _, err := c.Typed.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Typed.RbacV1().ClusterRoles().Delete(ctx, crName, metav1.DeleteOptions{}) })

	dir := filepath.Join(t.TempDir(), "backup")
	run := kubetest.Apply(t, main(), fmt.Sprintf(`
steps:
  - id: b
    type: kube.backup
    with:
      to: %s
      resources: [configmaps, secrets, {apiVersion: apps/v1, kind: Deployment}, clusterroles.rbac.authorization.k8s.io]
      namespaces: [%s]
      includeClusterScoped: true
  - {id: v, type: kube.verifyBackup, with: {dir: "${{ steps.b.outputs.dir }}"}}
`, dir, ns), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	m := readManifest(t, dir)
	if m.Cluster.Name != "main" || m.Cluster.Server != c.CP.Config.Host || !strings.HasPrefix(m.Cluster.ServerVersion, "v1.") {
		t.Errorf("cluster info %+v", m.Cluster)
	}
	clusterRoles, err := c.Typed.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		count      int64
		version    string
		kind       string
		namespaced bool
		files      int
	}{
		"configmaps":                             {3, "v1", "ConfigMap", true, 1},
		"secrets":                                {2, "v1", "Secret", true, 1},
		"deployments.apps":                       {1, "v1", "Deployment", true, 1},
		"clusterroles.rbac.authorization.k8s.io": {int64(len(clusterRoles.Items)), "v1", "ClusterRole", false, 1},
	}
	if len(m.Resources) != len(want) {
		t.Fatalf("manifest resources %+v", m.Resources)
	}
	var total int64
	for gr, w := range want {
		r := resource(t, m, gr)
		if r.Count != w.count || r.Version != w.version || r.Kind != w.kind || r.Namespaced != w.namespaced || len(r.Files) != w.files {
			t.Errorf("%s: %+v, want %+v", gr, r, w)
		}
		total += r.Count
		for _, f := range r.Files {
			data, err := os.ReadFile(filepath.Join(dir, f.Path))
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(data)
			if hex.EncodeToString(sum[:]) != f.SHA256 || int64(len(data)) != f.Bytes || f.Count != r.Count {
				t.Errorf("%s: manifest entry %+v does not match the file (%d bytes)", f.Path, f, len(data))
			}
			wantNS := ns
			if !w.namespaced {
				wantNS = ""
			}
			if f.Namespace != wantNS || f.Path != archive.FilePath(r.Group, r.Resource, wantNS, archive.None) {
				t.Errorf("file %+v", f)
			}
			st, _ := os.Stat(filepath.Join(dir, f.Path))
			wantMode := os.FileMode(0o644)
			if gr == "secrets" {
				wantMode = 0o600
			}
			if st.Mode().Perm() != wantMode {
				t.Errorf("%s: mode %v, want %v", f.Path, st.Mode().Perm(), wantMode)
			}
		}
	}
	if m.Objects != total {
		t.Errorf("manifest objects %d, want %d", m.Objects, total)
	}
	out := outputs(t, run, "b")
	if out["objects"] != float64(total) || out["bytes"] != float64(m.Bytes) || out["dir"] != dir || out["files"] != float64(4) {
		t.Errorf("outputs %v", out)
	}
	if v := outputs(t, run, "v"); v["objects"] != float64(total) || v["files"] != float64(4) || v["bytes"] != float64(m.Bytes) {
		t.Errorf("verify outputs %v", v)
	}

	// Every object reads back equal to the live one, with its apiVersion and kind.
	for gr, gvr := range map[string]schema.GroupVersionResource{
		"configmaps":       {Version: "v1", Resource: "configmaps"},
		"secrets":          {Version: "v1", Resource: "secrets"},
		"deployments.apps": {Group: "apps", Version: "v1", Resource: "deployments"},
	} {
		objs := readObjects(t, dir, resource(t, m, gr))
		for _, obj := range objs {
			md := obj["metadata"].(map[string]any)
			live := jsonRoundTrip(t, c.Get(t, gvr, ns, md["name"].(string)).Object)
			if !reflect.DeepEqual(obj, live) {
				t.Errorf("%s %s: backed up\n%v\nlive\n%v", gr, md["name"], obj, live)
			}
		}
	}
	var found bool
	for _, obj := range readObjects(t, dir, resource(t, m, "clusterroles.rbac.authorization.k8s.io")) {
		if obj["metadata"].(map[string]any)["name"] == crName {
			found = obj["kind"] == "ClusterRole" && obj["apiVersion"] == "rbac.authorization.k8s.io/v1"
		}
	}
	if !found {
		t.Errorf("ClusterRole %s is not in the backup", crName)
	}

	// Damage a file: verifyBackup fails, naming it.
	p := filepath.Join(dir, "resources/configmaps", ns+".jsonl")
	data, _ := os.ReadFile(p)
	data[10] ^= 1
	os.WriteFile(p, data, 0o644)
	run = kubetest.Apply(t, main(), fmt.Sprintf("steps:\n  - {id: v, type: kube.verifyBackup, with: {dir: %s}}\n", dir), kubetest.Options{})
	wantErr := fmt.Sprintf(`step "v" failed: backup %s is damaged (1 problems): resources/configmaps/%s.jsonl: sha256 `, dir, ns)
	if run.Err == nil || !strings.Contains(run.Err.Error(), wantErr) || strings.Contains(run.Err.Error(), "\n") {
		t.Fatalf("error %v\nwant %q", run.Err, wantErr)
	}
}

// TestBackupAllNamespacesSelectorPaging lists across all namespaces in pages: 1,200 matching
// ConfigMaps in one namespace, 2 in another, a few that do not match.
func TestBackupAllNamespacesSelectorPaging(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns, ns2 := c.Namespace(t), c.Namespace(t)
	sel := map[string]string{"suite": ns}
	createMany(t, 1200, func(i int) error {
		_, err := c.Typed.CoreV1().ConfigMaps(ns).Create(ctx, configMap(fmt.Sprintf("cm-%04d", i), sel, map[string]string{"i": fmt.Sprint(i)}), metav1.CreateOptions{})
		return err
	})
	for i := 0; i < 3; i++ {
		if _, err := c.Typed.CoreV1().ConfigMaps(ns).Create(ctx, configMap(fmt.Sprintf("other-%d", i), nil, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		if _, err := c.Typed.CoreV1().ConfigMaps(ns2).Create(ctx, configMap(fmt.Sprintf("cm-%d", i), sel, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	dir, dir2 := filepath.Join(t.TempDir(), "all"), filepath.Join(t.TempDir(), "excl")
	run := kubetest.Apply(t, main(), fmt.Sprintf(`
steps:
  - {id: all, type: kube.backup, with: {to: %s, resources: [configmaps], labelSelector: "suite=%s"}}
  - {id: excl, type: kube.backup, with: {to: %s, resources: [configmaps], labelSelector: "suite=%s", excludeNamespaces: [%s]}}
`, dir, ns, dir2, ns, ns2), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	r := resource(t, readManifest(t, dir), "configmaps")
	if r.Count != 1202 || len(r.Files) != 2 || r.Files[0].Namespace != ns || r.Files[0].Count != 1200 || r.Files[1].Namespace != ns2 || r.Files[1].Count != 2 {
		t.Fatalf("manifest %+v", r)
	}
	names := map[string]bool{}
	for _, obj := range readObjects(t, dir, r) {
		md := obj["metadata"].(map[string]any)
		key := md["namespace"].(string) + "/" + md["name"].(string)
		if names[key] {
			t.Fatalf("%s twice", key)
		}
		names[key] = true
	}
	if len(names) != 1202 || !names[ns+"/cm-1199"] || names[ns+"/other-0"] {
		t.Fatalf("%d objects", len(names))
	}
	r = resource(t, readManifest(t, dir2), "configmaps")
	if r.Count != 1200 || len(r.Files) != 1 || r.Files[0].Namespace != ns {
		t.Fatalf("with excludeNamespaces: %+v", r)
	}
	if got := outputs(t, run, "all")["resources"]; !reflect.DeepEqual(got, []any{map[string]any{"resource": "configmaps", "count": float64(1202)}}) {
		t.Fatalf("outputs.resources %v", got)
	}
}

// TestBackupAllResources backs up everything of a namespace: namespaced resources and the
// Namespace object, not other cluster-scoped resources, nor events.
func TestBackupAllResources(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	if _, err := c.Typed.CoreV1().ConfigMaps(ns).Create(ctx, configMap("a", nil, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "e"}, InvolvedObject: corev1.ObjectReference{Kind: "ConfigMap", Name: "a", Namespace: ns}, Reason: "Test"}
	if _, err := c.Typed.CoreV1().Events(ns).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "b")
	run := kubetest.Apply(t, main(), fmt.Sprintf("steps:\n  - {id: b, type: kube.backup, with: {to: %s, allResources: true, namespaces: [%s]}}\n", dir, ns), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	m := readManifest(t, dir)
	var grs []string
	for _, r := range m.Resources {
		grs = append(grs, r.GroupResource())
		if !r.Namespaced && r.GroupResource() != "namespaces" {
			t.Errorf("cluster-scoped %s backed up", r.GroupResource())
		}
		if r.Resource == "events" {
			t.Errorf("%s backed up", r.GroupResource())
		}
	}
	if !sort.StringsAreSorted(grs) {
		t.Errorf("resources not sorted: %v", grs)
	}
	if r := resource(t, m, "configmaps"); r.Count != 1 {
		t.Errorf("configmaps %+v", r)
	}
	resource(t, m, "deployments.apps")
	nsr := resource(t, m, "namespaces")
	objs := readObjects(t, dir, nsr)
	if len(objs) != 1 || objs[0]["metadata"].(map[string]any)["name"] != ns || objs[0]["kind"] != "Namespace" {
		t.Errorf("namespaces: %v", objs)
	}
	// v1 Endpoints, deprecated, are left to the EndpointSlices unless asked for.
	resource(t, m, "endpointslices.discovery.k8s.io")
	if slices.Contains(grs, "endpoints") {
		t.Error("v1 Endpoints backed up by default though EndpointSlices are served")
	}
	if w := run.Warnings; len(w) > 0 {
		t.Errorf("warnings: %v", w)
	}
	dir = filepath.Join(t.TempDir(), "with-endpoints")
	run = kubetest.Apply(t, main(), fmt.Sprintf("steps:\n  - {id: b, type: kube.backup, with: {to: %s, allResources: true, includeEndpoints: true, namespaces: [%s]}}\n", dir, ns), kubetest.Options{})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	resource(t, readManifest(t, dir), "endpoints")
}

func TestBackupDryRunRerunAndFolders(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns := c.Namespace(t)
	for i := 0; i < 4; i++ {
		if _, err := c.Typed.CoreV1().ConfigMaps(ns).Create(ctx, configMap(fmt.Sprintf("cm-%d", i), nil, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Typed.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	plan := func(dir, extra string) string {
		return fmt.Sprintf("steps:\n  - {id: s, type: kube.backup, with: {to: %s, resources: [configmaps, secrets], namespaces: [%s]%s}}\n", dir, ns, extra)
	}

	t.Run("dry run writes nothing", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "b")
		run := kubetest.Apply(t, main(), plan(dir, ""), kubetest.Options{DryRun: true})
		if run.Err != nil {
			t.Fatal(run.Err)
		}
		out := outputs(t, run, "s")
		if out["dryRun"] != true || out["objects"] != float64(5) || out["bytes"].(float64) < 100 {
			t.Fatalf("outputs %v", out)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Fatalf("dry run created %s: %v", dir, err)
		}
	})

	t.Run("run again after a crash replaces the backup", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "b")
		if run := kubetest.Apply(t, main(), plan(dir, ""), kubetest.Options{}); run.Err != nil {
			t.Fatal(run.Err)
		}
		first := readManifest(t, dir)
		// A crash in the middle of the next backup: manifest gone, a stray file left over.
		os.Remove(filepath.Join(dir, archive.ManifestFile))
		os.WriteFile(filepath.Join(dir, "resources/configmaps/stale.jsonl"), []byte("{}\n"), 0o644)
		run := kubetest.Apply(t, main(), plan(dir, ""), kubetest.Options{})
		if run.Err != nil {
			t.Fatal(run.Err)
		}
		second := readManifest(t, dir)
		if second.Objects != 5 || !reflect.DeepEqual(first.Resources, second.Resources) {
			t.Fatalf("second backup %+v\nfirst %+v", second.Resources, first.Resources)
		}
		if _, err := os.Stat(filepath.Join(dir, "resources/configmaps/stale.jsonl")); !os.IsNotExist(err) {
			t.Fatalf("stale file kept: %v", err)
		}
		// A complete backup is replaced as well, with fewer resources.
		run = kubetest.Apply(t, main(), fmt.Sprintf("steps:\n  - {id: s, type: kube.backup, with: {to: %s, resources: [secrets], namespaces: [%s]}}\n", dir, ns), kubetest.Options{})
		if run.Err != nil {
			t.Fatal(run.Err)
		}
		if m := readManifest(t, dir); len(m.Resources) != 1 || m.Objects != 1 {
			t.Fatalf("third backup %+v", m)
		}
		if _, err := os.Stat(filepath.Join(dir, "resources/configmaps")); !os.IsNotExist(err) {
			t.Fatalf("configmaps of the previous backup kept: %v", err)
		}
		if _, err := archive.Verify(ctx, storage.OpenLocal(dir), nil); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a folder that is not a backup", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644)
		run := kubetest.Apply(t, main(), plan(dir, ""), kubetest.Options{})
		want := fmt.Sprintf(`step "s" failed: to: %s is not empty and is not a planrun backup folder (set overwrite: true to write into it anyway)`, dir)
		if run.Err == nil || !strings.Contains(run.Err.Error(), want) {
			t.Fatalf("error %v\nwant %q", run.Err, want)
		}
		if _, err := os.Stat(filepath.Join(dir, "resources")); !os.IsNotExist(err) {
			t.Fatal("refused folder was written to")
		}
		if run := kubetest.Apply(t, main(), plan(dir, ", overwrite: true"), kubetest.Options{}); run.Err != nil {
			t.Fatal(run.Err)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "notes.txt")); string(b) != "mine" {
			t.Fatalf("notes.txt: %q %v", b, err)
		}
		if _, err := archive.Verify(ctx, storage.OpenLocal(dir), nil); err != nil {
			t.Fatal(err)
		}
	})
}

func TestBackupErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	ns := clusters[0].Namespace(t)
	dir := filepath.Join(t.TempDir(), "b")
	cases := []struct {
		name     string
		with     string
		clusters map[string]*kubetest.Cluster
		want     string
	}{
		{"unknown resource", `{to: ` + dir + `, resources: [widgets.example.com]}`, nil, `step "s" failed: unknown resource "widgets.example.com" on cluster main`},
		{"unknown kind", `{to: ` + dir + `, resources: [{apiVersion: example.com/v1, kind: Widget}]}`, nil, `step "s" failed: unknown kind example.com/v1 Widget on cluster main (is its CRD installed?)`},
		{"cluster-scoped left out", `{to: ` + dir + `, resources: [clusterroles.rbac.authorization.k8s.io], namespaces: [` + ns + `]}`, nil, `step "s" failed: resources: clusterroles.rbac.authorization.k8s.io is cluster-scoped; set includeClusterScoped: true or remove it`},
		{"missing namespace", `{to: ` + dir + `, resources: [secrets], namespaces: [nope-nope]}`, nil, `step "s" failed: namespaces: namespace "nope-nope" not found`},
		{"forbidden", `{to: ` + dir + `, resources: [secrets]}`, map[string]*kubetest.Cluster{"main": clusters[0].Restricted(t, "nobody")}, `step "s" failed: list secrets: secrets is forbidden: User "nobody" cannot list resource "secrets" in API group "" at the cluster scope`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl := tc.clusters
			if cl == nil {
				cl = main()
			}
			run := kubetest.Apply(t, cl, "steps:\n  - {id: s, type: kube.backup, with: "+tc.with+"}\n", kubetest.Options{})
			kubetest.WantRunError(t, run, tc.want)
			if _, err := os.Stat(filepath.Join(dir, archive.ManifestFile)); !os.IsNotExist(err) {
				t.Fatalf("a failed backup wrote a manifest")
			}
		})
	}
}

// TestBackupConfigErrors: mistakes in with: are found when the plan loads.
func TestBackupConfigErrors(t *testing.T) {
	cases := []struct{ name, with, want string }{
		{"no to", `{resources: [secrets]}`, `step "s": with: missing required field "to"`},
		{"no resources", `{to: b}`, `step "s": with: resources: required unless allResources is true`},
		{"both", `{to: b, resources: [secrets], allResources: true}`, `step "s": with: resources: leave it out when allResources is true`},
		{"bad entry", `{to: b, resources: [apps/v1 Deployment]}`, `step "s": with: resources[0]: "apps/v1 Deployment" is not a resource name such as configmaps or deployments.apps (use {apiVersion: apps/v1, kind: Deployment} for a kind)`},
		{"bad map entry", `{to: b, resources: [{kind: Deployment}]}`, `step "s": with: resources[0]: want a resource name or {apiVersion, kind}`},
		{"bad selector", `{to: b, resources: [secrets], labelSelector: "a in (b"}`, `step "s": with: labelSelector: unable to parse requirement`},
		{"exclude with namespaces", `{to: b, resources: [secrets], namespaces: [a], excludeNamespaces: [b]}`, `step "s": with: excludeNamespaces: only applies when namespaces is empty (all namespaces)`},
		{"bound volumes without namespaces", `{to: b, resources: [persistentvolumeclaims], includeBoundVolumes: true}`, `step "s": with: includeBoundVolumes: only applies with namespaces`},
		{"credentials half named", `{to: s3://b/p, resources: [secrets], credentialsFrom: {name: keys}}`, `step "s": with: credentialsFrom: give both namespace and name of the Secret (got namespace "", name "keys"), or {} for the provider's default credentials`},
		{"unknown scheme", `{to: "ftp://host/b", resources: [secrets]}`, `step "s": with: to: ftp://host/b: scheme ftp:// is not supported`},
		{"bad compression", `{to: b, resources: [secrets], compression: lz4}`, `step "s": with: compression: "lz4" is not one of none, gzip, zstd`},
		{"verify without dir", `{}`, `step "s": with: missing required field "dir"`},
		{"verify credentials half named", `{dir: s3://b/p, credentialsFrom: {namespace: ns}}`, `step "s": with: credentialsFrom: give both namespace and name`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			typ := "kube.backup"
			if strings.HasPrefix(tc.name, "verify") {
				typ = "kube.verifyBackup"
			}
			path := filepath.Join(t.TempDir(), "plan.yaml")
			os.WriteFile(path, []byte("apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: test}\nsteps:\n  - {id: s, type: "+typ+", with: "+tc.with+"}\n"), 0o644)
			_, err := engine.Load(path, engine.LoadOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v\nwant %q", err, tc.want)
			}
		})
	}
}

func TestInspect(t *testing.T) {
	for _, tc := range []struct {
		in, ns, name string
		av, kind     bool
	}{
		{`{"metadata":{"name":"a","namespace":"b"},"data":{"kind":"x"}}`, "b", "a", false, false},
		{`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"namespace":"n","labels":{"name":"z"},"name":"q\"r"}}`, "n", `q"r`, true, true},
		{` { "apiVersion" : "v1" , "x":[{"kind":1},"]}"], "metadata" : { "name" : "s" } } `, "", "s", true, false},
	} {
		ns, name, av, kind := kubebackup.InspectForTest([]byte(tc.in))
		if ns != tc.ns || name != tc.name || av != tc.av || kind != tc.kind {
			t.Errorf("%s: %q %q %v %v", tc.in, ns, name, av, kind)
		}
	}
	for _, tc := range []struct{ in, av, kind, want string }{
		{`{"metadata":{}}`, "v1", "ConfigMap", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}`},
		{`{}`, "v1", "ConfigMap", `{"apiVersion":"v1","kind":"ConfigMap"}`},
		{`{"apiVersion":"x/v1","a":1}`, "x/v1", "W", `{"kind":"W","apiVersion":"x/v1","a":1}`},
	} {
		_, _, av, kind := kubebackup.InspectForTest([]byte(tc.in))
		if got := string(kubebackup.WithTypeMetaForTest([]byte(tc.in), tc.av, tc.kind, av, kind)); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.in, got, tc.want)
		}
	}
}

// TestBackupBoundVolumes: includeBoundVolumes takes the PersistentVolumes of the chosen
// namespaces' claims, and no other PersistentVolume or cluster-scoped object.
func TestBackupBoundVolumes(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	a, b, other := c.Namespace(t), c.Namespace(t), c.Namespace(t)
	prefix := a + "-"
	pv := func(name string, claimNS, claim string) {
		t.Helper()
		v := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: prefix + name},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: apiresource.MustParse("1Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
				PersistentVolumeSource:        corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs.example.com", Path: "/exports/" + name}},
			}}
		if claim != "" {
			v.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: claimNS, Name: claim}
		}
		if _, err := c.Typed.CoreV1().PersistentVolumes().Create(ctx, v, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			c.Typed.CoreV1().PersistentVolumes().Delete(context.Background(), v.Name, metav1.DeleteOptions{})
		})
	}
	pvc := func(ns, name, volume string) {
		t.Helper()
		if _, err := c.Typed.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, VolumeName: volume,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: apiresource.MustParse("1Gi")}}}},
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pv("a-data", a, "data")     // bound to a/data: taken
	pv("b-logs", b, "logs")     // bound to b/logs: taken
	pv("prebound", "", "")      // named by a/pre's volumeName, no claimRef yet: taken
	pv("elsewhere", other, "x") // named by a/stolen's volumeName but bound to other/x: left out
	pv("other", other, "y")     // another namespace's: left out
	pv("free", "", "")          // nobody's: left out
	pvc(a, "data", prefix+"a-data")
	pvc(a, "pre", prefix+"prebound")
	pvc(a, "stolen", prefix+"elsewhere")
	pvc(a, "pending", "")
	pvc(b, "logs", prefix+"b-logs")
	pvc(other, "y", prefix+"other")

	cases := []struct {
		name string
		with string
		want []string // PersistentVolumes in the backup; nil: no persistentvolumes resource
	}{
		{"two namespaces", `namespaces: [` + a + `, ` + b + `], resources: [persistentvolumeclaims], includeBoundVolumes: true`, []string{"a-data", "b-logs", "prebound"}},
		{"one namespace", `namespaces: [` + b + `], resources: [persistentvolumeclaims], includeBoundVolumes: true`, []string{"b-logs"}},
		{"all resources", `namespaces: [` + a + `], allResources: true, includeBoundVolumes: true`, []string{"a-data", "prebound"}},
		{"off", `namespaces: [` + a + `], resources: [persistentvolumeclaims]`, nil},
		{"with includeClusterScoped: every volume", `namespaces: [` + a + `], resources: [persistentvolumes], includeClusterScoped: true, includeBoundVolumes: true`, []string{"a-data", "b-logs", "elsewhere", "free", "other", "prebound"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "b")
			run := kubetest.Apply(t, main(), "steps:\n  - {id: s, type: kube.backup, with: {to: "+dir+", "+tc.with+"}}\n", kubetest.Options{})
			if run.Err != nil {
				t.Fatal(run.Err)
			}
			m := readManifest(t, dir)
			var got []string
			has := false
			for _, r := range m.Resources {
				if r.GroupResource() == "persistentvolumes" {
					has = true
					for _, o := range readObjects(t, dir, r) {
						name := o["metadata"].(map[string]any)["name"].(string)
						if strings.HasPrefix(name, prefix) {
							got = append(got, strings.TrimPrefix(name, prefix))
						}
					}
				}
				if !r.Namespaced && r.GroupResource() != "persistentvolumes" && r.GroupResource() != "namespaces" {
					t.Errorf("cluster-scoped %s in the backup", r.GroupResource())
				}
			}
			sort.Strings(got)
			if tc.want == nil {
				if has {
					t.Errorf("persistentvolumes in the backup: %v", got)
				}
				return
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("persistentvolumes %v, want %v", got, tc.want)
			}
			if _, err := archive.Verify(ctx, storage.OpenLocal(dir), nil); err != nil {
				t.Errorf("verify: %v", err)
			}
		})
	}
}
