package kubebackup_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/s3test"
	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubebackup"
	"planrun.dev/planrun/steps/storage"
)

// startS3 starts a real S3 server with a bucket, its keys in the environment (the SDK's default
// chain, as an operator's shell or a workload identity would give them).
func startS3(t *testing.T, bucket string) *s3test.Server {
	t.Helper()
	srv := s3test.StartForTest(t)
	if err := srv.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return srv
}

// openBucket opens a location on srv with its keys, to look at a backup as a restore would.
func openBucket(t *testing.T, srv *s3test.Server, url string) storage.Location {
	t.Helper()
	creds := storage.NewCredentials("test", map[string][]byte{"accessKeyID": []byte(srv.AccessKey), "secretAccessKey": []byte(srv.SecretKey)})
	loc, err := storage.Open(ctx, url, creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loc.Close() })
	return loc
}

func getObject(t *testing.T, srv *s3test.Server, bucket, key string) []byte {
	t.Helper()
	out, err := srv.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// seedApp creates what the round trip backs up: config maps, Secrets and a Deployment.
func seedApp(t *testing.T, c *kubetest.Cluster, ns string) {
	t.Helper()
	for i := 0; i < 3; i++ {
		if _, err := c.Typed.CoreV1().ConfigMaps(ns).Create(ctx, configMap(fmt.Sprintf("cm-%d", i), map[string]string{"app": "web"}, map[string]string{"value": fmt.Sprintf("value-%d", i), "multi": "line\none"}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s-%d", i)}, Data: map[string][]byte{"password": []byte(fmt.Sprintf("hunter%d", i))}}
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
}

// appState is what a restore must bring back of seedApp's objects: their content by name.
func appState(t *testing.T, c *kubetest.Cluster, ns string) map[string]any {
	t.Helper()
	out := map[string]any{}
	cms, err := c.Typed.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cm := range cms.Items {
		out["ConfigMap/"+cm.Name] = []any{cm.Labels, cm.Data}
	}
	secrets, err := c.Typed.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		out["Secret/"+s.Name] = []any{s.Type, s.Data}
	}
	deps, err := c.Typed.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps.Items {
		out["Deployment/"+d.Name] = d.Spec
	}
	return out
}

func deleteApp(t *testing.T, c *kubetest.Cluster, ns string) {
	t.Helper()
	all := metav1.ListOptions{}
	for _, err := range []error{
		c.Typed.CoreV1().ConfigMaps(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, all),
		c.Typed.CoreV1().Secrets(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, all),
		c.Typed.AppsV1().Deployments(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, all),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := appState(t, c, ns); len(got) != 0 {
		t.Fatalf("left after delete: %v", got)
	}
}

// TestBackupS3RoundTrip: a backup to a bucket prefix, uncompressed and compressed, verified,
// restored after the objects were deleted: every object comes back equal. Files of Secrets are
// recorded 0600 in their objects' metadata.
func TestBackupS3RoundTrip(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	srv := startS3(t, "backups")
	for _, comp := range []archive.Compression{archive.None, archive.Gzip, archive.Zstd} {
		t.Run(comp.String(), func(t *testing.T) {
			ns := c.Namespace(t)
			seedApp(t, c, ns)
			before := appState(t, c, ns)
			prefix := "cluster-a/" + comp.String()
			url := srv.URL("backups", prefix)
			run := kubetest.Apply(t, main(), fmt.Sprintf(`
steps:
  - id: b
    type: kube.backup
    with:
      to: %q
      compression: %s
      resources: [configmaps, secrets, deployments.apps]
      namespaces: [%s]
  - {id: v, type: kube.verifyBackup, with: {dir: "${{ steps.b.outputs.dir }}"}}
`, url, comp, ns), kubetest.Options{})
			if run.Err != nil {
				t.Fatal(run.Err)
			}
			out := outputs(t, run, "b")
			if out["dir"] != url || out["objects"] != float64(6) || out["files"] != float64(3) || out["compression"] != comp.String() {
				t.Fatalf("outputs %v", out)
			}
			if v := outputs(t, run, "v"); v["objects"] != float64(6) || v["bytes"] != out["bytes"] {
				t.Fatalf("verify outputs %v", v)
			}
			m := readManifestAt(t, openBucket(t, srv, url))
			wantVersion := archive.Version
			if comp != archive.None {
				wantVersion = archive.VersionCompressed
				if out["uncompressedBytes"].(float64) <= out["bytes"].(float64) {
					t.Errorf("compressed %v bytes to %v", out["uncompressedBytes"], out["bytes"])
				}
			}
			if m.Version != wantVersion || m.Compression != comp {
				t.Fatalf("manifest version %d compression %q", m.Version, m.Compression)
			}
			for _, r := range m.Resources {
				for _, f := range r.Files {
					head, err := srv.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("backups"), Key: aws.String(prefix + "/" + f.Path)})
					if err != nil {
						t.Fatal(err)
					}
					wantMode := "0644"
					if r.Resource == "secrets" {
						wantMode = "0600"
					}
					if head.Metadata["mode"] != wantMode || aws.ToInt64(head.ContentLength) != f.Bytes || !strings.HasSuffix(f.Path, ".jsonl"+comp.Suffix()) {
						t.Errorf("%s: metadata %v, %d bytes (manifest %d)", f.Path, head.Metadata, aws.ToInt64(head.ContentLength), f.Bytes)
					}
				}
			}

			deleteApp(t, c, ns)
			run = kubetest.Apply(t, main(), fmt.Sprintf("steps:\n  - {id: r, type: kube.restore, with: {from: %q}}\n", url), kubetest.Options{})
			if run.Err != nil {
				t.Fatal(run.Err)
			}
			if r := outputs(t, run, "r"); r["restored"] != float64(6) || r["failed"] != float64(0) {
				t.Fatalf("restore outputs %v", r)
			}
			if after := appState(t, c, ns); !reflect.DeepEqual(after, before) {
				t.Fatalf("restored\n%v\nbacked up\n%v", after, before)
			}
		})
	}
}

// TestBackupS3Damaged: a file of the backup overwritten in the bucket (same size, valid JSON,
// another value) fails kube.verifyBackup and kube.restore, each naming the file in one line.
func TestBackupS3Damaged(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	srv := startS3(t, "damaged")
	ns := c.Namespace(t)
	seedApp(t, c, ns)
	url := srv.URL("damaged", "b")
	if run := kubetest.Apply(t, main(), fmt.Sprintf("steps:\n  - {id: b, type: kube.backup, with: {to: %q, resources: [configmaps, secrets], namespaces: [%s]}}\n", url, ns), kubetest.Options{}); run.Err != nil {
		t.Fatal(run.Err)
	}
	file := "resources/configmaps/" + ns + ".jsonl"
	data := getObject(t, srv, "damaged", "b/"+file)
	if !bytes.Contains(data, []byte("value-1")) {
		t.Fatalf("%s holds no value-1: %s", file, data)
	}
	data = bytes.Replace(data, []byte("value-1"), []byte("value-X"), 1)
	if _, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("damaged"), Key: aws.String("b/" + file), Body: bytes.NewReader(data)}); err != nil {
		t.Fatal(err)
	}

	run := kubetest.Apply(t, main(), fmt.Sprintf("steps:\n  - {id: v, type: kube.verifyBackup, with: {dir: %q}}\n", url), kubetest.Options{})
	kubetest.WantRunError(t, run, fmt.Sprintf(`step "v" failed: backup %s is damaged (1 problems): %s: sha256 `, url, file), ", the manifest says ")

	deleteApp(t, c, ns)
	run = kubetest.Apply(t, main(), fmt.Sprintf("steps:\n  - {id: r, type: kube.restore, with: {from: %q, order: [secrets, configmaps]}}\n", url), kubetest.Options{})
	kubetest.WantRunError(t, run, fmt.Sprintf(`step "r" failed: backup %s: %s: sha256 `, url, file), ", the manifest says ")
}

// TestBackupS3LocationErrors: a missing bucket, refused credentials and an unreachable endpoint
// fail kube.backup, kube.verifyBackup and kube.restore with one line naming the location
// without any secret; the failed run's checkpoint is left, and once the cause is fixed, resume
// finishes the backup.
func TestBackupS3LocationErrors(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	srv := startS3(t, "present")
	down := s3test.StartForTest(t, s3test.Options{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err := down.CreateBucket("present"); err != nil {
		t.Fatal(err)
	}
	down.Kill()
	ns := c.Namespace(t)
	if _, err := c.Typed.CoreV1().ConfigMaps(ns).Create(ctx, configMap("a", nil, map[string]string{"k": "v"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const wrongSecret = "wrongSECRETvalueNEVERtoBEseen0123456789"
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3-keys"}, StringData: map[string]string{"accessKeyID": srv.AccessKey, "secretAccessKey": wrongSecret}}
	if _, err := c.Typed.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	creds := fmt.Sprintf("{namespace: %s, name: s3-keys}", ns)

	cases := []struct {
		name, url, creds, want string
		fix                    func(t *testing.T)
	}{
		{"missing bucket", srv.URL("missing", "b"), "", "bucket does not exist: NoSuchBucket",
			func(t *testing.T) {
				if err := srv.CreateBucket("missing"); err != nil {
					t.Fatal(err)
				}
			}},
		{"wrong credentials", srv.URL("present", "creds"), creds, "access denied",
			func(t *testing.T) {
				secret.StringData["secretAccessKey"] = srv.SecretKey
				if _, err := c.Typed.CoreV1().Secrets(ns).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}},
		{"unreachable endpoint", down.URL("present", "b"), "", "endpoint unreachable",
			func(t *testing.T) {
				if err := down.Restart(); err != nil {
					t.Fatal(err)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			with := ""
			if tc.creds != "" {
				with = ", credentialsFrom: " + tc.creds
			}
			for _, step := range []struct{ typ, with string }{
				{"kube.verifyBackup", fmt.Sprintf("{dir: %q%s}", tc.url, with)},
				{"kube.restore", fmt.Sprintf("{from: %q%s}", tc.url, with)},
			} {
				run := kubetest.Apply(t, main(), "steps:\n  - {id: s, type: "+step.typ+", with: "+step.with+"}\n", kubetest.Options{})
				kubetest.WantRunError(t, run, `step "s" failed: `, tc.url, tc.want)
				plantest.NoSecrets(t, "", run.Err.Error(), srv.SecretKey, wrongSecret)
			}

			body := fmt.Sprintf("steps:\n  - {id: b, type: kube.backup, with: {to: %q, resources: [configmaps], namespaces: [%s]%s}}\n", tc.url, ns, with)
			run := kubetest.Apply(t, main(), body, kubetest.Options{NoRollback: true})
			kubetest.WantRunError(t, run, `step "b" failed: to: `+tc.url+`: `, tc.want)
			plantest.NoSecrets(t, "", run.Err.Error(), srv.SecretKey, wrongSecret)

			tc.fix(t)
			p := kubetest.Load(t, main(), body, kubetest.Options{})
			j, err := (&engine.Runner{Store: run.Store, NoRollback: true}).Resume(context.Background(), "run", func(*engine.Journal) (*engine.Plan, error) { return p, nil })
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			if got := j.Step("b").Outputs["objects"]; fmt.Sprint(got) != "1" {
				t.Fatalf("resumed backup outputs %v", j.Step("b").Outputs)
			}
		})
	}
}

// listCounter counts the list requests of config maps per namespace that pass its proxy.
type listCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func (l *listCounter) before(r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // api v1 namespaces NS configmaps
	if r.Method == http.MethodGet && len(parts) == 5 && parts[2] == "namespaces" && parts[4] == "configmaps" {
		l.mu.Lock()
		l.counts[parts[3]]++
		l.mu.Unlock()
	}
}

func (l *listCounter) get() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]int{}
	for k, v := range l.counts {
		out[k] = v
	}
	return out
}

// checkpointState is the part of kube.backup's checkpoint the test reads.
type checkpointState struct {
	Jobs []struct {
		Key   string         `json:"key"`
		Files []archive.File `json:"files"`
	} `json:"jobs"`
}

// TestBackupResumeSkipsFinishedLists: a backup of eight namespaces to a bucket, by a user who may
// not list the last one, fails part-way with the lists it finished in its checkpoint. Once the
// user may list it, resume lists only what the checkpoint does not hold (counted at a proxy in
// front of the API server: objects added since to a finished namespace are not in the backup),
// and ends with a complete backup that verifies.
func TestBackupResumeSkipsFinishedLists(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	srv := startS3(t, "resume")
	user := "backup-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	var nss []string
	for i := 0; i < 8; i++ {
		ns := c.Namespace(t)
		nss = append(nss, ns)
		for j := 0; j < 3; j++ {
			if _, err := c.Typed.CoreV1().ConfigMaps(ns).Create(ctx, configMap(fmt.Sprintf("cm-%d", j), nil, map[string]string{"j": fmt.Sprint(j)}), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	grant := func(ns string) {
		t.Helper()
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user}, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: user + "-lister"},
			Subjects: []rbacv1.Subject{{Kind: "User", Name: user}}}
		if _, err := c.Typed.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Aggregated roles such as view get their rules from a controller this API server runs
	// without: the test's roles name their rules.
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}}}}
	lister := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: user + "-lister"}, Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list"}}}}
	if _, err := c.Typed.RbacV1().ClusterRoles().Create(ctx, lister, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: user}, RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: user},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: user}}}
	if _, err := c.Typed.RbacV1().ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Typed.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Typed.RbacV1().ClusterRoleBindings().Delete(context.Background(), user, metav1.DeleteOptions{})
		c.Typed.RbacV1().ClusterRoles().Delete(context.Background(), user, metav1.DeleteOptions{})
		c.Typed.RbacV1().ClusterRoles().Delete(context.Background(), user+"-lister", metav1.DeleteOptions{})
	})
	for _, ns := range nss[:7] {
		grant(ns)
	}
	counter := &listCounter{counts: map[string]int{}}
	restricted := map[string]*kubetest.Cluster{"main": c.Through(t, counter.before).Restricted(t, user)}
	url := srv.URL("resume", "nightly")
	body := fmt.Sprintf("steps:\n  - {id: b, type: kube.backup, with: {to: %q, compression: zstd, resources: [configmaps], namespaces: [%s]}}\n", url, strings.Join(nss, ", "))

	run := kubetest.Apply(t, restricted, body, kubetest.Options{NoRollback: true})
	kubetest.WantRunError(t, run, `step "b" failed: list configmaps in namespace `+nss[7]+`: configmaps is forbidden`)
	var st checkpointState
	if err := json.Unmarshal(run.Journal.Step("b").State, &st); err != nil {
		t.Fatal(err)
	}
	// Eight lists through four workers: the last starts once four are finished.
	if len(st.Jobs) < 4 {
		t.Fatalf("checkpoint holds %d finished lists, want at least 4: %s", len(st.Jobs), run.Journal.Step("b").State)
	}
	finished := map[string]bool{}
	for _, j := range st.Jobs {
		_, ns, _ := strings.Cut(j.Key, "|")
		finished[ns] = true
		if len(j.Files) != 1 || j.Files[0].Count != 3 || j.Files[0].SHA256 == "" || j.Files[0].Path != archive.FilePath("", "configmaps", ns, archive.Zstd) {
			t.Fatalf("checkpointed list %+v", j)
		}
	}
	t.Logf("failed with %d of 8 lists finished: %v", len(st.Jobs), finished)

	// Late objects: one in a finished namespace (the resumed backup must not list it again), one
	// in each other.
	for _, ns := range nss {
		if _, err := c.Typed.CoreV1().ConfigMaps(ns).Create(ctx, configMap("late", nil, nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	grant(nss[7])
	first := counter.get()
	p := kubetest.Load(t, restricted, body, kubetest.Options{})
	resumeCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	j, err := (&engine.Runner{Store: run.Store, NoRollback: true}).Resume(resumeCtx, "run", func(*engine.Journal) (*engine.Plan, error) { return p, nil })
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	after := counter.get()
	var want int64
	for _, ns := range nss {
		lists := after[ns] - first[ns]
		switch {
		case finished[ns] && lists != 0:
			t.Errorf("namespace %s was listed %d times by the resumed backup, its list was finished", ns, lists)
		case !finished[ns] && lists != 1:
			t.Errorf("namespace %s was listed %d times by the resumed backup, want 1", ns, lists)
		}
		want += 3
		if !finished[ns] {
			want++ // and its late config map
		}
	}
	out := j.Step("b").Outputs
	if fmt.Sprint(out["resumedLists"]) != fmt.Sprint(len(st.Jobs)) || fmt.Sprint(out["objects"]) != fmt.Sprint(want) {
		t.Fatalf("resumed outputs %v, want %d objects and %d resumed lists", out, want, len(st.Jobs))
	}
	loc := openBucket(t, srv, url)
	m := readManifestAt(t, loc)
	r := resource(t, m, "configmaps")
	if len(r.Files) != 8 || r.Count != want || m.Objects != want {
		t.Fatalf("manifest %+v", m)
	}
	for _, f := range r.Files {
		if f.Count != 3 && finished[f.Namespace] || f.Count != 4 && !finished[f.Namespace] {
			t.Errorf("file %+v", f)
		}
	}
	if res, err := archive.Verify(ctx, loc, nil); err != nil || res.Objects != want {
		t.Fatalf("verify: %+v %v", res, err)
	}
	if objs := readObjectsAt(t, loc, m.Compression, r); int64(len(objs)) != want {
		t.Fatalf("read %d objects back, want %d", len(objs), want)
	}
}

// TestBackupS3Prefixes: a bucket prefix follows the folder rules. One holding something else is
// refused unless overwrite (what is there stays); a previous backup is replaced: files it had
// that the new one does not write (another resource, a leftover of a crash) are gone, the
// manifest lists only the new ones, and the backup verifies.
func TestBackupS3Prefixes(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	srv := startS3(t, "prefixes")
	ns := c.Namespace(t)
	seedApp(t, c, ns)
	put := func(key, body string) {
		t.Helper()
		if _, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("prefixes"), Key: aws.String(key), Body: strings.NewReader(body)}); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(key string) bool {
		_, err := srv.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("prefixes"), Key: aws.String(key)})
		return err == nil
	}
	plan := func(url, resources, extra string) string {
		return fmt.Sprintf("steps:\n  - {id: b, type: kube.backup, with: {to: %q, resources: [%s], namespaces: [%s]%s}}\n", url, resources, ns, extra)
	}

	other := srv.URL("prefixes", "theirs")
	put("theirs/notes.txt", "mine")
	run := kubetest.Apply(t, main(), plan(other, "secrets", ""), kubetest.Options{})
	kubetest.WantRunError(t, run, fmt.Sprintf(`step "b" failed: to: %s is not empty and is not a planrun backup folder (set overwrite: true to write into it anyway)`, other))
	if exists("theirs/" + kubebackup.MarkerFile) {
		t.Fatal("a refused prefix was written to")
	}
	if run := kubetest.Apply(t, main(), plan(other, "secrets", ", overwrite: true"), kubetest.Options{}); run.Err != nil {
		t.Fatal(run.Err)
	}
	if !exists("theirs/notes.txt") {
		t.Fatal("overwrite removed a file that is not part of the backup")
	}

	url := srv.URL("prefixes", "b")
	if run := kubetest.Apply(t, main(), plan(url, "configmaps, secrets", ""), kubetest.Options{}); run.Err != nil {
		t.Fatal(run.Err)
	}
	cmFile := "b/resources/configmaps/" + ns + ".jsonl"
	if !exists(cmFile) {
		t.Fatalf("%s not written", cmFile)
	}
	put("b/resources/secrets/stale.jsonl", "{}\n") // left by a crash
	if run := kubetest.Apply(t, main(), plan(url, "secrets", ""), kubetest.Options{}); run.Err != nil {
		t.Fatal(run.Err)
	}
	for _, key := range []string{cmFile, "b/resources/secrets/stale.jsonl"} {
		if exists(key) {
			t.Errorf("%s of the previous backup kept", key)
		}
	}
	loc := openBucket(t, srv, url)
	if m := readManifestAt(t, loc); len(m.Resources) != 1 || m.Objects != 2 {
		t.Fatalf("manifest %+v", m)
	}
	if _, err := archive.Verify(ctx, loc, nil); err != nil {
		t.Fatal(err)
	}
}

// TestBackupS3DryRun: a dry run checks the bucket prefix but writes nothing to it; the verify and
// the restore after the backup in the same dry run read the backup it wrote to a temporary folder
// instead.
func TestBackupS3DryRun(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	srv := startS3(t, "dry")
	ns := c.Namespace(t)
	seedApp(t, c, ns)
	url := srv.URL("dry", "b")
	run := kubetest.Apply(t, main(), fmt.Sprintf(`
steps:
  - {id: b, type: kube.backup, with: {to: %q, resources: [configmaps, secrets], namespaces: [%s], compression: gzip}}
  - {id: v, type: kube.verifyBackup, with: {dir: "${{ steps.b.outputs.dir }}"}}
  - {id: r, type: kube.restore, with: {from: %q}}
`, url, ns, url), kubetest.Options{DryRun: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if b, v := outputs(t, run, "b"), outputs(t, run, "v"); b["dryRun"] != true || b["objects"] != float64(5) || v["objects"] != float64(5) {
		t.Fatalf("outputs: backup %v, verify %v", b, v)
	}
	if r := outputs(t, run, "r"); r["dryRun"] != true || r["failed"] != float64(0) || r["skipped"] != float64(5) {
		t.Fatalf("restore outputs %v", r)
	}
	out, err := srv.Client().ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("dry")})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Contents) != 0 {
		t.Fatalf("a dry run wrote %d objects, the first %s", len(out.Contents), aws.ToString(out.Contents[0].Key))
	}
}
