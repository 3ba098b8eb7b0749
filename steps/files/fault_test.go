package files

import (
	"fmt"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/s3test"
)

// The destination server is killed mid-copy and comes back a moment later: the step's attempt
// fails on a transient error (endpoint unreachable), the engine retries it, and the retry skips
// what the checkpoint lists. Every object ends up in the destination once, equal.
func TestCopyRetriesThroughADestinationRestart(t *testing.T) {
	a := s3test.StartForTest(t)
	b := s3test.StartForTest(t, s3test.Options{AccessKey: a.AccessKey, SecretKey: a.SecretKey})
	setEnv(t, a)
	bucket(t, a, "src")
	bucket(t, b, "dst")
	want := map[string][]byte{}
	for i := range 600 {
		body := make([]byte, 8<<10+i%7*8<<10)
		for k := range body {
			body[k] = byte(i + k*13)
		}
		want[fmt.Sprintf("v2/Incr-%05d", i)] = body
	}
	put(t, a.Client(), "src", want)

	restarted := make(chan error, 1)
	go func() {
		// Killed once the destination holds a tenth of the objects, restarted 6 s later:
		// longer than the SDK's own retries of a refused connection (three attempts), so that
		// the step's attempt fails and the engine's retry is what carries the copy through.
		for {
			out, err := b.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String("dst"), MaxKeys: aws.Int32(100)})
			if err == nil && len(out.Contents) >= 60 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		b.Kill()
		time.Sleep(6 * time.Second)
		restarted <- b.Restart()
	}()
	body := fmt.Sprintf("steps:\n  - {id: s, type: files.copy, retry: {attempts: 6, backoff: 2s}, with: {from: %q, to: %q, workers: 4}}\n",
		a.URL("src", ""), b.URL("dst", ""))
	r := plantest.Apply(t, body, plantest.Options{NoRollback: true, Timeout: 2 * time.Minute})
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	if r.Err != nil {
		t.Fatal(r.Err)
	}
	rec := r.Journal.Step("s")
	if rec.Attempts < 2 {
		t.Fatalf("%d attempt(s): the server was killed after the copy ended, the test proves nothing", rec.Attempts)
	}
	out := rec.Outputs
	t.Logf("%d attempts; outputs files %v copied %v skipped %v resumed %v", rec.Attempts, out["files"], out["copied"], out["skipped"], out["resumed"])
	if plantest.Num(t, out, "files") != int64(len(want)) || plantest.Num(t, out, "resumed") == 0 {
		t.Errorf("outputs %v: want %d files, some resumed from the checkpoint", out, len(want))
	}
	sameObjects(t, objects(t, b.Client(), "dst", ""), want, true)
}
