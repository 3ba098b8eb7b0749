package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/s3test"
	"planrun.dev/planrun/steps/kube/kubetest"
)

// listGate stands between planrun and the API server: it counts the list requests per
// namespace and resource, and holds those of one namespace's config maps until released.
type listGate struct {
	hold     string // namespace
	released chan struct{}
	mu       sync.Mutex
	counts   map[string]int // "namespace/resource" → list requests
}

func (g *listGate) before(r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/") // api v1 namespaces NS RESOURCE
	if r.Method != http.MethodGet || len(parts) != 5 || parts[0] != "api" || parts[2] != "namespaces" {
		return
	}
	g.mu.Lock()
	g.counts[parts[3]+"/"+parts[4]]++
	g.mu.Unlock()
	if parts[3] == g.hold && parts[4] == "configmaps" {
		<-g.released
	}
}

func (g *listGate) take() map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.counts
	g.counts = map[string]int{}
	return out
}

// backupCheckpoint reads the finished lists from kube.backup's checkpoint in the run's journal:
// their keys ("group/version/resource|namespace").
func backupCheckpoint(t *testing.T, dir, runID, step string) (*engine.Journal, []string) {
	t.Helper()
	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(t.Context(), runID)
	if err != nil {
		t.Fatal(err)
	}
	rec := j.Step(step)
	if rec == nil || len(rec.State) == 0 {
		return j, nil
	}
	var st struct {
		Jobs []struct{ Key string } `json:"jobs"`
	}
	if err := json.Unmarshal(rec.State, &st); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, job := range st.Jobs {
		keys = append(keys, job.Key)
	}
	return j, keys
}

// TestBackupS3CrashResume backs up seven namespaces of one cluster to a bucket, with the keys in a
// Secret on that cluster (credentialsFrom), verifies the backup and restores it into a second
// cluster. The backup is SIGKILLed once its checkpoint holds finished lists, while the list of
// one namespace is held at a proxy; planrun resume then lists only what the checkpoint does not
// hold, and the run ends with a complete, verified backup restored equal into the other cluster.
// Nothing planrun wrote (journal, outputs, events, logs at -vv) holds the secret key, and
// `planrun verify-backup --credentials-from` reads the same Secret through --kubeconfig/--context.
func TestBackupS3CrashResume(t *testing.T) {
	src, dst := controlplane.StartForTest(t), controlplane.StartForTest(t)
	srv := s3test.StartForTest(t)
	if err := srv.CreateBucket("backups"); err != nil {
		t.Fatal(err)
	}
	// Only the Secret holds the keys: nothing comes from the environment.
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"} {
		t.Setenv(k, "")
	}
	ctx := t.Context()
	cs := kubernetes.NewForConfigOrDie(src.Config)
	create := func(ns string) {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create("planrun-system")
	if _, err := cs.CoreV1().Secrets("planrun-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3-keys"},
		StringData: map[string]string{"accessKeyID": srv.AccessKey, "secretAccessKey": srv.SecretKey}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	nss := []string{"held", "app-1", "app-2", "app-3", "app-4", "app-5", "app-6"}
	want := map[string]map[string]string{} // namespace/name → data
	for _, ns := range nss {
		create(ns)
		for i := 0; i < 40; i++ {
			name := fmt.Sprintf("cm-%02d", i)
			data := configMapData(i)
			if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			want[ns+"/"+name] = data
		}
		if _, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db"}, StringData: map[string]string{"password": "pw-" + ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	gate := &listGate{hold: "held", released: make(chan struct{}), counts: map[string]int{}}
	released := false
	release := func() {
		if !released {
			released = true
			close(gate.released)
		}
	}
	defer release()
	proxied := (&kubetest.Cluster{CP: src}).Through(t, gate.before)

	dir := t.TempDir()
	url := srv.URL("backups", "clusters/src")
	creds := "{cluster: src, namespace: planrun-system, name: s3-keys}"
	plan := writePlan(t, dir, "plan.yaml", fmt.Sprintf(`apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: backup-to-s3}
clusters:
  src: {kubeconfig: %q, context: %q}
  dst: {kubeconfig: %q, context: %q}
steps:
  - id: backup
    type: kube.backup
    with:
      cluster: src
      to: %q
      credentialsFrom: %s
      compression: gzip
      resources: [configmaps, secrets]
      namespaces: [%s]
  - {id: verify, type: kube.verifyBackup, with: {dir: "${{ steps.backup.outputs.dir }}", credentialsFrom: %s}}
  - {id: restore, type: kube.restore, with: {cluster: dst, from: "${{ steps.backup.outputs.dir }}", credentialsFrom: %s}}
`, proxied.CP.Kubeconfig, proxied.CP.ContextName, dst.Kubeconfig, dst.ContextName, url, creds, strings.Join(nss, ", "), creds, creds))

	// Killed once the checkpoint holds two finished lists: the list of held's config maps, the
	// first job, waits at the proxy, so the backup cannot have finished.
	kp := plantest.KillPoint{Event: engine.EventStepProgress, Step: "backup", UntilDoc: "two lists checkpointed", Until: func() bool {
		_, keys := backupCheckpoint(t, dir, "b", "backup")
		return len(keys) >= 2
	}}
	var outputs []plantest.Result
	r := runPlanrun(t, dir, &kp, "apply", plan, "--run-id", "b", "-vv")
	outputs = append(outputs, r)
	if !r.Killed {
		t.Fatalf("the backup ended (exit %d) before it was killed at %s\n%s", r.Code, kp, r)
	}
	j, finished := backupCheckpoint(t, dir, "b", "backup")
	if rec := j.Step("backup"); j.Status != engine.RunRunning || rec.Status != engine.StepRunning {
		t.Fatalf("after SIGKILL: run %s, step %s", j.Status, rec.Status)
	}
	t.Logf("killed with %d lists checkpointed: %v", len(finished), finished)
	if _, err := srv.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("backups"), Key: aws.String("clusters/src/manifest.json")}); err == nil {
		t.Fatal("a killed backup has a manifest")
	}
	release()
	gate.take()

	r = runPlanrun(t, dir, nil, "resume", "b", "--break-lock", "-vv")
	outputs = append(outputs, r)
	if r.Code != 0 {
		t.Fatalf("resume exited %d\n%s", r.Code, r)
	}
	lists := gate.take()
	done := map[string]bool{}
	for _, k := range finished {
		gvr, ns, _ := strings.Cut(k, "|")
		done[ns+"/"+strings.TrimPrefix(gvr, "/v1/")] = true
	}
	for _, ns := range nss {
		for _, res := range []string{"configmaps", "secrets"} {
			key := ns + "/" + res
			if n := lists[key]; done[key] && n != 0 || !done[key] && n != 1 {
				t.Errorf("the resumed backup listed %s %d times (finished before the kill: %v)", key, n, done[key])
			}
		}
	}

	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	total := int64(len(want) + len(nss))
	if j.Status != engine.RunSucceeded {
		t.Fatalf("run %s", j.Status)
	}
	if out := j.Step("backup").Outputs; outputInt(t, out, "objects") != total || outputInt(t, out, "resumedLists") != int64(len(finished)) || outputInt(t, out, "files") != 14 {
		t.Fatalf("backup outputs %v", out)
	}
	if out := j.Step("verify").Outputs; outputInt(t, out, "objects") != total {
		t.Fatalf("verify outputs %v", out)
	}
	if out := j.Step("restore").Outputs; outputInt(t, out, "restored") != total || outputInt(t, out, "failed") != 0 {
		t.Fatalf("restore outputs %v", out)
	}
	dcs := kubernetes.NewForConfigOrDie(dst.Config)
	for _, ns := range nss {
		got := listConfigMaps(t, dcs, ns)
		for name, cm := range got {
			if !maps.Equal(cm.Data, want[ns+"/"+name]) {
				t.Errorf("ConfigMap %s/%s restored with other data", ns, name)
			}
		}
		s, err := dcs.CoreV1().Secrets(ns).Get(ctx, "db", metav1.GetOptions{})
		if err != nil || string(s.Data["password"]) != "pw-"+ns || len(got) != 40 {
			t.Errorf("namespace %s: %d config maps, Secret %v", ns, len(got), err)
		}
	}

	// planrun verify-backup reads the same Secret as kubectl would find it.
	for _, args := range [][]string{
		{"--credentials-from", "planrun-system/s3-keys"},
		{"--credentials-from", "s3-keys", "-n", "planrun-system"},
	} {
		r = plantest.RunBinary(t, planrunBin, dir, plantest.RunOptions{Plain: true},
			append([]string{"verify-backup", url, "--kubeconfig", src.Kubeconfig, "--context", src.ContextName}, args...)...)
		outputs = append(outputs, r)
		if r.Code != 0 || !strings.HasPrefix(r.Stdout, url+": ok (14 files, ") {
			t.Fatalf("verify-backup %v: exit %d\n%s", args, r.Code, r)
		}
	}
	r = plantest.RunBinary(t, planrunBin, dir, plantest.RunOptions{Plain: true}, "verify-backup", url, "--kubeconfig", src.Kubeconfig, "--context", src.ContextName, "--credentials-from", "planrun-system/nope")
	outputs = append(outputs, r)
	if r.Code != exitRunFailed || r.Stderr != "planrun verify-backup: --credentials-from: Secret planrun-system/nope not found\n" {
		t.Fatalf("verify-backup with a missing Secret: exit %d\n%s", r.Code, r)
	}

	// The secret key is nowhere: not in the journal, step states, outputs or logs in the state
	// folder, nor in the events (-o json) and log lines planrun printed.
	secret := []byte(srv.SecretKey)
	for _, r := range outputs {
		if bytes.Contains([]byte(r.Stdout), secret) || bytes.Contains([]byte(r.Stderr), secret) {
			t.Fatalf("planrun printed the secret key:\n%s", r)
		}
	}
	var files int
	err = filepath.WalkDir(filepath.Join(dir, "runs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, secret) {
			t.Errorf("%s holds the secret key", p)
		}
		return nil
	})
	if err != nil || files < 2 {
		t.Fatalf("walked %d files of the state folder: %v", files, err)
	}
}
