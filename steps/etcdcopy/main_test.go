package etcdcopy_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
	_ "planrun.dev/planrun/steps"
	_ "planrun.dev/planrun/steps/etcdcopy"
)

// Two etcd servers shared by the tests of the package; each test works under its own prefix.
var (
	srcURL, dstURL string
	src, dst       *clientv3.Client
	startErr       error
)

func TestMain(m *testing.M) {
	if os.Getenv(controlplane.SkipEnv) == "1" {
		os.Exit(m.Run())
	}
	ctx := context.Background()
	a, err := controlplane.StartEtcd(ctx, "", nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	b, err := controlplane.StartEtcd(ctx, "", nil)
	if err != nil {
		_ = a.Stop()
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srcURL, dstURL = a.URL, b.URL
	src, dst = client(srcURL), client(dstURL)
	code := m.Run()
	_ = src.Close()
	_ = dst.Close()
	_ = a.Stop()
	_ = b.Stop()
	os.Exit(code)
}

func need(t testing.TB) {
	t.Helper()
	if src == nil {
		t.Skipf("%s=1: no etcd", controlplane.SkipEnv)
	}
}

func client(url string) *clientv3.Client {
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), MaxCallRecvMsgSize: 1 << 30})
	if err != nil {
		panic(err)
	}
	return c
}

// prefix is a fresh prefix for the test.
func prefix(t testing.TB, what string) string {
	return fmt.Sprintf("/%s/%s/", strings.ReplaceAll(t.Name(), "/", "_"), what)
}

// seed puts n keys under p, values of size bytes, and returns the revision after the last put.
func seed(t testing.TB, c *clientv3.Client, p string, n, size int, opts ...clientv3.OpOption) int64 {
	t.Helper()
	var rev int64
	for i := 0; i < n; i += 100 {
		var ops []clientv3.Op
		for j := i; j < n && j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(key(p, j), value(j, size), opts...))
		}
		resp, err := c.Txn(context.Background()).Then(ops...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	return rev
}

func key(p string, i int) string { return fmt.Sprintf("%sk%06d", p, i) }

func value(i, size int) string {
	s := fmt.Sprintf("value-%d-", i)
	for len(s) < size {
		s += string(rune('a' + len(s)%26))
	}
	return s[:max(size, 1)]
}

// kvs returns the keys under p (relative to p) and their values, at rev (0: current).
func kvs(t testing.TB, c *clientv3.Client, p string, rev int64) map[string]string {
	t.Helper()
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := c.Get(context.Background(), p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), p)] = string(kv.Value)
	}
	return out
}

// sameContent fails the test unless a and b hold the same keys and values.
func sameContent(t testing.TB, a, b map[string]string) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%d keys, want %d", len(b), len(a))
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok {
			t.Fatalf("key %q missing", k)
		}
		if w != v {
			t.Fatalf("key %q: value %q, want %q", k, w, v)
		}
	}
}

// datastores is the datastores block of the test plans: src and dst.
func datastores(extra string) string {
	return fmt.Sprintf("datastores:\n  src: {endpoints: [%q]}\n  dst: {endpoints: [%q]}\n%s", srcURL, dstURL, extra)
}

// load writes a plan (header added) and loads it.
func load(t testing.TB, body string) *engine.Plan {
	t.Helper()
	return plantest.MustLoad(t, body, plantest.Options{})
}

type runOpts struct {
	dryRun   bool
	rollback bool
	dir      string
}

// apply runs a plan in a fresh state folder (or opts.dir).
func apply(t testing.TB, body string, o runOpts) (*engine.Journal, error) {
	t.Helper()
	r := plantest.Apply(t, body, plantest.Options{DryRun: o.dryRun, NoRollback: !o.rollback, Dir: o.dir, Timeout: 5 * time.Minute})
	return r.Journal, r.Err
}

func mustApply(t testing.TB, body string) *engine.Journal {
	t.Helper()
	j, err := apply(t, body, runOpts{})
	if err != nil {
		t.Fatal(err)
	}
	return j
}
