package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"planrun.dev/planrun/internal/s3test"
	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/storage"
)

func TestVerifyBackupCommand(t *testing.T) {
	dir := t.TempDir()
	loc := storage.OpenLocal(dir)
	ctx := t.Context()
	m := &archive.Manifest{}
	for _, res := range []string{"configmaps", "secrets"} {
		w, err := archive.Create(ctx, loc, archive.None, "", res, "ns")
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(`{"apiVersion":"v1","kind":"X","metadata":{"name":"a","namespace":"ns"}}`))
		f, err := w.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.Resources = append(m.Resources, archive.Resource{Version: "v1", Resource: res, Namespaced: true, Count: 1, Files: []archive.File{f}})
		m.Objects++
		m.Bytes += f.Bytes
	}
	if err := archive.WriteManifest(ctx, loc, m); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runCLI(t, "verify-backup", dir)
	if code != exitOK || stdout != dir+": ok (2 files, 2 objects, "+strconv.FormatInt(m.Bytes, 10)+" bytes)\n" || stderr != "" {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, "verify-backup", dir, "-o", "json")
	if code != exitOK || !strings.Contains(stdout, `"objects": 2`) {
		t.Fatalf("exit %d, stdout %s", code, stdout)
	}

	p := filepath.Join(dir, "resources/secrets/ns.jsonl")
	b, _ := os.ReadFile(p)
	b[5] = 'Z'
	os.WriteFile(p, b, 0o600)
	code, stdout, stderr = runCLI(t, "verify-backup", dir)
	want := "planrun verify-backup: backup " + dir + " is damaged (1 problems): resources/secrets/ns.jsonl: sha256 "
	if code != exitRunFailed || stdout != "" || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s\nwant prefix %q", code, stdout, stderr, want)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"verify-backup"}, exitUsage, "verify-backup takes one argument: the backup location (a folder or a URL)"},
		{[]string{"verify-backup", t.TempDir()}, exitRunFailed, "is not a complete backup: no manifest.json"},
	} {
		code, _, stderr := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %s", tc.args, code, stderr)
		}
	}
}

// TestVerifyBackupS3 verifies a compressed backup in a bucket with the SDK's default chain (the
// environment), and fails in one line that names the location, never a key, with exit code 1,
// when an object is damaged, the bucket is missing, the keys are refused or the endpoint is down.
func TestVerifyBackupS3(t *testing.T) {
	srv := s3test.StartForTest(t)
	if err := srv.CreateBucket("backups"); err != nil {
		t.Fatal(err)
	}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	ctx := t.Context()
	url := srv.URL("backups", "nightly/a")
	loc, err := storage.Open(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer loc.Close()
	m := &archive.Manifest{Compression: archive.Zstd}
	for _, res := range []string{"configmaps", "secrets"} {
		w, err := archive.Create(ctx, loc, m.Compression, "", res, "ns")
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 100; i++ {
			w.Write([]byte(`{"apiVersion":"v1","kind":"X","metadata":{"name":"a` + strconv.Itoa(i) + `","namespace":"ns"}}`))
		}
		f, err := w.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.Resources = append(m.Resources, archive.Resource{Version: "v1", Resource: res, Namespaced: true, Count: f.Count, Files: []archive.File{f}})
		m.Objects += f.Count
		m.Bytes += f.Bytes
	}
	if err := archive.WriteManifest(ctx, loc, m); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runCLI(t, "verify-backup", url)
	if code != exitOK || stdout != url+": ok (2 files, 200 objects, "+strconv.FormatInt(m.Bytes, 10)+" bytes)\n" || stderr != "" {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, "verify-backup", url, "-o", "json")
	if code != exitOK || !strings.Contains(stdout, `"objects": 200`) {
		t.Fatalf("exit %d, stdout %s", code, stdout)
	}

	down := s3test.StartForTest(t, s3test.Options{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	down.Kill()
	const wrongSecret = "WRONGsecretKEYthatMUSTnotBEprinted000000"
	for _, tc := range []struct {
		name, url, secret, want string
	}{
		{"missing bucket", srv.URL("nope", "a"), srv.SecretKey, srv.URL("nope", "a") + ": manifest.json: read: bucket does not exist: NoSuchBucket"},
		{"wrong credentials", url, wrongSecret, url + ": manifest.json: read: access denied: SignatureDoesNotMatch"},
		{"unreachable endpoint", down.URL("backups", "nightly/a"), srv.SecretKey, down.URL("backups", "nightly/a") + ": manifest.json: read: endpoint unreachable: "},
		{"no manifest", srv.URL("backups", "other"), srv.SecretKey, srv.URL("backups", "other") + " is not a complete backup: no manifest.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("AWS_SECRET_ACCESS_KEY", tc.secret)
			code, stdout, stderr := runCLI(t, "verify-backup", tc.url)
			if code != exitRunFailed || stdout != "" || !strings.HasPrefix(stderr, "planrun verify-backup: "+tc.want) || strings.Count(stderr, "\n") != 1 ||
				strings.Contains(stderr, srv.SecretKey) || strings.Contains(stderr, wrongSecret) {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s\nwant prefix %q", code, stdout, stderr, tc.want)
			}
		})
	}

	// An object overwritten in the bucket by another client.
	key := "nightly/a/" + m.Resources[1].Files[0].Path
	if _, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("backups"), Key: aws.String(key), Body: strings.NewReader("not zstd")}); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, "verify-backup", url)
	want := "planrun verify-backup: backup " + url + " is damaged (1 problems): " + m.Resources[1].Files[0].Path + ": 8 bytes, the manifest says "
	if code != exitRunFailed || stdout != "" || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s\nwant prefix %q", code, stdout, stderr, want)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"verify-backup", "ftp://host/x"}, "scheme ftp:// is not supported"},
		{[]string{"verify-backup", url, "--credentials-from", "justaname"}, "--credentials-from justaname: want NAMESPACE/NAME, or NAME with -n NAMESPACE"},
	} {
		code, _, stderr := runCLI(t, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %s", tc.args, code, stderr)
		}
	}
}
