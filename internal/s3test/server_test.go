package s3test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

func TestStartServesS3AndStopRemovesItsFolder(t *testing.T) {
	started := time.Now()
	s := StartForTest(t)
	t.Logf("versitygw answered %s after Start was called", time.Since(started).Round(time.Millisecond))

	if !regexp.MustCompile(`^http://127\.0\.0\.1:\d+$`).MatchString(s.Endpoint) {
		t.Errorf("Endpoint = %q, want http://127.0.0.1:PORT", s.Endpoint)
	}
	if s.Region != "us-east-1" || s.AccessKey == "" || s.SecretKey == "" {
		t.Errorf("Region, AccessKey, SecretKey = %q, %q, %q", s.Region, s.AccessKey, s.SecretKey)
	}
	mustCreateBucket(t, s, "first")
	// The posix backend: a bucket is a folder of Dir, an object a file below it.
	mustPut(t, s.Client(), "first", "a/b.txt", []byte("hello"), nil)
	if b, err := os.ReadFile(filepath.Join(s.Dir, "first", "a", "b.txt")); err != nil || string(b) != "hello" {
		t.Errorf("the object's file: %q, %v", b, err)
	}
	if body, _ := mustGet(t, s.Client(), "first", "a/b.txt"); string(body) != "hello" {
		t.Errorf("got %q back", body)
	}

	stopping := time.Now()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop took %s (a keep-alive connection was open)", time.Since(stopping).Round(time.Millisecond))
	if err := s.Stop(); err != nil {
		t.Errorf("a second Stop: %v", err)
	}
	for _, path := range []string{s.Dir, s.LogPath} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("%s after Stop: %v, want it removed", path, err)
		}
	}
	if err := s.Restart(); err == nil || !strings.Contains(err.Error(), "stopped") {
		t.Errorf("Restart after Stop: %v, want an error saying it was stopped", err)
	}
}

// Two servers at once (cross-endpoint copies need them): each has its own port, folder and
// keys, and neither accepts the other's.
func TestServersRunSideBySide(t *testing.T) {
	servers := []*Server{StartForTest(t), StartForTest(t), StartForTest(t)}
	for i, s := range servers {
		mustCreateBucket(t, s, "same-name")
		mustPut(t, s.Client(), "same-name", "which", []byte(s.Endpoint), nil)
		for j, other := range servers[:i] {
			if s.Endpoint == other.Endpoint || s.Dir == other.Dir || s.AccessKey == other.AccessKey {
				t.Errorf("servers %d and %d share an endpoint, folder or key: %+v, %+v", j, i, s, other)
			}
		}
	}
	for i, s := range servers {
		if body, _ := mustGet(t, s.Client(), "same-name", "which"); string(body) != s.Endpoint {
			t.Errorf("server %d holds %q, want its own object", i, body)
		}
	}
	// Server 0's keys at server 1.
	stranger := servers[1].Client(noRetries, func(o *s3.Options) { o.Credentials = servers[0].Client().Options().Credentials })
	_, err := stranger.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String("same-name")})
	if got := errorCode(err); got != "XAdminUserNotFound" {
		t.Errorf("another server's keys: %q (%v), want XAdminUserNotFound", got, err)
	}
}

// Kill is a crash and Restart brings the same server back: objects, their metadata and an
// unfinished multipart upload all survive, and the upload can be finished.
func TestKillAndRestartKeepTheData(t *testing.T) {
	s := StartForTest(t)
	c := s.Client()
	ctx := t.Context()
	mustCreateBucket(t, s, "kept")
	mustPut(t, c, "kept", "object", []byte("before the crash"), map[string]string{"sha256": "abc"})

	part := bytes.Repeat([]byte("p"), 5<<20) // the smallest part but the last
	upload, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String("kept"), Key: aws.String("big")})
	if err != nil {
		t.Fatal(err)
	}
	first, err := c.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: aws.String("kept"), Key: aws.String("big"), UploadId: upload.UploadId,
		PartNumber: aws.Int32(1), Body: bytes.NewReader(part),
	})
	if err != nil {
		t.Fatal(err)
	}

	endpoint := s.Endpoint
	s.Kill()
	_, err = s.Client(noRetries).ListBuckets(ctx, &s3.ListBucketsInput{})
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("a request to a killed server: %v, want connection refused", err)
	}
	restarting := time.Now()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Restart took %s", time.Since(restarting).Round(time.Millisecond))
	if s.Endpoint != endpoint {
		t.Errorf("Endpoint after Restart = %s, want %s", s.Endpoint, endpoint)
	}

	// The shared client's pooled connection died with the server; the SDK retries on a new one.
	body, meta := mustGet(t, c, "kept", "object")
	if string(body) != "before the crash" || meta["sha256"] != "abc" {
		t.Errorf("after Restart: %q %v", body, meta)
	}
	uploads, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String("kept")})
	if err != nil {
		t.Fatal(err)
	}
	if len(uploads.Uploads) != 1 || aws.ToString(uploads.Uploads[0].UploadId) != aws.ToString(upload.UploadId) {
		t.Fatalf("multipart uploads after Restart: %+v, want the one begun before", uploads.Uploads)
	}
	second, err := c.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: aws.String("kept"), Key: aws.String("big"), UploadId: upload.UploadId,
		PartNumber: aws.Int32(2), Body: strings.NewReader("tail"),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: aws.String("kept"), Key: aws.String("big"), UploadId: upload.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{
			// ETags only: the upload was created without a checksum algorithm (see
			// TestMultipartPartChecksums).
			{PartNumber: aws.Int32(1), ETag: first.ETag},
			{PartNumber: aws.Int32(2), ETag: second.ETag},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := mustGet(t, c, "kept", "big"); !bytes.Equal(body, append(part, "tail"...)) {
		t.Errorf("the completed upload holds %d bytes, want %d", len(body), len(part)+4)
	}
}

func TestRestartOfARunningServer(t *testing.T) {
	s := StartForTest(t)
	mustCreateBucket(t, s, "running")
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().HeadBucket(t.Context(), &s3.HeadBucketInput{Bucket: aws.String("running")}); err != nil {
		t.Errorf("the bucket after Restart: %v", err)
	}
}

// fakeServer writes an executable script that stands in for versitygw.
func fakeServer(t *testing.T, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "versitygw")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script+"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestStartFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		script  string
		timeout time.Duration
		want    []string // in the error
	}{
		{
			name:   "exits at once",
			script: `echo "xattr check failed: something" >&2; exit 3`,
			want:   []string{"exited before answering", "exit status 3", "xattr check failed: something", "log: "},
		},
		{
			name:    "never answers",
			script:  `echo listening; exec sleep 60`,
			timeout: 300 * time.Millisecond,
			want:    []string{"no answer within 300ms", "listening"},
		},
		{
			// Another process took every port Start picked: it gives up after a few.
			name:   "port always taken",
			script: `echo "$2" >>"$(dirname "$0")/ports"; echo "listen tcp $2: bind: address already in use"; exit 1`,
			want:   []string{"port taken", "address already in use"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := fakeServer(t, tc.script)
			started := time.Now()
			s, err := Start(Options{Binary: bin, StartTimeout: tc.timeout})
			if err == nil {
				s.Stop()
				t.Fatal("Start succeeded")
			}
			t.Logf("after %s: %v", time.Since(started).Round(time.Millisecond), err)
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the error does not say %q", want)
				}
			}
			// The log stays for the error to point at; its folder is all that is left.
			logPath := regexp.MustCompile(`log: (\S+)`).FindStringSubmatch(err.Error())
			if logPath == nil {
				t.Fatal("the error names no log")
			}
			if _, err := os.Stat(logPath[1]); err != nil {
				t.Errorf("the log named by the error: %v", err)
			}
			left, _ := os.ReadDir(filepath.Dir(logPath[1]))
			if len(left) != 1 {
				t.Errorf("left behind: %v, want the log only", left)
			}
			os.RemoveAll(filepath.Dir(logPath[1]))
			if tc.name == "port always taken" {
				ports, _ := os.ReadFile(filepath.Join(filepath.Dir(bin), "ports"))
				if n := strings.Count(string(ports), "\n"); n != portAttempts {
					t.Errorf("tried %d ports, want %d: %s", n, portAttempts, ports)
				}
			}
		})
	}
}

func TestBinaryComesFromTheEnvironment(t *testing.T) {
	t.Setenv(BinaryEnv, "")
	if _, err := Binary(); err == nil || !strings.Contains(err.Error(), "hack/build-s3-server.sh") {
		t.Errorf("unset: %v, want it to say how to build one", err)
	}
	notExecutable := filepath.Join(t.TempDir(), "versitygw")
	os.WriteFile(notExecutable, nil, 0o600)
	for _, path := range []string{notExecutable, filepath.Dir(notExecutable), notExecutable + "-missing"} {
		t.Setenv(BinaryEnv, path)
		if _, err := Binary(); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want an error naming it", path, err)
		}
	}
}

func TestURLAndEnv(t *testing.T) {
	s := &Server{Endpoint: "http://127.0.0.1:7070", Region: Region, AccessKey: "AK", SecretKey: "SK"}
	for _, tc := range []struct{ bucket, prefix, want string }{
		{"bkt", "", "s3://bkt?endpoint=http://127.0.0.1:7070&region=us-east-1&use_path_style=true"},
		{"bkt", "runs/r1/", "s3://bkt/runs/r1/?endpoint=http://127.0.0.1:7070&region=us-east-1&use_path_style=true"},
		{"bkt", "a b#c", "s3://bkt/a%20b%23c?endpoint=http://127.0.0.1:7070&region=us-east-1&use_path_style=true"},
	} {
		if got := s.URL(tc.bucket, tc.prefix); got != tc.want {
			t.Errorf("URL(%q, %q) = %s, want %s", tc.bucket, tc.prefix, got, tc.want)
		}
	}
	want := "AWS_ACCESS_KEY_ID=AK AWS_SECRET_ACCESS_KEY=SK AWS_REGION=us-east-1"
	if got := strings.Join(s.Env(), " "); got != want {
		t.Errorf("Env() = %s, want %s", got, want)
	}
	s.CAFile = "/tmp/ca.crt"
	if got := s.Env(); got[len(got)-1] != "AWS_CA_BUNDLE=/tmp/ca.crt" {
		t.Errorf("Env() with TLS = %v, want AWS_CA_BUNDLE last", got)
	}
}
