package etcdsnapshot

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"planrun.dev/planrun/internal/controlplane"
)

// TestRevisionScanner: the revision read from the stream of a snapshot equals the one bbolt
// reads from the file, for snapshots of a fresh etcd, one whose last write was a compacted
// deletion, a large one whose keys were rewritten and compacted (branch pages on several
// levels, values spanning pages, free pages with stale contents), and the database of a data
// directory restored from it with a bumped revision; fed in
// chunks of every size, with the floor at 0, at etcd's revision before the snapshot, and above
// the snapshot's revision (refused: it cannot be exact then).
func TestRevisionScanner(t *testing.T) {
	e := controlplane.StartEtcdForTest(t)
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.URL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	txn := func(ops ...clientv3.Op) int64 {
		t.Helper()
		resp, err := c.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	puts := func(from, to, size int) {
		t.Helper()
		var ops []clientv3.Op
		batch := 0
		for i := from; i < to; i++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/k%06d", i), strings.Repeat(string(rune('a'+i%26)), size)))
			if batch += size; batch > 1<<20 || len(ops) == 100 {
				txn(ops...)
				ops, batch = nil, 0
			}
		}
		if len(ops) > 0 {
			txn(ops...)
		}
	}

	// check compares the scanner with bbolt on the database file db (body: what the scanner
	// reads), with the floors 0 and floor, and one above the revision.
	check := func(t *testing.T, db string, body []byte, floor int64, wantCompacted bool) {
		t.Helper()
		want, err := snapshotRevision(db)
		if err != nil {
			t.Fatal(err)
		}
		all := 0 // leaves kept with floor 0: all of them
		for _, floor := range []int64{0, floor} {
			for _, chunk := range []int{1, 7, 4096, 32 << 10, 1 << 20} {
				if chunk == 1 && len(body) > 1<<20 {
					continue
				}
				s := newRevisionScanner(floor)
				for rest := body; len(rest) > 0; {
					n := min(chunk, len(rest))
					if _, err := s.Write(rest[:n]); err != nil {
						t.Fatal(err)
					}
					rest = rest[n:]
				}
				got, err := s.Revision()
				if err != nil || got != want {
					t.Fatalf("floor %d, chunks of %d: revision %d (%v), bbolt reads %d", floor, chunk, got, err, want)
				}
				// With the floor, only the leaves of the last writes are kept.
				if floor == 0 {
					all = len(s.leaves)
				} else if all > 1000 && len(s.leaves) > all/10 {
					t.Errorf("floor %d: kept %d leaves of %d", floor, len(s.leaves), all)
				}
			}
		}
		s := newRevisionScanner(want + 1)
		s.Write(body)
		// Exact (an empty key bucket says 0 whatever the floor), or refused.
		if got, err := s.Revision(); err == nil && (got != want || want > 0) {
			t.Fatalf("floor above the snapshot: revision %d, want an error", got)
		}
		if compacted := want > lastKeyRevision(t, body); compacted != wantCompacted {
			t.Fatalf("revision %d from the compaction: %v, want %v", want, compacted, wantCompacted)
		}
	}
	// snap takes a snapshot and checks it, with etcd's revision before it as the floor.
	snap := func(t *testing.T) string {
		t.Helper()
		st, err := c.Status(ctx, e.URL)
		if err != nil {
			t.Fatal(err)
		}
		db := takeSnapshot(t, c)
		b, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		check(t, db, b[:len(b)-sha256.Size], st.Header.Revision, false) // without etcd's integrity hash
		return db
	}

	t.Run("fresh", func(t *testing.T) { snap(t) })
	t.Run("deletion compacted", func(t *testing.T) {
		puts(0, 300, 100)
		rev := txn(clientv3.OpDelete("/registry/k0002", clientv3.WithPrefix()))
		if _, err := c.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
		snap(t)
	})
	t.Run("large, rewritten and compacted; restored with a bumped revision", func(t *testing.T) {
		puts(0, 8000, 2000)     // two levels of branch pages in the key bucket
		puts(8000, 8040, 20000) // values spanning several pages
		txn(clientv3.OpDelete("/registry/k001", clientv3.WithPrefix()))
		rev := txn(clientv3.OpDelete("/registry/k0080", clientv3.WithPrefix()))
		if _, err := c.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
			t.Fatal(err)
		}
		puts(100, 2000, 3000) // into the pages the compaction freed
		db := snap(t)

		// The database of a data directory restored from it with a bumped revision: two meta
		// pages of its own, no integrity hash.
		dir := filepath.Join(t.TempDir(), "data")
		err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{SnapshotPath: db, OutputDataDir: dir, Name: "m",
			PeerURLs: []string{"http://localhost:2380"}, InitialCluster: "m=http://localhost:2380", InitialClusterToken: "t",
			RevisionBump: 1000, MarkCompacted: true})
		if err != nil {
			t.Fatal(err)
		}
		restored := filepath.Join(dir, "member", "snap", "db")
		b, err := os.ReadFile(restored)
		if err != nil {
			t.Fatal(err)
		}
		check(t, restored, b, lastKeyRevision(t, b), false)
	})

	t.Run("not a snapshot", func(t *testing.T) {
		for name, body := range map[string][]byte{
			"empty":     nil,
			"text":      []byte(strings.Repeat("not a bbolt file ", 1000)),
			"truncated": []byte("\x00\x00\x00\x00\x00\x00\x00\x00\x04\x00"),
		} {
			s := newRevisionScanner(0)
			s.Write(body)
			if rev, err := s.Revision(); err == nil {
				t.Errorf("%s: revision %d, want an error", name, rev)
			}
		}
	})
}

// takeSnapshot saves a snapshot of c to a file of the test, as etcdctl snapshot save does.
func takeSnapshot(t *testing.T, c *clientv3.Client) string {
	t.Helper()
	rc, err := c.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	path := filepath.Join(t.TempDir(), "snap.db")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	return path
}

// lastKeyRevision is the revision of the newest key of a database's key bucket.
func lastKeyRevision(t *testing.T, body []byte) int64 {
	t.Helper()
	s := newRevisionScanner(0)
	s.Write(body)
	if _, err := s.Revision(); err != nil {
		t.Fatal(err)
	}
	root, _ := s.root()
	key, _ := s.bucket(root, keyBucket)
	rev, _, err := s.lastRevision(key)
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// TestRevisionScannerTreeShapes: a database written with bbolt in shapes etcd does not make: a
// root bucket spread over branch pages (many buckets), a meta bucket too large to be inline,
// the compaction above every key.
func TestRevisionScannerTreeShapes(t *testing.T) {
	revKey := func(rev int64) []byte {
		k := make([]byte, 17)
		binary.BigEndian.PutUint64(k, uint64(rev))
		k[8] = '_'
		return k
	}
	u64 := func(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
	build := func(t *testing.T, fill func(update func(func(tx *bolt.Tx) error))) []byte {
		t.Helper()
		path := filepath.Join(t.TempDir(), "db")
		db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
		if err != nil {
			t.Fatal(err)
		}
		fill(func(fn func(tx *bolt.Tx) error) {
			t.Helper()
			if err := db.Update(fn); err != nil {
				t.Fatal(err)
			}
		})
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want, err := snapshotRevision(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%d bytes, revision %d", len(b), want)
		return b
	}
	scan := func(t *testing.T, body []byte, floor, want int64) {
		t.Helper()
		s := newRevisionScanner(floor)
		s.Write(body)
		if got, err := s.Revision(); err != nil || got != want {
			t.Fatalf("floor %d: revision %d (%v), want %d", floor, got, err, want)
		}
	}

	t.Run("many buckets, large meta bucket, compaction above every key", func(t *testing.T) {
		b := build(t, func(update func(func(tx *bolt.Tx) error)) {
			update(func(tx *bolt.Tx) error {
				for i := range 400 {
					bk, err := tx.CreateBucket([]byte(fmt.Sprintf("bucket-%03d", i)))
					if err != nil {
						return err
					}
					if err := bk.Put([]byte("x"), make([]byte, 600)); err != nil {
						return err
					}
				}
				kb, err := tx.CreateBucket([]byte(keyBucket))
				if err != nil {
					return err
				}
				for rev := int64(1); rev <= 5000; rev++ {
					if err := kb.Put(revKey(rev), make([]byte, 200)); err != nil {
						return err
					}
				}
				mb, err := tx.CreateBucket([]byte(metaBucket))
				if err != nil {
					return err
				}
				for i := range 300 {
					if err := mb.Put([]byte(fmt.Sprintf("filler-%03d", i)), make([]byte, 100)); err != nil {
						return err
					}
				}
				return mb.Put([]byte(compactKey), u64(7000))
			})
		})
		scan(t, b, 0, 7000)
		scan(t, b, 5001, 7000) // the last leaf is not kept: the compaction answers
		s := newRevisionScanner(0)
		s.Write(b)
		root, _ := s.root()
		meta, _ := s.bucket(root, metaBucket)
		if _, ok := s.branches[root]; !ok || meta.root == 0 {
			t.Fatalf("root bucket on a branch page: %v, meta bucket not inline: %v", ok, meta.root != 0)
		}
		s = newRevisionScanner(7001)
		s.Write(b)
		if rev, err := s.Revision(); err == nil {
			t.Fatalf("floor above: revision %d, want an error", rev)
		}
	})
}
