// Package etcdtest has helpers for tests that compare what etcd servers hold.
package etcdtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Digest is the number of keys of the whole keyspace and the sha256 over every key and value in
// key order, each length-prefixed (so that no two keyspaces share a digest by shifting bytes
// between a key and its value).
func Digest(t testing.TB, c *clientv3.Client) (int, string) {
	t.Helper()
	resp, err := c.Get(t.Context(), "\x00", clientv3.WithFromKey(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	for _, kv := range resp.Kvs {
		fmt.Fprintf(h, "%d:%s%d:%s", len(kv.Key), kv.Key, len(kv.Value), kv.Value)
	}
	return len(resp.Kvs), hex.EncodeToString(h.Sum(nil))
}
