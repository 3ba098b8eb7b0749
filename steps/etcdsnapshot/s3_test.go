package etcdsnapshot_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/s3test"
	"planrun.dev/planrun/steps/etcdsnapshot"
	"planrun.dev/planrun/steps/storage"
)

const bucket = "backups"

// snapshotKey is where the tests put a snapshot in the bucket, as the Gardener plan does.
const snapshotKey = "shoot--dev--web/migration/final-full-snapshot.db"

// startS3 starts an S3 server with the bucket, and gives its keys to the SDK's default chain
// through the environment.
func startS3(t *testing.T, opts ...s3test.Options) *s3test.Server {
	t.Helper()
	srv := s3test.StartForTest(t, opts...)
	if err := srv.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return srv
}

// keys lists the objects of the bucket.
func keys(t testing.TB, srv *s3test.Server) []string {
	t.Helper()
	out, err := srv.Client().ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range out.Contents {
		names = append(names, *o.Key)
	}
	sort.Strings(names)
	return names
}

func getObject(t testing.TB, srv *s3test.Server, key string) []byte {
	t.Helper()
	out, err := srv.Client().GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func putObject(t testing.TB, srv *s3test.Server, key string, b []byte) {
	t.Helper()
	_, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key), Body: strings.NewReader(string(b))})
	if err != nil {
		t.Fatal(err)
	}
}

func objectManifest(t testing.TB, srv *s3test.Server, key string) etcdsnapshot.Manifest {
	t.Helper()
	var m etcdsnapshot.Manifest
	if err := json.Unmarshal(getObject(t, srv, key+etcdsnapshot.ManifestSuffix), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func snapshotStep(to, extra string) string {
	return fmt.Sprintf("steps:\n  - {id: snap, type: etcd.snapshot, with: {datastore: src, to: %q%s}}\n", to, extra)
}

func restoreStep(snapshot, dataDir, extra string) string {
	return fmt.Sprintf("steps:\n  - {id: r, type: etcd.restore, with: {snapshot: %q, dataDir: %q%s}}\n", snapshot, dataDir, extra)
}

// TestSnapshotToS3RestoreFromS3: a snapshot streamed into a bucket is the same as a local
// snapshot of the same data (sha256, size, revision), restores from the bucket into a data
// directory on which a fresh etcd serves every key at the same revision, and leaves nothing
// behind (no downloaded file); dry runs write nothing and still check.
func TestSnapshotToS3RestoreFromS3(t *testing.T) {
	e, c, rev := seeded(t)
	wantN, wantSum := digest(t, c)
	srv := startS3(t)
	to := srv.URL(bucket, snapshotKey)
	dir := t.TempDir()
	data := filepath.Join(dir, "members", "m0")

	// Dry runs: nothing written, what would be said.
	j, err := apply(t, e.URL, snapshotStep(to, "")+strings.TrimPrefix(restoreStep(to, data, ""), "steps:\n"), runOpts{dryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if out := j.Step("snap").Outputs; out["dryRun"] != true || out["to"] != to || out["manifest"] != srv.URL(bucket, snapshotKey+".manifest.json") || plantest.Num(t, out, "revision") != rev {
		t.Fatalf("snapshot dry-run outputs %v", out)
	}
	if out := j.Step("r").Outputs; out["dryRun"] != true || out["snapshotPresent"] != false || out["snapshot"] != to {
		t.Fatalf("restore dry-run outputs without the snapshot %v", out)
	}
	if k := keys(t, srv); len(k) != 0 {
		t.Fatalf("dry run wrote %v", k)
	}
	noDir(t, filepath.Dir(data))

	j = mustApply(t, e.URL, snapshotStep(to, "")+strings.TrimPrefix(restoreStep("${{ steps.snap.outputs.to }}", data, ""), "steps:\n"))
	out := j.Step("snap").Outputs
	if k := keys(t, srv); strings.Join(k, " ") != snapshotKey+" "+snapshotKey+".manifest.json" {
		t.Fatalf("bucket holds %v", k)
	}
	object := getObject(t, srv, snapshotKey)
	m := objectManifest(t, srv, snapshotKey)
	if out["to"] != to || out["sha256"] != sum(object) || plantest.Num(t, out, "size") != int64(len(object)) || plantest.Num(t, out, "revision") != rev {
		t.Fatalf("snapshot outputs %v (object sha256 %s, %d bytes; revision %d)", out, sum(object), len(object), rev)
	}
	if m.File != "final-full-snapshot.db" || m.SHA256 != sum(object) || m.Size != int64(len(object)) || m.Revision != rev || m.Datastore != "src" {
		t.Fatalf("manifest %+v", m)
	}
	if p := lastProgress; p.Bytes != int64(len(object)) || p.Unit != "bytes" {
		t.Errorf("last progress %+v, want %d bytes", p, len(object))
	}

	// A local snapshot of the same data says the same. (Not its sha256: etcd commits its own
	// bookkeeping between two snapshots, which changes the meta pages.)
	local := snapshot(t, e.URL)
	lm, err := etcdsnapshot.ReadManifest(local)
	if err != nil {
		t.Fatal(err)
	}
	if lm.Size != m.Size || lm.Revision != m.Revision || lm.StorageVersion != m.StorageVersion || lm.EtcdVersion != m.EtcdVersion {
		t.Fatalf("local manifest %+v, S3 manifest %+v", lm, m)
	}

	r := j.Step("r").Outputs
	if r["created"] != true || r["snapshot"] != to || r["sha256"] != m.SHA256 || plantest.Num(t, r, "revision") != rev {
		t.Fatalf("restore outputs %v", r)
	}
	if entries, _ := os.ReadDir(filepath.Dir(data)); len(entries) != 1 {
		t.Fatalf("members folder holds %v, want m0 only (no downloaded snapshot)", entries)
	}
	fresh := startOn(t, data)
	if n, s := digest(t, fresh); n != wantN || s != wantSum {
		t.Fatalf("restored etcd: %d keys sha256 %s, want %d keys sha256 %s", n, s, wantN, wantSum)
	}
	if got := currentRev(t, fresh); got != rev {
		t.Fatalf("restored etcd at revision %d, want %d", got, rev)
	}

	// A dry run of the restore from the bucket checks the sum as the object streams by, and
	// writes nothing.
	other := filepath.Join(dir, "other", "m1")
	j, err = apply(t, e.URL, restoreStep(to, other, ""), runOpts{dryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if out := j.Step("r").Outputs; out["dryRun"] != true || out["sha256"] != m.SHA256 || plantest.Num(t, out, "revision") != rev {
		t.Fatalf("restore dry-run outputs %v", out)
	}
	noDir(t, filepath.Dir(other))
	_, err = apply(t, e.URL, restoreStep(to, other, fmt.Sprintf(", sha256: %q", strings.Repeat("1", 64))), runOpts{dryRun: true})
	plantest.WantError(t, err, `step "r" failed: snapshot: `+to+` has sha256 `+m.SHA256+` but sha256 says 1111`, `refusing to restore it`)
	noDir(t, filepath.Dir(other))
}

// TestSnapshotToS3Overwrite: overwrite semantics on an object store are those of a folder: an
// object that is not a planrun snapshot is refused unless overwrite, a snapshot with its
// manifest is replaced, and a run of the step that stopped between the snapshot and its
// manifest replaces what it left.
func TestSnapshotToS3Overwrite(t *testing.T) {
	e, c, _ := seeded(t)
	srv := startS3(t)
	to := srv.URL(bucket, snapshotKey)
	body := snapshotStep(to, "")

	putObject(t, srv, snapshotKey, []byte("not a snapshot"))
	_, err := apply(t, e.URL, body, runOpts{})
	plantest.WantError(t, err, `step "snap" failed: to: `+to+` exists and has no manifest final-full-snapshot.db.manifest.json beside it: not replacing it (set overwrite: true to replace it)`)
	if b := getObject(t, srv, snapshotKey); string(b) != "not a snapshot" {
		t.Fatalf("object changed: %q", b)
	}
	first := mustApply(t, e.URL, snapshotStep(to, ", overwrite: true")).Step("snap").Outputs
	if first["sha256"] != sum(getObject(t, srv, snapshotKey)) {
		t.Fatalf("outputs %v", first)
	}

	// Again after more writes: the planrun snapshot with its manifest is replaced.
	if _, err := c.Put(context.Background(), "/more", "data"); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	j, err := apply(t, e.URL, body, runOpts{dir: state})
	if err != nil {
		t.Fatal(err)
	}
	second := j.Step("snap").Outputs
	if plantest.Num(t, second, "revision") != plantest.Num(t, first, "revision")+1 || second["sha256"] != sum(getObject(t, srv, snapshotKey)) ||
		objectManifest(t, srv, snapshotKey).SHA256 != second["sha256"] {
		t.Fatalf("second snapshot %v after first %v", second, first)
	}

	// Stopped after the object, before its manifest: another run refuses the object, the same
	// step run again replaces it.
	if _, err := srv.Client().DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(snapshotKey + etcdsnapshot.ManifestSuffix)}); err != nil {
		t.Fatal(err)
	}
	_, err = apply(t, e.URL, body, runOpts{})
	plantest.WantError(t, err, `step "snap" failed: to: `+to+` exists and has no manifest`)
	j, err = crashAndResume(t, e.URL, body, state, "snap")
	if err != nil {
		t.Fatal(err)
	}
	if out := j.Step("snap").Outputs; objectManifest(t, srv, snapshotKey).SHA256 != out["sha256"] || out["sha256"] != sum(getObject(t, srv, snapshotKey)) {
		t.Fatalf("outputs %v", out)
	}
	if k := keys(t, srv); len(k) != 2 {
		t.Fatalf("bucket holds %v", k)
	}
}

// large starts an etcd holding about 16 MiB, for snapshots of several parts.
func large(t *testing.T) (*controlplane.Etcd, *clientv3.Client) {
	t.Helper()
	e := controlplane.StartEtcdForTest(t)
	c := client(t, e.URL)
	for i := 0; i < 2000; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/secrets/s%05d", j), strings.Repeat(fmt.Sprintf("%07d.", j), 1000)))
		}
		if _, err := c.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	return e, c
}

// TestSnapshotToS3Aborted: a snapshot that stops mid-upload, its context cancelled or the S3
// server killed, leaves no object and no manifest (a cancelled multipart upload is aborted on
// the server too); the step run again writes the whole snapshot.
func TestSnapshotToS3Aborted(t *testing.T) {
	e, c := large(t)
	wantN, wantSum := digest(t, c)
	srv := startS3(t)
	// Parts of 5 MiB: the upload is under way when the fault comes, after 12 MiB.
	to := strings.Replace(srv.URL(bucket, snapshotKey), "?", "?part_size=5&", 1)
	body := snapshotStep(to, "")
	const faultAt = 12 << 20

	for _, tc := range []struct {
		name  string
		fault func(cancel context.CancelFunc)
		want  []string
	}{
		{"cancelled", func(cancel context.CancelFunc) { cancel() }, []string{`run run was interrupted`}},
		{"server killed", func(context.CancelFunc) { srv.Kill() }, []string{`step "snap" failed: to: `, folderOf(t, to) + `: final-full-snapshot.db: write: `}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := t.TempDir()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var once sync.Once
			faulted := false
			_, err := runObserved(t, ctx, e.URL, body, state, func(ev engine.Event) {
				if ev.StepID == "snap" && ev.Progress != nil && ev.Progress.Bytes >= faultAt {
					// Progress is reported from the step's own goroutine: the stream waits
					// until the fault is in place.
					once.Do(func() { tc.fault(cancel); faulted = true })
				}
			})
			if !faulted {
				t.Fatalf("the snapshot ended (%v) before %d bytes", err, faultAt)
			}
			plantest.WantError(t, err, tc.want...)
			if tc.name == "server killed" {
				if err := srv.Restart(); err != nil {
					t.Fatal(err)
				}
			} else {
				uploads, err := srv.Client().ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
				if err != nil || len(uploads.Uploads) != 0 {
					t.Fatalf("multipart uploads left: %v (%v)", uploads.Uploads, err)
				}
			}
			if k := keys(t, srv); len(k) != 0 {
				t.Fatalf("bucket holds %v after the failed snapshot", k)
			}

			// Run again: the whole snapshot and its manifest.
			j, err := resumeRun(t, e.URL, body, state)
			if err != nil {
				t.Fatal(err)
			}
			out := j.Step("snap").Outputs
			object := getObject(t, srv, snapshotKey)
			if out["sha256"] != sum(object) || objectManifest(t, srv, snapshotKey).SHA256 != sum(object) || len(object) < faultAt {
				t.Fatalf("outputs %v, object of %d bytes", out, len(object))
			}
			data := filepath.Join(t.TempDir(), "data")
			mustApply(t, e.URL, restoreStep(to, data, ""))
			if n, s := digest(t, startOn(t, data)); n != wantN || s != wantSum {
				t.Fatalf("restored: %d keys %s, want %d %s", n, s, wantN, wantSum)
			}
			for _, k := range keys(t, srv) {
				if _, err := srv.Client().DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)}); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// folderOf is the URL of the folder of the file url names: storage errors name it, and the
// path in it.
func folderOf(t testing.TB, url string) string {
	t.Helper()
	dir, _, err := storage.SplitFile(url)
	if err != nil {
		t.Fatal(err)
	}
	return storage.Redact(dir)
}

// runObserved runs a plan with its state in dir, under ctx, with an observer of its events.
func runObserved(t testing.TB, ctx context.Context, url, body, dir string, observe func(engine.Event)) (*engine.Journal, error) {
	t.Helper()
	p, err := load(t, url, body)
	if err != nil {
		t.Fatal(err)
	}
	r := &engine.Runner{Store: engine.NewDirStore(filepath.Join(dir, "runs")), NoRollback: true, Observer: engine.ObserverFunc(observe)}
	return r.Apply(ctx, p, engine.ApplyOptions{RunID: "run"})
}

// resumeRun resumes the run in dir, as planrun resume does after a failure.
func resumeRun(t testing.TB, url, body, dir string) (*engine.Journal, error) {
	t.Helper()
	p, err := load(t, url, body)
	if err != nil {
		t.Fatal(err)
	}
	r := &engine.Runner{Store: engine.NewDirStore(filepath.Join(dir, "runs")), NoRollback: true}
	return r.Resume(context.Background(), "run", func(*engine.Journal) (*engine.Plan, error) { return p, nil })
}

// TestRestoreFromS3Refuses: a snapshot object changed after its manifest was written is refused
// naming its URL, before anything is restored, and the downloaded copy is removed (as is one an
// earlier attempt left).
func TestRestoreFromS3Refuses(t *testing.T) {
	e, _, _ := seeded(t)
	srv := startS3(t)
	to := srv.URL(bucket, snapshotKey)
	mustApply(t, e.URL, snapshotStep(to, ""))
	m := objectManifest(t, srv, snapshotKey)
	object := getObject(t, srv, snapshotKey)
	object[len(object)/2] ^= 0xff
	putObject(t, srv, snapshotKey, object)

	// What an attempt that stopped mid-download left is replaced, then removed.
	data := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(filepath.Join(filepath.Dir(data), ".data.snapshot.planrun-part"), []byte("half"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := apply(t, e.URL, restoreStep(to, data, ""), runOpts{})
	plantest.WantError(t, err, fmt.Sprintf(`step "r" failed: snapshot: %s has sha256 %s but manifest %s says %s: refusing to restore it`, to, sum(object), srv.URL(bucket, snapshotKey+".manifest.json"), m.SHA256))
	if !errors.Is(err, storage.ErrChecksum) {
		t.Errorf("%v does not match storage.ErrChecksum", err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(data)); len(entries) != 0 {
		t.Fatalf("a refused restore left %v", entries)
	}
}

// TestS3Errors: a missing bucket, refused credentials and an unreachable endpoint are one-line
// errors naming the URL and never the secret, for the snapshot and the restore alike.
func TestS3Errors(t *testing.T) {
	e, _, _ := seeded(t)
	srv := startS3(t)
	down := s3test.StartForTest(t)
	downURL := down.URL(bucket, snapshotKey)
	if err := down.Stop(); err != nil {
		t.Fatal(err)
	}
	const wrongSecret = "wrong-secret-0123456789"
	for _, tc := range []struct {
		name, url string
		env       []string
		kind      error // nil: none of storage's kinds
	}{
		{"missing bucket", srv.URL("nobucket", snapshotKey), nil, storage.ErrNoBucket},
		{"wrong secret", srv.URL(bucket, snapshotKey), []string{"AWS_SECRET_ACCESS_KEY=" + wrongSecret}, storage.ErrAccessDenied},
		// versitygw answers its own XAdminUserNotFound where S3 says InvalidAccessKeyId.
		{"unknown key", srv.URL(bucket, snapshotKey), []string{"AWS_ACCESS_KEY_ID=nobody", "AWS_SECRET_ACCESS_KEY=" + wrongSecret}, nil},
		{"unreachable", downURL, nil, storage.ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, kv := range tc.env {
				k, v, _ := strings.Cut(kv, "=")
				t.Setenv(k, v)
			}
			data := filepath.Join(t.TempDir(), "data")
			for _, body := range []string{snapshotStep(tc.url, ""), restoreStep(tc.url, data, "")} {
				_, err := apply(t, e.URL, body, runOpts{})
				plantest.WantError(t, err, folderOf(t, tc.url)+": final-full-snapshot.db: ")
				if tc.kind != nil && !errors.Is(err, tc.kind) {
					t.Errorf("%v does not match %v", err, tc.kind)
				}
				if strings.Contains(err.Error(), wrongSecret) || strings.Contains(err.Error(), srv.SecretKey) {
					t.Errorf("the error holds a secret: %v", err)
				}
			}
			noDir(t, data)
		})
	}
	if k := keys(t, srv); len(k) != 0 {
		t.Fatalf("bucket holds %v", k)
	}
}

// TestS3CredentialsFromSecret: with no credentials in the environment, the keys come from a
// Secret on a plan cluster (Gardener's key names), for the snapshot and the restore; a Secret
// with a wrong key is refused without the key in the error.
func TestS3CredentialsFromSecret(t *testing.T) {
	e, _, rev := seeded(t)
	srv := startS3(t)
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		t.Setenv(k, "")
	}
	cp := controlplane.StartForTest(t)
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	ctx := context.Background()
	const wrongSecret = "wrong-secret-0123456789"
	for name, secret := range map[string]string{"backup": srv.SecretKey, "wrong": wrongSecret} {
		_, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Data:       map[string][]byte{"accessKeyID": []byte(srv.AccessKey), "secretAccessKey": []byte(secret + "\n")},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	run := func(body string) (*engine.Journal, error) {
		p, err := load(t, e.URL, "clusters:\n  garden: {}\n"+body)
		if err != nil {
			t.Fatal(err)
		}
		p.Clusters["garden"].Kubeconfig, p.Clusters["garden"].Context = cp.Kubeconfig, cp.ContextName
		r := plantest.RunPlan(t, p, plantest.Options{NoRollback: true})
		return r.Journal, r.Err
	}
	to := srv.URL(bucket, snapshotKey)
	data := filepath.Join(t.TempDir(), "data")
	j, err := run(snapshotStep(to, ", credentialsFrom: {cluster: garden, namespace: default, name: backup}") +
		strings.TrimPrefix(restoreStep(to, data, ", credentialsFrom: {namespace: default, name: backup}"), "steps:\n"))
	if err != nil {
		t.Fatal(err)
	}
	if out := j.Step("r").Outputs; out["created"] != true || out["sha256"] != sum(getObject(t, srv, snapshotKey)) || plantest.Num(t, out, "revision") != rev {
		t.Fatalf("restore outputs %v", out)
	}

	_, err = run(restoreStep(to, filepath.Join(t.TempDir(), "d"), ", credentialsFrom: {namespace: default, name: wrong}"))
	plantest.WantError(t, err, `step "r" failed: snapshot: `+folderOf(t, to)+`: final-full-snapshot.db: stat: access denied`)
	if strings.Contains(err.Error(), wrongSecret) {
		t.Errorf("the error holds the secret: %v", err)
	}
}

// TestLocationConfigErrors: a location that is not a file, of an unknown scheme, or with
// credentials in it, is refused when the plan loads, the credentials not repeated.
func TestLocationConfigErrors(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{snapshotStep("/backups/", ""), `step "snap": with: to: /backups/ names a folder, want a file`},
		{snapshotStep("s3://bucket?region=r", ""), `step "snap": with: to: s3://bucket?region=r names a folder, want a file (s3://bucket/path/file)`},
		{restoreStep("ftp://host/snap.db", "/tmp/d", ""), `step "r": with: snapshot: ftp://host/snap.db: scheme ftp:// is not supported`},
		{restoreStep("s3://key:hunter2@bucket/snap.db", "/tmp/d", ""), `step "r": with: snapshot: s3://REDACTED@bucket/snap.db: a location URL must not hold credentials`},
		{snapshotStep("/backups/x.db", ", credentialsFrom: {name: s}"), `step "snap": with: missing required field "namespace"`},
	} {
		_, err := load(t, "http://127.0.0.1:1", tc.body)
		plantest.WantError(t, err, tc.want)
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error holds the password: %v", err)
		}
	}
}
