package etcdcopy_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"planrun.dev/planrun/internal/plantest"
)

func TestCopy(t *testing.T) {
	need(t)
	cases := []struct {
		name, with string
		rewrite    bool
	}{
		{"same prefix", "", false},
		{"prefix rewrite", "", true},
		{"small pages and batches", "pageSize: 7, batchOps: 5, batchBytes: 2000, parallel: 3", true},
		{"one writer", "parallel: 1, batchOps: 1", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			from := prefix(t, "from")
			to := from
			if tc.rewrite {
				to = prefix(t, "to")
			}
			seed(t, src, from, 250, 300)
			// Sizes up to 64 KiB, empty values, and a key equal to the prefix itself.
			for i, size := range []int{0, 1, 64 << 10, 1000} {
				if _, err := src.Put(context.Background(), fmt.Sprintf("%sz%d", from, i), value(i, size)[:size]); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := src.Put(context.Background(), from, "the prefix"); err != nil {
				t.Fatal(err)
			}
			// Neighbours that must not be copied.
			if _, err := src.Put(context.Background(), from[:len(from)-1], "no"); err != nil {
				t.Fatal(err)
			}
			j := mustApply(t, datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, %s}}
  - {id: verify, type: etcd.verify, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, revision: "${{ steps.copy.outputs.revision }}"}}
`, from, to, tc.with, from, to)))
			want := kvs(t, src, from, 0)
			sameContent(t, want, kvs(t, dst, to, 0))
			out := j.Step("copy").Outputs
			if plantest.Num(t, out, "keys") != 255 || plantest.Num(t, out, "leases") != 0 || out["resumed"] != false || out["restarted"] != false {
				t.Fatalf("outputs %v", out)
			}
			var bytes int64
			for k, v := range want {
				bytes += int64(len(to) + len(k) + len(v))
			}
			if plantest.Num(t, out, "bytes") != bytes {
				t.Fatalf("bytes %d, want %d", plantest.Num(t, out, "bytes"), bytes)
			}
			vout := j.Step("verify").Outputs
			if plantest.Num(t, vout, "keys") != 255 || vout["sha256"] != vout["targetSha256"] || vout["equal"] != true || plantest.Num(t, vout, "revision") != plantest.Num(t, out, "revision") {
				t.Fatalf("verify outputs %v", vout)
			}
			if got := kvs(t, dst, from[:len(from)-1], 0); len(got) != len(kvs(t, dst, from, 0)) {
				t.Fatalf("a key outside the prefix was copied")
			}
		})
	}
}

func TestLeases(t *testing.T) {
	need(t)
	ctx := context.Background()
	for _, mode := range []string{"keep", "drop"} {
		t.Run(mode, func(t *testing.T) {
			from, to := prefix(t, "from"), prefix(t, "to")
			l1, err := src.Grant(ctx, 600)
			if err != nil {
				t.Fatal(err)
			}
			l2, err := src.Grant(ctx, 300)
			if err != nil {
				t.Fatal(err)
			}
			seed(t, src, from+"a/", 5, 10, clientv3.WithLease(l1.ID))
			seed(t, src, from+"b/", 3, 10, clientv3.WithLease(l2.ID))
			seed(t, src, from+"c/", 4, 10)
			j := mustApply(t, datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, leases: %s, batchOps: 2}}
`, from, to, mode)))
			out := j.Step("copy").Outputs
			resp, err := dst.Get(ctx, to, clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 12 {
				t.Fatalf("%d keys on the target, want 12", len(resp.Kvs))
			}
			leases := map[string]map[clientv3.LeaseID]bool{}
			for _, kv := range resp.Kvs {
				group := string(kv.Key[len(to) : len(to)+1])
				if leases[group] == nil {
					leases[group] = map[clientv3.LeaseID]bool{}
				}
				leases[group][clientv3.LeaseID(kv.Lease)] = true
			}
			if mode == "drop" {
				for g, ids := range leases {
					if len(ids) != 1 || !ids[0] {
						t.Fatalf("group %s: leases %v, want none", g, ids)
					}
				}
				if plantest.Num(t, out, "leases") != 0 {
					t.Fatalf("outputs %v", out)
				}
				return
			}
			if plantest.Num(t, out, "leases") != 2 {
				t.Fatalf("outputs %v, want 2 leases", out)
			}
			for g, srcLease := range map[string]clientv3.LeaseID{"a": l1.ID, "b": l2.ID} {
				if len(leases[g]) != 1 {
					t.Fatalf("group %s: leases %v, want one", g, leases[g])
				}
				var id clientv3.LeaseID
				for id = range leases[g] {
				}
				if id == 0 {
					t.Fatalf("group %s has no lease on the target", g)
				}
				tt, err := dst.TimeToLive(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				st, err := src.TimeToLive(ctx, srcLease)
				if err != nil {
					t.Fatal(err)
				}
				if tt.TTL <= 0 || tt.TTL > st.GrantedTTL || tt.GrantedTTL > st.GrantedTTL {
					t.Fatalf("group %s: target lease TTL %d (granted %d), source TTL %d (granted %d)", g, tt.TTL, tt.GrantedTTL, st.TTL, st.GrantedTTL)
				}
			}
			if !leases["c"][0] || len(leases["c"]) != 1 {
				t.Fatalf("keys without lease got leases %v", leases["c"])
			}
		})
	}
}

func TestTargetPolicies(t *testing.T) {
	need(t)
	ctx := context.Background()
	for _, policy := range []string{"refuse", "default", "clean", "overwrite"} {
		t.Run(policy, func(t *testing.T) {
			from, to := prefix(t, "from"), prefix(t, "to")
			seed(t, src, from, 20, 10)
			// The target holds a stale key that the source also has and one only it has.
			if _, err := dst.Put(ctx, key(to, 3), "stale"); err != nil {
				t.Fatal(err)
			}
			if _, err := dst.Put(ctx, to+"only-on-target", "x"); err != nil {
				t.Fatal(err)
			}
			with := ""
			if policy != "default" {
				with = ", targetPolicy: " + policy
			}
			j, err := apply(t, datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q%s}}
`, from, to, with)), runOpts{})
			got := kvs(t, dst, to, 0)
			switch policy {
			case "refuse", "default":
				plantest.WantError(t, err, `step "copy" failed: target datastore "dst" is not empty under "`+to+`": 2 keys, the first "`+key(to, 3)+`"`)
				if len(got) != 2 || got["k000003"] != "stale" {
					t.Fatalf("refused copy changed the target: %v", got)
				}
			case "clean":
				if err != nil {
					t.Fatal(err)
				}
				sameContent(t, kvs(t, src, from, 0), got)
			case "overwrite":
				if err != nil {
					t.Fatal(err)
				}
				if got["only-on-target"] != "x" || got["k000003"] != value(3, 10) || len(got) != 21 {
					t.Fatalf("overwrite: target %v", got)
				}
				if plantest.Num(t, j.Step("copy").Outputs, "keys") != 20 {
					t.Fatalf("outputs %v", j.Step("copy").Outputs)
				}
			}
		})
	}
}

func TestVerifyFails(t *testing.T) {
	need(t)
	ctx := context.Background()
	from, to := prefix(t, "from"), prefix(t, "to")
	seed(t, src, from, 50, 10)
	mustApply(t, datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q}}
`, from, to)))
	for _, op := range []clientv3.Op{
		clientv3.OpDelete(key(to, 4)),
		clientv3.OpPut(key(to, 7), "changed"),
		clientv3.OpPut(to+"zz-extra", "x"),
	} {
		if _, err := dst.Do(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	_, err := apply(t, datastores(fmt.Sprintf(`steps:
  - {id: verify, type: etcd.verify, with: {source: src, target: dst, prefix: %q, targetPrefix: %q}}
`, from, to)), runOpts{})
	plantest.WantError(t, err, `step "verify" failed: 3 keys differ between datastore "src" prefix "`+from+`"`,
		`missing on target: "`+key(from, 4)+`"`, `extra on target: "`+to+`zz-extra"`, `value differs: "`+key(from, 7)+`"`)

	// Many differences: five are named.
	if _, err := dst.Delete(ctx, to, clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	_, err = apply(t, datastores(fmt.Sprintf(`steps:
  - {id: verify, type: etcd.verify, with: {source: src, target: dst, prefix: %q, targetPrefix: %q}}
`, from, to)), runOpts{})
	plantest.WantError(t, err, `50 keys differ`, `missing on target: "`+key(from, 0)+`", "`+key(from, 1)+`", "`+key(from, 2)+`", "`+key(from, 3)+`", "`+key(from, 4)+`" (and 45 more)`)
}

func TestDryRun(t *testing.T) {
	need(t)
	from, to := prefix(t, "from"), prefix(t, "to")
	seed(t, src, from, 30, 10)
	plan := datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, targetPolicy: clean}}
`, from, to))
	if _, err := dst.Put(context.Background(), to+"old", "x"); err != nil {
		t.Fatal(err)
	}
	j, err := apply(t, plan, runOpts{dryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	out := j.Step("copy").Outputs
	if out["dryRun"] != true || plantest.Num(t, out, "keys") != 30 || plantest.Num(t, out, "wouldDelete") != 1 {
		t.Fatalf("outputs %v", out)
	}
	if got := kvs(t, dst, to, 0); len(got) != 1 || got["old"] != "x" {
		t.Fatalf("dry run changed the target: %v", got)
	}
}

// TestRunTwice: a second run of a completed copy (a new run, not a resume) meets the keys of the
// first; refuse refuses, as an operator would expect, and overwrite converges.
func TestRunTwice(t *testing.T) {
	need(t)
	from, to := prefix(t, "from"), prefix(t, "to")
	seed(t, src, from, 40, 10)
	for _, policy := range []string{"overwrite", "refuse"} {
		plan := datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, targetPolicy: %s}}
  - {id: verify, type: etcd.verify, with: {source: src, target: dst, prefix: %q, targetPrefix: %q}}
`, from, to, policy, from, to))
		_, err := apply(t, plan, runOpts{})
		if policy == "refuse" {
			plantest.WantError(t, err, `step "copy" failed: target datastore "dst" is not empty under "`+to+`": 40 keys, the first "`+key(to, 0)+`"`)
		} else if err != nil {
			t.Fatal(err)
		}
		sameContent(t, kvs(t, src, from, 0), kvs(t, dst, to, 0))
	}
	mustApply(t, datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, targetPolicy: overwrite}}
`, from, to)))
	sameContent(t, kvs(t, src, from, 0), kvs(t, dst, to, 0))
}

func TestUndo(t *testing.T) {
	need(t)
	ctx := context.Background()
	for _, policy := range []string{"refuse", "clean", "overwrite"} {
		t.Run(policy, func(t *testing.T) {
			from, to := prefix(t, "from"), prefix(t, "to")
			seed(t, src, from, 25, 10)
			if policy == "overwrite" {
				if _, err := dst.Put(ctx, to+"mine", "x"); err != nil {
					t.Fatal(err)
				}
			}
			_, err := apply(t, datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, targetPolicy: %s}}
  - {id: boom, type: assert, with: {that: "false"}}
`, from, to, policy)), runOpts{rollback: true})
			if err == nil {
				t.Fatal("the run did not fail")
			}
			got := kvs(t, dst, to, 0)
			if policy == "overwrite" {
				if len(got) != 26 {
					t.Fatalf("undo of an overwrite copy changed the target: %d keys", len(got))
				}
				return
			}
			if len(got) != 0 {
				t.Fatalf("undo left %d keys on the target", len(got))
			}
		})
	}
}

func TestErrors(t *testing.T) {
	need(t)
	from := prefix(t, "from")
	cases := []struct {
		name, stores, with string
		want               []string
	}{
		{"unknown datastore", "", "source: \"${{ 'nope' }}\", target: dst", []string{`step "copy" failed: source: datastore "nope" is not declared in the plan's datastores (dst, src)`}},
		{"unreachable endpoint", "  down: {endpoints: [\"127.0.0.1:1\"], dialTimeout: 300ms}\n", "source: src, target: down",
			[]string{`step "copy" failed: target: datastore "down": no endpoint answered within 300ms: http://127.0.0.1:1: `}},
		{"missing CA file", "  bad: {endpoints: [\"https://127.0.0.1:1\"], tls: {ca: /nonexistent/ca.crt}}\n", "source: bad, target: dst",
			[]string{`step "copy" failed: source: datastore "bad" (https://127.0.0.1:1): tls.ca: open /nonexistent/ca.crt: no such file or directory`}},
		{"missing key file", "  bad: {endpoints: [\"https://127.0.0.1:1\"], tls: {cert: /nonexistent/c.crt, key: /nonexistent/c.key}}\n", "source: src, target: bad",
			[]string{`step "copy" failed: target: datastore "bad" (https://127.0.0.1:1): tls.cert: open /nonexistent/c.crt: no such file or directory`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := apply(t, datastores(tc.stores+fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {%s, prefix: %q}}
`, tc.with, from)), runOpts{})
			plantest.WantError(t, err, tc.want...)
		})
	}
}

// TestVerifyAfterLeasesExpire: keys whose lease runs out between the copy's revision and the
// verify (Kubernetes events live on one-hour leases) are gone from both sides; verify leaves
// them out instead of reporting them missing on the target.
func TestVerifyAfterLeasesExpire(t *testing.T) {
	need(t)
	ctx := context.Background()
	from, to := prefix(t, "from"), prefix(t, "to")
	short, err := src.Grant(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	seed(t, src, from+"events/", 6, 10, clientv3.WithLease(short.ID))
	seed(t, src, from+"pods/", 4, 10)
	j := mustApply(t, datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q}}
`, from, to)))
	rev := plantest.Num(t, j.Step("copy").Outputs, "revision")
	// Wait until the lease is gone on the source (and its copy on the target with it).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		ttl, err := src.TimeToLive(ctx, short.ID)
		if err != nil {
			t.Fatal(err)
		}
		left, err := dst.Get(ctx, to+"events/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if ttl.TTL <= 0 && left.Count == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lease TTL %d, %d event keys left on the target", ttl.TTL, left.Count)
		}
	}
	j = mustApply(t, datastores(fmt.Sprintf(`steps:
  - {id: verify, type: etcd.verify, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, revision: %d}}
`, from, to, rev)))
	out := j.Step("verify").Outputs
	if plantest.Num(t, out, "keys") != 4 || plantest.Num(t, out, "targetKeys") != 4 || plantest.Num(t, out, "expiredKeys") != 6 || out["equal"] != true {
		t.Fatalf("verify outputs %v", out)
	}
	// A key missing on the target without an expired lease is still an error.
	if _, err := dst.Delete(ctx, to+"pods/", clientv3.WithPrefix(), clientv3.WithLimit(0)); err != nil {
		t.Fatal(err)
	}
	_, err = apply(t, datastores(fmt.Sprintf(`steps:
  - {id: verify, type: etcd.verify, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, revision: %d}}
`, from, to, rev)), runOpts{})
	if err == nil || !strings.Contains(err.Error(), "missing on target") {
		t.Fatalf("verify error %v", err)
	}
}
