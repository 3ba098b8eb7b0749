package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
)

// Sizes of the etcd crash test: keys under the source prefix, bytes a value.
const (
	etcdCrashKeys      = 50000
	etcdCrashValueSize = 1024
)

// etcdCrashCopyOptions slow the copy down from ~30,000 keys/s to ~8,000 here (smaller
// transactions, fewer in flight) so that it checkpoints (every second) several times before it
// ends and the kills land between checkpoints, past the last one.
const etcdCrashCopyOptions = "batchOps: 2, parallel: 2"

// Prefixes of the etcd crash test: the copy rewrites the source prefix into the target one.
const (
	etcdCrashPrefix       = "/registry/"
	etcdCrashTargetPrefix = "/tenants/t1/registry/"
)

// TestEtcdCrashAndResume copies 50,000 keys of 1 KiB (a few of them with a lease) from one etcd
// to another under a rewritten prefix, with a planrun that is SIGKILLed in the middle of the copy,
// resumed and SIGKILLed again further on, then resumed to the end. Between the attempts the
// source changes (keys added, changed, deleted, before and after the copy's checkpoint): the
// resumed copy must still produce the source as of the revision the first attempt pinned, which
// etcd.verify and the test itself check key by key.
func TestEtcdCrashAndResume(t *testing.T) {
	srcEtcd := controlplane.StartEtcdForTest(t)
	dstEtcd := controlplane.StartEtcdForTest(t)
	src, dst := etcdTestClient(t, srcEtcd.URL), etcdTestClient(t, dstEtcd.URL)
	ctx := t.Context()

	// The source: the keys to copy, two leases of an hour with five keys each, and keys beside
	// the prefix that must not be copied. The target: a key beside the target prefix that must
	// be left alone.
	var leases [2]clientv3.LeaseID
	for i := range leases {
		g, err := src.Grant(ctx, 3600)
		if err != nil {
			t.Fatal(err)
		}
		leases[i] = g.ID
	}
	leaseOf := func(i int) clientv3.LeaseID {
		switch i % 10000 {
		case 4321:
			return leases[0]
		case 8765:
			return leases[1]
		}
		return clientv3.NoLease
	}
	started := time.Now()
	seedEtcd(t, src, etcdCrashKeys, func(i int) clientv3.Op {
		var opts []clientv3.OpOption
		if l := leaseOf(i); l != clientv3.NoLease {
			opts = append(opts, clientv3.WithLease(l))
		}
		return clientv3.OpPut(etcdCrashKey(i), etcdCrashValue(i, 0), opts...)
	})
	for _, k := range []string{"/registry-other/a", "/other/b", "/registry"} {
		if _, err := src.Put(ctx, k, "not under the prefix"); err != nil {
			t.Fatal(err)
		}
	}
	const besideTarget = "/tenants/t0/registry/keep"
	if _, err := dst.Put(ctx, besideTarget, "not under the target prefix"); err != nil {
		t.Fatal(err)
	}
	resp, err := src.Get(ctx, etcdCrashPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != etcdCrashKeys {
		t.Fatalf("seeded %d keys under %s, want %d", resp.Count, etcdCrashPrefix, etcdCrashKeys)
	}
	pinned := resp.Header.Revision // what the copy pins: nothing is written before it starts
	t.Logf("seeded %d keys of %d bytes at revision %d (%s)", etcdCrashKeys, etcdCrashValueSize, pinned, time.Since(started).Round(time.Millisecond))

	dir := t.TempDir()
	plan := writePlan(t, dir, "plan.yaml", fmt.Sprintf(`apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: etcd-crash}
datastores:
  src: {endpoints: [%q]}
  dst: {endpoints: [%q]}
steps:
  - id: copy
    type: etcd.copy
    with: {source: src, target: dst, prefix: %q, targetPrefix: %q, %s}
  - id: verify
    type: etcd.verify
    with:
      source: src
      target: dst
      prefix: %q
      targetPrefix: %q
      revision: ${{ steps.copy.outputs.revision }}
`, srcEtcd.URL, dstEtcd.URL, etcdCrashPrefix, etcdCrashTargetPrefix, etcdCrashCopyOptions, etcdCrashPrefix, etcdCrashTargetPrefix))

	// Attempt 1, killed once its checkpoint counts 15,000 keys committed on the target.
	started = time.Now()
	kp := checkpointKillPoint(dir, 15000)
	r := runPlanrun(t, dir, &kp, "apply", plan, "--run-id", "r")
	if !r.Killed {
		t.Fatalf("the copy ended (exit %d) before it was killed at %s\n%s", r.Code, kp, r)
	}
	ckpt, onTarget := assertKilledMidCopy(t, dst, dir, pinned, kp.MinDone)
	t.Logf("killed at %s: %d keys on the target, checkpoint after %q (%d keys)", kp, onTarget, ckpt.LastKey, ckpt.Keys)

	// Meanwhile on the source, all over the prefix (so behind and ahead of the checkpoint):
	// values change, keys go, keys come, a lease key is rewritten without its lease.
	mutateEtcdSource(t, src, 123, 456, 789)
	if _, err := src.Put(ctx, etcdCrashKey(4321), "rewritten without a lease"); err != nil {
		t.Fatal(err)
	}

	// Attempt 2: resumed from the checkpoint, killed again once it checkpointed 35,000 keys and
	// at least one checkpoint of its own.
	kp = checkpointKillPoint(dir, max(35000, ckpt.Keys+1))
	r = runPlanrun(t, dir, &kp, "resume", "r", "--break-lock")
	if !r.Killed {
		t.Fatalf("the resumed copy ended (exit %d) before it was killed at %s\n%s", r.Code, kp, r)
	}
	assertContinued(t, r, ckpt)
	ckpt, onTarget = assertKilledMidCopy(t, dst, dir, pinned, kp.MinDone)
	t.Logf("killed at %s: %d keys on the target, checkpoint after %q (%d keys)", kp, onTarget, ckpt.LastKey, ckpt.Keys)

	mutateEtcdSource(t, src, 234, 567, 890)

	// Attempt 3: to the end.
	r = runPlanrun(t, dir, nil, "resume", "r", "--break-lock")
	if r.Code != 0 {
		t.Fatalf("the last resume exited %d\n%s", r.Code, r)
	}
	assertContinued(t, r, ckpt)
	t.Logf("copy finished after two kills (%s)", time.Since(started).Round(time.Millisecond))

	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != engine.RunSucceeded {
		t.Fatalf("run status %s", j.Status)
	}
	for _, id := range []string{"copy", "verify"} {
		if rec := j.Step(id); rec == nil || rec.Status != engine.StepSucceeded {
			t.Fatalf("step %s: %+v, want Succeeded", id, rec)
		}
	}
	out := j.Step("copy").Outputs
	if out["resumed"] != true || out["restarted"] != false {
		t.Errorf("copy outputs: resumed %v, restarted %v; want true, false (outputs %v)", out["resumed"], out["restarted"], out)
	}
	if n := outputInt(t, out, "keys"); n != etcdCrashKeys {
		t.Errorf("copy outputs.keys = %d, want %d (outputs %v)", n, etcdCrashKeys, out)
	}
	if rev := outputInt(t, out, "revision"); rev != pinned {
		t.Errorf("copy outputs.revision = %d, want the revision pinned by the first attempt, %d", rev, pinned)
	}
	if n := outputInt(t, out, "leases"); n != int64(len(leases)) {
		t.Errorf("copy outputs.leases = %d, want %d", n, len(leases))
	}
	vout := j.Step("verify").Outputs
	if vout["equal"] != true || outputInt(t, vout, "keys") != etcdCrashKeys || outputInt(t, vout, "targetKeys") != etcdCrashKeys || outputInt(t, vout, "revision") != pinned {
		t.Errorf("verify outputs %v, want equal, %d keys on both sides, revision %d", vout, etcdCrashKeys, pinned)
	}

	// Our own comparison: the target prefix holds exactly the source prefix at the pinned
	// revision, rewritten, with the lease keys on a live target lease; the source has changed
	// since; nothing else on the target was touched.
	want := etcdRange(t, src, etcdCrashPrefix, pinned)
	got := etcdRange(t, dst, etcdCrashTargetPrefix, 0)
	if len(want) != etcdCrashKeys {
		t.Fatalf("the source holds %d keys at revision %d, want %d", len(want), pinned, etcdCrashKeys)
	}
	problems := 0
	problem := func(format string, args ...any) {
		if problems++; problems <= 20 {
			t.Errorf(format, args...)
		}
	}
	targetLeases := map[int64]bool{}
	for k, kv := range want {
		tk := etcdCrashTargetPrefix + k[len(etcdCrashPrefix):]
		g, ok := got[tk]
		switch {
		case !ok:
			problem("key %q (source %q) missing on the target", tk, k)
			continue
		case string(g.Value) != string(kv.Value):
			problem("key %q: value %.40q…, want the source's at revision %d, %.40q…", tk, g.Value, pinned, kv.Value)
		case (kv.Lease != 0) != (g.Lease != 0):
			problem("key %q: lease %x on the target, source lease %x", tk, g.Lease, kv.Lease)
		}
		if g.Lease != 0 {
			targetLeases[g.Lease] = true
		}
	}
	for tk := range got {
		if _, ok := want[etcdCrashPrefix+tk[len(etcdCrashTargetPrefix):]]; !ok {
			problem("key %q on the target is not on the source at revision %d", tk, pinned)
		}
	}
	if problems > 20 {
		t.Errorf("… %d problems in all", problems)
	}
	if len(got) != len(want) {
		t.Errorf("the target prefix holds %d keys, want %d", len(got), len(want))
	}
	for id := range targetLeases {
		ttl, err := dst.TimeToLive(ctx, clientv3.LeaseID(id))
		if err != nil {
			t.Fatal(err)
		}
		if ttl.TTL <= 0 {
			t.Errorf("target lease %x has expired (TTL %d)", id, ttl.TTL)
		}
	}
	if now := etcdRange(t, src, etcdCrashPrefix, 0); len(now) == len(want) && string(now[etcdCrashKey(123)].Value) == string(want[etcdCrashKey(123)].Value) {
		t.Errorf("the source did not change after the pinned revision: the test proves nothing")
	}
	all, err := dst.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if all.Count != int64(len(got))+1 {
		t.Errorf("the target holds %d keys in all, want %d under %s and %s", all.Count, len(got), etcdCrashTargetPrefix, besideTarget)
	}
	if g, err := dst.Get(ctx, besideTarget); err != nil || len(g.Kvs) != 1 || string(g.Kvs[0].Value) != "not under the target prefix" {
		t.Errorf("%s on the target: %v %v", besideTarget, g, err)
	}
}

func etcdCrashKey(i int) string { return fmt.Sprintf("%sk%06d", etcdCrashPrefix, i) }

// etcdCrashValue is the value of key i in its generation gen: etcdCrashValueSize printable bytes,
// different for every i and gen.
func etcdCrashValue(i, gen int) string {
	rnd := rand.New(rand.NewPCG(uint64(i), uint64(gen)))
	b := fmt.Appendf(make([]byte, 0, etcdCrashValueSize), "%d/%d:", i, gen)
	for len(b) < etcdCrashValueSize {
		b = append(b, 'a'+byte(rnd.IntN(26)))
	}
	return string(b)
}

// mutateEtcdSource changes the source after the pinned revision, every thousandth key from the
// given offsets on: one gets a new value, one is deleted, one gets a new key right after it.
func mutateEtcdSource(t *testing.T, c *clientv3.Client, change, del, add int) {
	t.Helper()
	var ops []clientv3.Op
	for base := 0; base < etcdCrashKeys; base += 1000 {
		ops = append(ops,
			clientv3.OpPut(etcdCrashKey(base+change), etcdCrashValue(base+change, 1)),
			clientv3.OpDelete(etcdCrashKey(base+del)),
			clientv3.OpPut(etcdCrashKey(base+add)+"-new", etcdCrashValue(base+add, 1)))
	}
	ops = append(ops, clientv3.OpPut(etcdCrashKey(etcdCrashKeys+add), "after the last key"))
	for len(ops) > 0 {
		n := min(len(ops), 100)
		if _, err := c.Txn(t.Context()).Then(ops[:n]...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[n:]
	}
}

// etcdCopyCheckpoint is what etcd.copy records in its step state (the fields the test reads).
type etcdCopyCheckpoint struct {
	Revision int64  `json:"revision"`
	LastKey  string `json:"lastKey"`
	Keys     int64  `json:"keys"`
}

// readEtcdCopyCheckpoint reads the copy's checkpoint from the journal of run r in dir, as a run
// in progress left it; ok is false while there is none.
func readEtcdCopyCheckpoint(dir string) (ckpt etcdCopyCheckpoint, rec *engine.StepRecord, j *engine.Journal, ok bool) {
	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(context.Background(), "r")
	if err != nil {
		return ckpt, nil, nil, false
	}
	rec = j.Step("copy")
	if rec == nil || len(rec.State) == 0 || json.Unmarshal(rec.State, &ckpt) != nil {
		return ckpt, rec, j, false
	}
	return ckpt, rec, j, true
}

// checkpointKillPoint kills the run shortly after the first progress of the copy at which its
// checkpoint (in the journal) counts at least keys keys: what was committed after that
// checkpoint is not recorded and must be copied again by the resume.
func checkpointKillPoint(dir string, keys int64) plantest.KillPoint {
	return plantest.KillPoint{
		Event: engine.EventStepProgress, Step: "copy", MinDone: keys, Delay: 200 * time.Millisecond,
		Until: func() bool {
			ckpt, _, _, ok := readEtcdCopyCheckpoint(dir)
			return ok && ckpt.Keys >= keys
		},
		UntilDoc: fmt.Sprintf("checkpoint >= %d keys", keys),
	}
}

// assertKilledMidCopy checks that a killed run stopped inside the copy, with its checkpoint on
// the pinned revision and at least floor keys, and with the target holding at least the keys
// of the checkpoint but not all of them. It returns the checkpoint and how many keys the target
// holds.
func assertKilledMidCopy(t *testing.T, dst *clientv3.Client, dir string, pinned, floor int64) (etcdCopyCheckpoint, int64) {
	t.Helper()
	ckpt, rec, j, ok := readEtcdCopyCheckpoint(dir)
	if j == nil || rec == nil || j.Status != engine.RunRunning || rec.Status != engine.StepRunning {
		t.Fatalf("after SIGKILL the journal says run %+v, step copy %+v; want a run and a step still Running", j, rec)
	}
	if v := j.Step("verify"); v != nil && v.Status != engine.StepPending {
		t.Fatalf("after SIGKILL in the copy, step verify is %s", v.Status)
	}
	if !ok {
		t.Fatalf("the copy's checkpoint %q cannot be read", rec.State)
	}
	if ckpt.Revision != pinned || ckpt.Keys < floor || ckpt.LastKey == "" {
		t.Fatalf("the copy's checkpoint %s: want revision %d (the source's before the copy) and at least %d keys", rec.State, pinned, floor)
	}
	resp, err := dst.Get(t.Context(), etcdCrashTargetPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count < ckpt.Keys || resp.Count >= etcdCrashKeys {
		t.Fatalf("killed with %d of %d keys on the target, checkpoint at %d: not in the middle of the copy", resp.Count, etcdCrashKeys, ckpt.Keys)
	}
	return ckpt, resp.Count
}

// assertContinued checks that a resumed copy went on from the checkpoint instead of starting
// over: its first progress report counts the checkpoint's keys and more.
func assertContinued(t *testing.T, r plantest.Result, from etcdCopyCheckpoint) {
	t.Helper()
	for _, e := range r.Events {
		if e.Type == engine.EventStepProgress && e.StepID == "copy" {
			if e.Progress.Done <= from.Keys {
				t.Errorf("the resumed copy first reported %d keys done, the checkpoint had %d", e.Progress.Done, from.Keys)
			}
			return
		}
	}
	t.Errorf("the resumed copy reported no progress")
}

func etcdTestClient(t *testing.T, url string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// seedEtcd commits op(0) … op(n-1) in transactions of 100 ops, four at a time.
func seedEtcd(t *testing.T, c *clientv3.Client, n int, op func(int) clientv3.Op) {
	t.Helper()
	starts := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	for range 4 {
		wg.Go(func() {
			for i := range starts {
				ops := make([]clientv3.Op, 0, 100)
				for j := i; j < min(i+100, n); j++ {
					ops = append(ops, op(j))
				}
				ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
				_, err := c.Txn(ctx).Then(ops...).Commit()
				cancel()
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("seeding keys %d…: %w", i, err) })
				}
			}
		})
	}
	for i := 0; i < n; i += 100 {
		starts <- i
	}
	close(starts)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}

// etcdRange reads every key under prefix at rev (0: the current revision) in pages.
func etcdRange(t *testing.T, c *clientv3.Client, prefix string, rev int64) map[string]*mvccpb.KeyValue {
	t.Helper()
	out := map[string]*mvccpb.KeyValue{}
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	for {
		resp, err := c.Get(t.Context(), from, clientv3.WithRange(end), clientv3.WithLimit(2000), clientv3.WithRev(rev))
		if err != nil {
			t.Fatalf("reading %q at revision %d: %v", prefix, rev, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision // every page at the revision of the first
		}
		for _, kv := range resp.Kvs {
			out[string(kv.Key)] = kv
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
