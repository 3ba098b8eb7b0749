package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/s3test"
)

// copyCheckpoint is files.copy's step state (steps/files/checkpoint.go), as a test reads it.
type copyCheckpoint struct {
	Done []struct {
		Path string `json:"p"`
		Size int64  `json:"n"`
	} `json:"done"`
}

func readCopyCheckpoint(t *testing.T, dir, step string) copyCheckpoint {
	t.Helper()
	var ck copyCheckpoint
	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(context.Background(), "r")
	if err != nil {
		return ck
	}
	if rec := j.Step(step); rec != nil && len(rec.State) > 0 {
		if err := json.Unmarshal(rec.State, &ck); err != nil {
			t.Fatalf("step state: %v", err)
		}
	}
	return ck
}

const crashObjects = 800

// crashBody is object i of the source bucket: 16–80 KiB, deterministic.
func crashBody(i int) []byte {
	b := make([]byte, 16<<10+(i%5)*16<<10)
	for k := range b {
		b[k] = byte(k*31 + i)
	}
	return b
}

func crashKey(i int) string { return fmt.Sprintf("backup/v2/Incr-%06d", i) }

func setS3Env(t *testing.T, srv *s3test.Server) {
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// dstObjects reads every object of bucket dst on srv.
func dstObjects(t *testing.T, srv *s3test.Server, bucket string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	c := srv.Client()
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			g, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: o.Key})
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(g.Body)
			g.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			out[aws.ToString(o.Key)] = b
		}
	}
	return out
}

// A bucket copy between two S3 servers, SIGKILLed mid-copy, then resumed while the destination
// server is killed under it (the run fails, exit 1, naming the destination), then resumed to the
// end once the server is back: every object is there once and equal, and what the checkpoint
// said was done was neither read nor written again.
func TestCopyCrashAndResume(t *testing.T) {
	a := s3test.StartForTest(t)
	b := s3test.StartForTest(t, s3test.Options{AccessKey: a.AccessKey, SecretKey: a.SecretKey})
	setS3Env(t, a)
	for _, s := range []*s3test.Server{a, b} {
		if err := s.CreateBucket("bkt"); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string][]byte{}
	for i := range crashObjects {
		want[crashKey(i)] = crashBody(i)
		if _, err := a.Client().PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String(crashKey(i)), Body: bytes.NewReader(want[crashKey(i)])}); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	plan := writePlan(t, dir, "copy.yaml", fmt.Sprintf(`apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: copy-crash}
steps:
  - id: copy
    type: files.copy
    with: {from: %q, to: %q, workers: 2}
`, a.URL("bkt", ""), b.URL("bkt", "")))

	// Attempt 1: SIGKILLed once a checkpoint lists files done.
	kp := plantest.KillPoint{Event: engine.EventStepProgress, Step: "copy", MinDone: 1,
		Until: func() bool { return len(readCopyCheckpoint(t, dir, "copy").Done) >= 50 }, UntilDoc: "50 files checkpointed"}
	r := runPlanrun(t, dir, &kp, "apply", plan, "--run-id", "r")
	if !r.Killed {
		t.Fatalf("the copy ended (exit %d) before it was killed\n%s", r.Code, r)
	}
	ck := readCopyCheckpoint(t, dir, "copy")
	if len(ck.Done) >= crashObjects {
		t.Fatalf("the checkpoint lists all %d files: the kill came too late to test anything", len(ck.Done))
	}

	t.Logf("attempt 1 killed with %d files checkpointed", len(ck.Done))

	// Attempt 2: the destination server dies under it; the run fails with one line naming
	// the destination, exit 1.
	var once sync.Once
	var base int64 = -1
	r = plantest.RunBinary(t, planrunBin, dir, plantest.RunOptions{OnEvent: func(e engine.Event) {
		if e.Type != engine.EventStepProgress || e.Progress == nil {
			return
		}
		if base < 0 {
			base = e.Progress.Done
		}
		if e.Progress.Done >= base+50 {
			once.Do(b.Kill)
		}
	}}, "resume", "r", "--break-lock", "--no-rollback")
	if r.Code != exitRunFailed {
		t.Fatalf("resume with the destination killed: exit %d, want %d\n%s", r.Code, exitRunFailed, r)
	}
	failed := ""
	for _, e := range r.Events {
		if e.Type == engine.EventStepFailed {
			failed = e.Error
		}
	}
	if !strings.Contains(failed, b.Endpoint) || strings.Contains(failed, "\n") || strings.Contains(failed, a.SecretKey) {
		t.Errorf("step error %q: want one line naming %s, without a secret", failed, b.Endpoint)
	}
	t.Logf("attempt 2 failed with: %s", failed)
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	ck = readCopyCheckpoint(t, dir, "copy")
	if len(ck.Done) >= crashObjects {
		t.Fatalf("the checkpoint lists all %d files after the failed attempt", len(ck.Done))
	}

	t.Logf("attempt 2 left %d files checkpointed", len(ck.Done))

	// Attempt 3: to the end. What the checkpoint lists is checked against the listing only:
	// never read from the source, nor written or read on the destination.
	var res plantest.Result
	logA := a.RequestsDuring(t, func() {
		logB := b.RequestsDuring(t, func() { res = runPlanrun(t, dir, nil, "resume", "r", "--break-lock") })
		for _, d := range ck.Done {
			if strings.Contains(logB, "/bkt/"+d.Path+" ") {
				t.Errorf("%s was done before the crash, yet the destination saw a request for it", d.Path)
			}
		}
	})
	if res.Code != 0 {
		t.Fatalf("the last resume exited %d\n%s", res.Code, res)
	}
	for _, d := range ck.Done {
		if strings.Contains(logA, "GET | /bkt/"+d.Path+" ") {
			t.Errorf("%s was done before the crash, yet it was read from the source again", d.Path)
		}
	}
	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(t.Context(), "r")
	if err != nil {
		t.Fatal(err)
	}
	out := j.Step("copy").Outputs
	if outputInt(t, out, "files") != crashObjects || outputInt(t, out, "copied")+outputInt(t, out, "skipped") != crashObjects || outputInt(t, out, "resumed") < int64(len(ck.Done)) {
		t.Errorf("outputs %v: want %d files, copied+skipped = files, resumed ≥ %d", out, crashObjects, len(ck.Done))
	}
	t.Logf("attempt 3 outputs: files %v copied %v skipped %v resumed %v", out["files"], out["copied"], out["skipped"], out["resumed"])
	got := dstObjects(t, b, "bkt")
	if len(got) != len(want) {
		t.Errorf("the destination holds %d objects, want %d", len(got), len(want))
	}
	for k, body := range want {
		if !bytes.Equal(got[k], body) {
			t.Errorf("%s: %d bytes, not the source's %d", k, len(got[k]), len(body))
		}
	}
}

// Failures a copy between buckets meets: the destination's credentials refused, its bucket
// missing, its endpoint unreachable. Each fails the run with exit 1 and one line on stderr that
// names the location (no secret in it, nor anywhere in the run's files), and leaves the run for
// resume: once the cause is fixed, resume finishes the copy.
func TestCopyErrorsExit1(t *testing.T) {
	a := s3test.StartForTest(t)
	// The environment's access key with another secret: refused (SignatureDoesNotMatch).
	other := s3test.StartForTest(t, s3test.Options{AccessKey: a.AccessKey})
	// Keys of its own: the environment's access key is unknown there.
	stranger := s3test.StartForTest(t)
	setS3Env(t, a)
	for _, s := range []*s3test.Server{a, other, stranger} {
		if err := s.CreateBucket("src"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		if _, err := a.Client().PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String("src"), Key: aws.String(crashKey(i)), Body: bytes.NewReader(crashBody(i))}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, to string
		want     []string
		fix      func(t *testing.T) // makes resume succeed
	}{
		{"wrong secret key", other.URL("src", "copy"), []string{other.Endpoint, "access denied"}, nil},
		{"unknown access key", stranger.URL("src", "copy"), []string{stranger.Endpoint, "access denied"}, nil},
		{"missing bucket", a.URL("missing", "copy"), []string{"s3://missing/copy?endpoint=" + a.Endpoint, "bucket does not exist"},
			func(t *testing.T) {
				if err := a.CreateBucket("missing"); err != nil {
					t.Fatal(err)
				}
			}},
		{"unreachable endpoint", "s3://dst/copy?endpoint=http://127.0.0.1:1&region=us-east-1", []string{"s3://dst/copy?endpoint=http://127.0.0.1:1", "endpoint unreachable"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			plan := writePlan(t, dir, "copy.yaml", fmt.Sprintf(`apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: copy-errors}
steps:
  - id: copy
    type: files.copy
    with: {from: %q, to: %q}
`, a.URL("src", ""), tc.to))
			r := plantest.RunBinary(t, planrunBin, dir, plantest.RunOptions{Plain: true}, "apply", plan, "--run-id", "r", "--no-rollback")
			if r.Code != exitRunFailed {
				t.Fatalf("exit %d, want %d\n%s", r.Code, exitRunFailed, r)
			}
			lines := strings.Split(strings.TrimSpace(r.Stderr), "\n")
			if len(lines) != 1 {
				t.Errorf("stderr is not one line:\n%s", r.Stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.Stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.Stderr)
				}
			}
			plantest.NoSecrets(t, dir, r.Stdout+r.Stderr, a.SecretKey, other.SecretKey, stranger.SecretKey)
			if tc.fix == nil {
				return
			}
			tc.fix(t)
			r = plantest.RunBinary(t, planrunBin, dir, plantest.RunOptions{Plain: true}, "resume", "r")
			if r.Code != 0 {
				t.Fatalf("resume after the fix: exit %d\n%s", r.Code, r)
			}
		})
	}
}
