package plans_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/s3test"
)

// The seeds' backup buckets, as the Gardener tests see them: two folders standing in for them
// (sourceBackupDir, destinationBackupDir), or two real S3 servers, one per seed, with the
// credentials in Secrets in the garden that the seeds' .spec.backup refer to.
type gdBuckets struct {
	// folders: where the folders are; nil servers.
	srcDir, dstDir string
	// S3: one server per seed; the source bucket is the one the BackupEntry names, the
	// destination's is named after the destination seed's UID.
	srcS3, dstS3     *s3test.Server
	srcName, dstName string
}

const gdSourceBucket = "bucket-seed-a"

func (b *gdBuckets) s3() bool { return b.srcS3 != nil }

// startS3Buckets starts a server per seed and makes the source bucket; the destination bucket
// is made once the destination seed, whose UID names it, exists (makeDestination).
func startS3Buckets(t *testing.T) *gdBuckets {
	t.Helper()
	b := &gdBuckets{srcS3: s3test.StartForTest(t), dstS3: s3test.StartForTest(t), srcName: gdSourceBucket}
	if err := b.srcS3.CreateBucket(b.srcName); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *gdBuckets) makeDestination(t *testing.T, seedUID string) {
	t.Helper()
	b.dstName = seedUID
	if err := b.dstS3.CreateBucket(b.dstName); err != nil {
		t.Fatal(err)
	}
}

// seedBackup is a seed's .spec.backup: provider-local for folders, aws with a Secret otherwise.
func (b *gdBuckets) seedBackup(seed string) map[string]any {
	if !b.s3() {
		return map[string]any{"provider": "local", "region": "local", "credentialsRef": map[string]any{"apiVersion": "v1", "kind": "Secret", "name": "backup-" + seed, "namespace": "garden"}}
	}
	return map[string]any{"provider": "aws", "region": "us-east-1", "credentialsRef": map[string]any{"apiVersion": "v1", "kind": "Secret", "name": "backup-" + seed, "namespace": "garden"}}
}

// secrets are the Secrets of the seeds' backups, with the servers' keys under the names
// Gardener's AWS backup Secrets use.
func (b *gdBuckets) secrets() map[string]*s3test.Server {
	if !b.s3() {
		return nil
	}
	return map[string]*s3test.Server{"backup-" + gdSourceSeed: b.srcS3, "backup-" + gdDestSeed: b.dstS3}
}

func (b *gdBuckets) args() []string {
	if !b.s3() {
		return []string{"--set", "sourceBackupDir=" + b.srcDir, "--set", "destinationBackupDir=" + b.dstDir}
	}
	return []string{"--set", "sourceBackupEndpoint=" + b.srcS3.Endpoint, "--set", "destinationBackupEndpoint=" + b.dstS3.Endpoint}
}

// put writes an object of the source bucket as etcd-backup-restore would: a plain upload,
// without planrun's metadata.
func (b *gdBuckets) put(t *testing.T, key string, data []byte) {
	t.Helper()
	if !b.s3() {
		p := filepath.Join(b.srcDir, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := b.srcS3.Client().PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(b.srcName), Key: aws.String(key), Body: strings.NewReader(string(data))}); err != nil {
		t.Fatal(err)
	}
}

// files is the sha256 of every object (file) under prefix in a seed's bucket ("" for all), by
// key relative to prefix.
func (b *gdBuckets) files(t *testing.T, destination bool, prefix string) map[string]string {
	t.Helper()
	if !b.s3() {
		dir := b.srcDir
		if destination {
			dir = b.dstDir
		}
		return gdFiles(t, filepath.Join(dir, filepath.FromSlash(prefix)))
	}
	srv, bucket := b.srcS3, b.srcName
	if destination {
		srv, bucket = b.dstS3, b.dstName
	}
	out := map[string]string{}
	if bucket == "" {
		return out
	}
	c := srv.Client()
	p := ""
	if prefix != "" {
		p = prefix + "/"
	}
	pages := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(p)})
	for pages.HasMorePages() {
		page, err := pages.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			obj, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: o.Key})
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			_, err = io.Copy(h, obj.Body)
			obj.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			out[strings.TrimPrefix(*o.Key, p)] = hex.EncodeToString(h.Sum(nil))
		}
	}
	return out
}

// snapshotLocation is where the plan writes the final snapshot, as the dry run names it.
func (b *gdBuckets) snapshotLocation(entry string) string {
	if !b.s3() {
		return filepath.Join(b.srcDir, entry, gdSnapshot)
	}
	return "s3://" + b.srcName + "/" + entry + "/" + gdSnapshot + "?region=us-east-1&endpoint=" + b.srcS3.Endpoint
}

// assertNoSecrets fails when a secret key of the servers appears in the run's output or in any
// file the runs left (journal, step logs, artifacts).
func (b *gdBuckets) assertNoSecrets(t *testing.T, dir string, outputs ...string) {
	t.Helper()
	if !b.s3() {
		return
	}
	plantest.NoSecrets(t, dir, strings.Join(outputs, "\n"), b.srcS3.SecretKey, b.dstS3.SecretKey)
}

// TestGardenerBucketsDryRunAndProvider: on S3 buckets, a dry run names the objects it would write
// and writes none; a seed whose backup provider planrun cannot reach is refused before anything
// changes, saying which.
func TestGardenerBucketsDryRunAndProvider(t *testing.T) {
	e := startGardener(t, true)
	before := e.gdObjects(t)
	r := e.run(t, nil, true, append(e.planArgs(), "--dry-run")...)
	if r.Code != 0 {
		t.Fatalf("dry run exited %d\n%s", r.Code, r)
	}
	if want := "snapshot datastore \"shoot\" to " + e.buckets.snapshotLocation(e.backupEntry()); !strings.Contains(r.Stdout, want) {
		t.Errorf("the dry run does not say %q:\n%s", want, r.Stdout)
	}
	e.assertUntouched(t, "after the dry run", before)
	e.buckets.assertNoSecrets(t, e.dir, r.Stdout, r.Stderr)

	e.mergePatch(t, seedGVR, "", gdDestSeed, `{"spec":{"backup":{"provider":"openstack"}}}`, "")
	changed := e.gdObjects(t)
	r = e.run(t, nil, true, e.planArgs("--run-id", "openstack")...)
	want := `step "backups-supported" failed: assertion failed: destination seed's backup provider openstack is not one planrun can reach (aws, gcp, azure, local); give sourceBackupDir and destinationBackupDir folders instead`
	if r.Code != 1 || !strings.Contains(r.Stdout+r.Stderr, want) {
		t.Errorf("exit %d\n%s\n%s\nwant the error %q", r.Code, r.Stdout, r.Stderr, want)
	}
	e.assertUntouched(t, "after the refusal", changed)
}
