package etcd

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"planrun.dev/planrun/internal/controlplane"
)

// TestScanStreamsAndPages reads the same range at one revision as a RangeStream and as the
// paged Range that servers before etcd 3.7 get: both hand over every key once, in order, as of
// the revision, however the chunks fall.
func TestScanStreamsAndPages(t *testing.T) {
	e := controlplane.StartEtcdForTest(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.URL}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	const n = 2500
	for i := 0; i < n; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/scan/k%05d", j), fmt.Sprintf("v%d", j)))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := cli.Put(ctx, "/scan0", "outside the prefix")
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.Header.Revision
	// Changed after the revision: the scans must not see it.
	if _, err := cli.Put(ctx, "/scan/k00007", "later"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctx, "/scan/k00008"); err != nil {
		t.Fatal(err)
	}
	ds := &Datastore{Endpoints: []string{e.URL}}
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			streamReads = stream
			defer func() { streamReads = true }()
			var keys []string
			chunks := 0
			err := ds.Scan(ctx, cli, "/scan/k00005", clientv3.GetPrefixRangeEnd("/scan/"), rev, 300, func(kvs []*mvccpb.KeyValue) error {
				chunks++
				if !stream && len(kvs) > 300 {
					t.Errorf("a page of %d keys, want at most 300", len(kvs))
				}
				for _, kv := range kvs {
					keys = append(keys, string(kv.Key)+"="+string(kv.Value))
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != n-5 || keys[0] != "/scan/k00005=v5" || keys[2] != "/scan/k00007=v7" || keys[3] != "/scan/k00008=v8" || keys[len(keys)-1] != fmt.Sprintf("/scan/k%05d=v%d", n-1, n-1) {
				t.Fatalf("%d keys in %d chunks, first %v", len(keys), chunks, keys[:4])
			}
			for i := 1; i < len(keys); i++ {
				if keys[i] <= keys[i-1] {
					t.Fatalf("out of order: %s after %s", keys[i], keys[i-1])
				}
			}
			if !stream && chunks < (n-5)/300 {
				t.Fatalf("%d pages", chunks)
			}
		})
	}
	// An error from fn stops the scan and comes back as is.
	stop := fmt.Errorf("enough")
	if err := ds.Scan(ctx, cli, "/scan/", clientv3.GetPrefixRangeEnd("/scan/"), rev, 300, func([]*mvccpb.KeyValue) error { return stop }); err != stop {
		t.Fatalf("Scan returned %v, want fn's error", err)
	}
	// A compacted revision is an error the callers recognise.
	if _, err := cli.Compact(ctx, rev+1); err != nil {
		t.Fatal(err)
	}
	err = ds.Scan(ctx, cli, "/scan/", clientv3.GetPrefixRangeEnd("/scan/"), rev, 300, func([]*mvccpb.KeyValue) error { return nil })
	if !IsCompacted(err) {
		t.Fatalf("Scan at a compacted revision: %v", err)
	}
}
