package etcdsnapshot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/etcdtest"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/steps/etcdsnapshot"
)

// TestSnapshotFromLeader: with several endpoints the snapshot comes from the leader, even when
// it is listed last, and restores to the cluster's keyspace; endpoints without the leader are
// refused with the members they reached.
func TestSnapshotFromLeader(t *testing.T) {
	members := controlplane.StartEtcdClusterForTest(t, 3)
	var urls []string
	for _, m := range members {
		urls = append(urls, m.URL)
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: urls, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	for i := range 500 {
		if _, err := c.Put(ctx, fmt.Sprintf("/registry/configmaps/default/cm-%03d", i), strings.Repeat("v", 100+i)); err != nil {
			t.Fatal(err)
		}
	}
	leader := ""
	var followers []string
	for _, u := range urls {
		st, err := c.Status(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if st.Leader == st.Header.MemberId {
			leader = u
		} else {
			followers = append(followers, u)
		}
	}
	if leader == "" || len(followers) != 2 {
		t.Fatalf("leader %q, followers %v", leader, followers)
	}
	wantKeys, wantDigest := etcdtest.Digest(t, c)

	to := filepath.Join(t.TempDir(), "snap.db")
	ordered := append(append([]string(nil), followers...), leader) // the leader last
	body := func(eps []string, to string) string {
		q := make([]string, len(eps))
		for i, e := range eps {
			q[i] = fmt.Sprintf("%q", e)
		}
		return fmt.Sprintf("datastores:\n  src: {endpoints: [%s], dialTimeout: 2s}\nsteps:\n  - {id: snap, type: etcd.snapshot, with: {datastore: src, to: %q}}\n", strings.Join(q, ", "), to)
	}
	run := plantest.Apply(t, body(ordered, to), plantest.Options{Timeout: 2 * time.Minute})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	if out := run.Outputs(t, "snap"); out["member"] != leader {
		t.Errorf("snapshot from %v, want the leader %s", out["member"], leader)
	}
	b, err := os.ReadFile(etcdsnapshot.ManifestPath(to))
	if err != nil {
		t.Fatal(err)
	}
	var m etcdsnapshot.Manifest
	if err := json.Unmarshal(b, &m); err != nil || m.Member != leader {
		t.Errorf("manifest member %q (%v), want %s", m.Member, err, leader)
	}
	data := filepath.Join(t.TempDir(), "data")
	restore := plantest.Apply(t, fmt.Sprintf("steps:\n  - {id: r, type: etcd.restore, with: {snapshot: %q, dataDir: %q}}\n", to, data), plantest.Options{})
	if restore.Err != nil {
		t.Fatal(restore.Err)
	}
	e, err := controlplane.StartEtcdOnDataDir(ctx, "", data, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	rc, err := clientv3.New(clientv3.Config{Endpoints: []string{e.URL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	if n, d := etcdtest.Digest(t, rc); n != wantKeys || d != wantDigest {
		t.Errorf("restored: %d keys, digest %s; want %d, %s", n, d, wantKeys, wantDigest)
	}

	// Only followers: refused, saying what each endpoint is.
	refused := plantest.Apply(t, body(followers, filepath.Join(t.TempDir(), "f.db")), plantest.Options{})
	plantest.WantError(t, refused.Err, `step "snap" failed: `, "no endpoint is the leader (", followers[0]+" is member ", ", a follower of ", "give the leader's endpoint too")
}
