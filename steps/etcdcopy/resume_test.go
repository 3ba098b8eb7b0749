package etcdcopy_test

import (
	"context"
	"fmt"
	"math/rand"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
)

// interrupted starts a run of plan and cancels it once the copy reported at least after keys,
// as a crash would stop it; it returns the store to resume from.
func interrupted(t *testing.T, p *engine.Plan, after int64) engine.Store {
	t.Helper()
	store := engine.NewDirStore(filepath.Join(t.TempDir(), "runs"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var once sync.Once
	r := &engine.Runner{Store: store, NoRollback: true, Observer: engine.ObserverFunc(func(e engine.Event) {
		if e.Type == engine.EventStepProgress && e.Progress.Done >= after {
			once.Do(cancel)
		}
	})}
	_, err := r.Apply(ctx, p, engine.ApplyOptions{RunID: "crash"})
	if err == nil {
		t.Fatal("the copy finished before it was interrupted")
	}
	t.Logf("interrupted: %v", err)
	return store
}

func resume(t *testing.T, store engine.Store, p *engine.Plan) *engine.Journal {
	t.Helper()
	r := &engine.Runner{Store: store, NoRollback: true}
	j, err := r.Resume(context.Background(), "crash", func(*engine.Journal) (*engine.Plan, error) { return p, nil })
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// The copy is slowed down (one writer, small transactions) so that it can be interrupted.
const slowCopy = "pageSize: 200, batchOps: 8, parallel: 1"

func TestCrashResume(t *testing.T) {
	need(t)
	from, to := prefix(t, "from"), prefix(t, "to")
	const n = 8000
	seed(t, src, from, n, 100)
	p := load(t, datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, %s}}
  - {id: verify, type: etcd.verify, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, revision: "${{ steps.copy.outputs.revision }}"}}
`, from, to, slowCopy, from, to)))
	store := interrupted(t, p, 1000)
	partial := len(kvs(t, dst, to, 0))
	t.Logf("%d of %d keys copied before the interruption", partial, n)
	if partial == 0 || partial >= n {
		t.Fatalf("%d keys copied before the interruption", partial)
	}
	// The resume must neither refuse (the keys are its own) nor copy again from the start.
	j := resume(t, store, p)
	out := j.Step("copy").Outputs
	if out["resumed"] != true || out["restarted"] != false || plantest.Num(t, out, "keys") != n {
		t.Fatalf("outputs %v", out)
	}
	sameContent(t, kvs(t, src, from, 0), kvs(t, dst, to, 0))
	if j.Step("verify").Outputs["equal"] != true {
		t.Fatalf("verify outputs %v", j.Step("verify").Outputs)
	}
}

// TestCompactedWhilePaused: the pinned revision is compacted before the resume; the copy starts
// again from a fresh revision, says so, and the target equals the source at that revision
// (keys deleted meanwhile are not left behind).
func TestCompactedWhilePaused(t *testing.T) {
	need(t)
	ctx := context.Background()
	from, to := prefix(t, "from"), prefix(t, "to")
	const n = 6000
	seed(t, src, from, n, 100)
	p := load(t, datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, %s}}
  - {id: verify, type: etcd.verify, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, revision: "${{ steps.copy.outputs.revision }}"}}
`, from, to, slowCopy, from, to)))
	store := interrupted(t, p, 800)
	// Meanwhile on the source: the first keys (already copied) are deleted, others change.
	if _, err := src.Delete(ctx, key(from, 0), clientv3.WithRange(key(from, 100))); err != nil {
		t.Fatal(err)
	}
	resp, err := src.Put(ctx, key(from, 200), "changed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	j := resume(t, store, p)
	out := j.Step("copy").Outputs
	if out["restarted"] != true || out["resumed"] != true || plantest.Num(t, out, "keys") != n-100 || plantest.Num(t, out, "revision") < resp.Header.Revision {
		t.Fatalf("outputs %v", out)
	}
	got := kvs(t, dst, to, 0)
	sameContent(t, kvs(t, src, from, 0), got)
	if got["k000200"] != "changed" {
		t.Fatalf("changed key: %q", got["k000200"])
	}
}

// TestWritesDuringCopy: keys are put and deleted under the prefix while the copy runs; the
// target equals the source at the pinned revision, not a mixture.
func TestWritesDuringCopy(t *testing.T) {
	need(t)
	ctx := context.Background()
	from, to := prefix(t, "from"), prefix(t, "to")
	const n = 3000
	seed(t, src, from, n, 100)
	stop := make(chan struct{})
	var writes atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		rnd := rand.New(rand.NewSource(1))
		for {
			select {
			case <-stop:
				return
			default:
			}
			i := rnd.Intn(n + 500)
			var err error
			if rnd.Intn(3) == 0 {
				_, err = src.Delete(ctx, key(from, i))
			} else {
				_, err = src.Put(ctx, key(from, i), fmt.Sprintf("rewritten-%d", writes.Load()))
			}
			if err != nil {
				t.Error(err)
				return
			}
			writes.Add(1)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	j, err := apply(t, datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, %s}}
  - {id: verify, type: etcd.verify, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, revision: "${{ steps.copy.outputs.revision }}"}}
`, from, to, slowCopy, from, to)), runOpts{})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	rev := plantest.Num(t, j.Step("copy").Outputs, "revision")
	atRev := kvs(t, src, from, rev)
	now := kvs(t, src, from, 0)
	changed := 0
	for k, v := range now {
		if atRev[k] != v {
			changed++
		}
	}
	t.Logf("%d writes on the source, %d keys differ between the pinned revision and the end", writes.Load(), changed)
	if changed == 0 {
		t.Fatal("no write happened on the source during the copy")
	}
	sameContent(t, atRev, kvs(t, dst, to, 0))
}
