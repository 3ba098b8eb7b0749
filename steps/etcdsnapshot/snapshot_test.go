package etcdsnapshot_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/etcdtest"
	"planrun.dev/planrun/internal/plantest"
	_ "planrun.dev/planrun/steps/assert"
	"planrun.dev/planrun/steps/etcdsnapshot"
)

func client(t testing.TB, url string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// seeded starts an etcd holding a few thousand keys written over several revisions: puts in
// batches, updates, a range delete, a compaction, a key with a lease, puts after the compaction.
// It returns the etcd, a client and the current revision.
func seeded(t testing.TB) (*controlplane.Etcd, *clientv3.Client, int64) {
	t.Helper()
	e := controlplane.StartEtcdForTest(t)
	c := client(t, e.URL)
	ctx := context.Background()
	txn := func(ops ...clientv3.Op) int64 {
		resp, err := c.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	const n = 3000
	for i := 0; i < n; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/things/k%05d", j), strings.Repeat(fmt.Sprintf("v%d-", j), 20)))
		}
		txn(ops...)
	}
	for round := 0; round < 3; round++ {
		var ops []clientv3.Op
		for j := 0; j < 100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/things/k%05d", j), fmt.Sprintf("updated-%d-%d", round, j)))
		}
		txn(ops...)
	}
	rev := txn(clientv3.OpDelete("/registry/things/k020", clientv3.WithPrefix())) // k02000..k02099
	if _, err := c.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	lease, err := c.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	txn(clientv3.OpPut("/registry/leases/held", "with a lease", clientv3.WithLease(lease.ID)))
	rev = txn(clientv3.OpPut("/other/after-compaction", "x"))
	return e, c, rev
}

// digest is the number of keys and the sha256 over sorted key+value of the whole keyspace.
func digest(t testing.TB, c *clientv3.Client) (int, string) { return etcdtest.Digest(t, c) }

func currentRev(t testing.TB, c *clientv3.Client) int64 {
	t.Helper()
	resp, err := c.Get(context.Background(), "nothing")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// withSource puts the datastore src, the etcd at url, before a plan body.
func withSource(url, body string) string {
	return fmt.Sprintf("datastores:\n  src: {endpoints: [%q], dialTimeout: 2s}\n%s", url, body)
}

func load(t testing.TB, url, body string) (*engine.Plan, error) {
	t.Helper()
	return plantest.Load(t, withSource(url, body), plantest.Options{})
}

type runOpts struct {
	dryRun   bool
	rollback bool
	dir      string // state folder, to resume
}

// lastProgress is the last progress event of the step "snap" in the last run of apply.
var lastProgress engine.Progress

func apply(t testing.TB, url, body string, o runOpts) (*engine.Journal, error) {
	t.Helper()
	r := plantest.Apply(t, withSource(url, body), plantest.Options{DryRun: o.dryRun, NoRollback: !o.rollback, Dir: o.dir, Timeout: 3 * time.Minute})
	lastProgress = r.Progress["snap"]
	return r.Journal, r.Err
}

func mustApply(t testing.TB, url, body string) *engine.Journal {
	t.Helper()
	j, err := apply(t, url, body, runOpts{})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// crashAndResume makes the run in dir look as if the process died while step id was running
// (status Running, no outputs, its saved state kept), then resumes it: the engine runs the step
// again, as after a real crash.
func crashAndResume(t testing.TB, url, body, dir, id string) (*engine.Journal, error) {
	t.Helper()
	store := engine.NewDirStore(filepath.Join(dir, "runs"))
	ctx := context.Background()
	j, err := store.Load(ctx, "run")
	if err != nil {
		t.Fatal(err)
	}
	rec := j.Step(id)
	if len(rec.State) == 0 {
		t.Fatalf("step %s saved no state", id)
	}
	j.Status, j.Finished = engine.RunInterrupted, nil
	rec.Status, rec.Outputs, rec.Finished = engine.StepRunning, nil, nil
	if err := store.Save(ctx, j); err != nil {
		t.Fatal(err)
	}
	p, err := load(t, url, body)
	if err != nil {
		t.Fatal(err)
	}
	r := &engine.Runner{Store: store, NoRollback: true}
	return r.Resume(ctx, "run", func(*engine.Journal) (*engine.Plan, error) { return p, nil })
}

func fileSum(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// startOn starts etcd on a restored data directory, stopped (data kept) when the test ends.
func startOn(t testing.TB, dataDir string) *clientv3.Client {
	t.Helper()
	e, err := controlplane.StartEtcdOnDataDir(t.Context(), "", dataDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop() })
	return client(t, e.URL)
}

// snapshot takes a snapshot of url to a fresh folder and returns its path.
func snapshot(t testing.TB, url string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "etcd.db")
	mustApply(t, url, fmt.Sprintf("steps:\n  - {id: snap, type: etcd.snapshot, with: {datastore: src, to: %q}}\n", to))
	return to
}

func TestSnapshotRestore(t *testing.T) {
	e, c, rev := seeded(t)
	wantN, wantSum := digest(t, c)
	dir := t.TempDir()
	to := filepath.Join(dir, "backups", "etcd.db")
	data := filepath.Join(dir, "members", "m0")
	bumped := filepath.Join(dir, "members", "m1")
	body := fmt.Sprintf(`steps:
  - {id: snap, type: etcd.snapshot, with: {datastore: src, to: %q}}
  - {id: restore, type: etcd.restore, with: {snapshot: "${{ steps.snap.outputs.to }}", dataDir: %q}}
  - id: bumped
    type: etcd.restore
    with: {snapshot: %q, dataDir: %q, name: m1, initialAdvertisePeerURLs: ["http://127.0.0.1:2380"], initialClusterToken: t1, bumpRevision: 1000, sha256: "${{ steps.snap.outputs.sha256 }}"}
`, to, data, to, bumped)
	j := mustApply(t, e.URL, body)

	snap := j.Step("snap").Outputs
	sum := fileSum(t, to)
	fi, _ := os.Stat(to)
	if snap["sha256"] != sum || plantest.Num(t, snap, "size") != fi.Size() || plantest.Num(t, snap, "revision") != rev || snap["to"] != to ||
		snap["etcdVersion"] == "" || snap["datastore"] != "src" || snap["manifest"] != to+".manifest.json" {
		t.Fatalf("snapshot outputs %v (file sha256 %s size %d, revision %d)", snap, sum, fi.Size(), rev)
	}
	if p := lastProgress; p.Bytes != fi.Size() || p.Done != fi.Size() || p.Unit != "bytes" {
		t.Errorf("last progress %+v, want %d bytes", p, fi.Size())
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot mode %v, want 0600", fi.Mode().Perm())
	}
	m, err := etcdsnapshot.ReadManifest(to)
	if err != nil {
		t.Fatal(err)
	}
	if m.File != "etcd.db" || m.SHA256 != sum || m.Size != fi.Size() || m.Revision != rev || m.EtcdVersion == "" ||
		m.Datastore != "src" || len(m.Endpoints) != 1 || m.Endpoints[0] != e.URL || time.Since(m.Time) > time.Hour {
		t.Fatalf("manifest %+v", m)
	}
	if entries, _ := os.ReadDir(filepath.Dir(to)); len(entries) != 2 {
		t.Fatalf("backup folder holds %v, want the snapshot and its manifest", entries)
	}

	out := j.Step("restore").Outputs
	if out["dataDir"] != data || out["name"] != "default" || plantest.Num(t, out, "revision") != rev || out["created"] != true {
		t.Fatalf("restore outputs %v", out)
	}
	if fi, err := os.Stat(data); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir %v %v", fi, err)
	}
	if entries, _ := os.ReadDir(filepath.Dir(data)); len(entries) != 2 {
		t.Fatalf("members folder holds %v, want m0 and m1 only (no temporary folder)", entries)
	}
	if out := j.Step("bumped").Outputs; out["name"] != "m1" || plantest.Num(t, out, "revision") != rev+1000 {
		t.Fatalf("bumped restore outputs %v", out)
	}

	// A fresh etcd on each restored data dir serves the same keys; the bumped one at a higher
	// revision.
	for _, tc := range []struct {
		dir string
		rev int64
	}{{data, rev}, {bumped, rev + 1000}} {
		fresh := startOn(t, tc.dir)
		n, s := digest(t, fresh)
		if n != wantN || s != wantSum {
			t.Fatalf("etcd on %s: %d keys sha256 %s, want %d keys sha256 %s", tc.dir, n, s, wantN, wantSum)
		}
		if got := currentRev(t, fresh); got != tc.rev {
			t.Fatalf("etcd on %s at revision %d, want %d", tc.dir, got, tc.rev)
		}
		leases, err := fresh.Leases(context.Background())
		if err != nil || len(leases.Leases) != 1 {
			t.Fatalf("leases %v %v", leases, err)
		}
	}
	if wantN != 2902 {
		t.Fatalf("seeded %d keys", wantN)
	}
}

func TestSnapshotTwiceAndAfterCrash(t *testing.T) {
	e, c, _ := seeded(t)
	dir := t.TempDir()
	to := filepath.Join(dir, "etcd.db")
	body := fmt.Sprintf("steps:\n  - {id: snap, type: etcd.snapshot, with: {datastore: src, to: %q}}\n", to)
	state := t.TempDir()
	j, err := apply(t, e.URL, body, runOpts{dir: state})
	if err != nil {
		t.Fatal(err)
	}
	first := j.Step("snap").Outputs

	// Run again, after more writes: a new snapshot replaces the old one and its manifest.
	if _, err := c.Put(context.Background(), "/more", "data"); err != nil {
		t.Fatal(err)
	}
	second := mustApply(t, e.URL, body).Step("snap").Outputs
	if plantest.Num(t, second, "revision") != plantest.Num(t, first, "revision")+1 || second["sha256"] != fileSum(t, to) {
		t.Fatalf("second snapshot %v after first %v", second, first)
	}
	if m, err := etcdsnapshot.ReadManifest(to); err != nil || m.SHA256 != second["sha256"] {
		t.Fatalf("manifest %+v %v", m, err)
	}

	// A crash after the rename, before the manifest, with a stale partial file: the step runs
	// again and writes a complete snapshot and manifest; no partial file is left.
	if err := os.Remove(to + ".manifest.json"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".etcd.db.planrun-part"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Without the step's state, a snapshot file with no manifest is not ours to replace.
	_, err = apply(t, e.URL, body, runOpts{})
	plantest.WantError(t, err, `step "snap" failed: to: `+to+` exists and has no manifest etcd.db.manifest.json beside it: not replacing it (set overwrite: true to replace it)`)
	j, err = crashAndResume(t, e.URL, body, state, "snap")
	if err != nil {
		t.Fatal(err)
	}
	out := j.Step("snap").Outputs
	if m, err := etcdsnapshot.ReadManifest(to); err != nil || m.SHA256 != out["sha256"] || out["sha256"] != fileSum(t, to) {
		t.Fatalf("manifest %+v %v, outputs %v", m, err, out)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("folder holds %v, want the snapshot and its manifest", entries)
	}

	// overwrite: true replaces a file that is not a snapshot.
	other := filepath.Join(dir, "other.db")
	if err := os.WriteFile(other, []byte("not a snapshot"), 0o644); err != nil {
		t.Fatal(err)
	}
	out = mustApply(t, e.URL, fmt.Sprintf("steps:\n  - {id: snap, type: etcd.snapshot, with: {datastore: src, to: %q, overwrite: true}}\n", other)).Step("snap").Outputs
	if out["sha256"] != fileSum(t, other) {
		t.Fatalf("outputs %v", out)
	}
}

func TestRestoreChecks(t *testing.T) {
	e, _, _ := seeded(t)
	to := snapshot(t, e.URL)
	sum := fileSum(t, to)
	restore := func(t *testing.T, snap, dataDir, extra string) (*engine.Journal, error) {
		return apply(t, e.URL, fmt.Sprintf("steps:\n  - {id: r, type: etcd.restore, with: {snapshot: %q, dataDir: %q%s}}\n", snap, dataDir, extra), runOpts{})
	}
	bad := strings.Repeat("0", 64)

	t.Run("manifest mismatch", func(t *testing.T) {
		copyTo := filepath.Join(t.TempDir(), "etcd.db")
		copyFile(t, to, copyTo)
		m, _ := etcdsnapshot.ReadManifest(to)
		m.SHA256 = bad
		writeManifest(t, copyTo, m)
		data := filepath.Join(t.TempDir(), "data")
		_, err := restore(t, copyTo, data, "")
		plantest.WantError(t, err, fmt.Sprintf(`step "r" failed: snapshot: %s has sha256 %s but manifest %s.manifest.json says %s: refusing to restore it`, copyTo, sum, copyTo, bad))
		noDir(t, data)
	})
	t.Run("explicit sha256 mismatch", func(t *testing.T) {
		data := filepath.Join(t.TempDir(), "data")
		_, err := restore(t, to, data, ", sha256: \""+bad+"\"")
		plantest.WantError(t, err, fmt.Sprintf(`step "r" failed: snapshot: %s has sha256 %s but sha256 says %s: refusing to restore it`, to, sum, bad))
		noDir(t, data)
	})
	t.Run("no manifest no sha256", func(t *testing.T) {
		copyTo := filepath.Join(t.TempDir(), "etcd.db")
		copyFile(t, to, copyTo)
		data := filepath.Join(t.TempDir(), "data")
		_, err := restore(t, copyTo, data, "")
		plantest.WantError(t, err, fmt.Sprintf(`step "r" failed: snapshot: %s has no manifest etcd.db.manifest.json beside it; give its sha256: to check it against`, copyTo))
		noDir(t, data)
		// With the sum given, it restores.
		j, err := restore(t, copyTo, data, ", sha256: \""+strings.ToUpper(sum)+"\"")
		if err != nil {
			t.Fatal(err)
		}
		if out := j.Step("r").Outputs; out["created"] != true || plantest.Num(t, out, "revision") == 0 {
			t.Fatalf("outputs %v", out)
		}
	})
	t.Run("corrupt snapshot", func(t *testing.T) {
		// A byte changed and the manifest made to agree: etcd's own integrity hash catches it.
		copyTo := filepath.Join(t.TempDir(), "etcd.db")
		copyFile(t, to, copyTo)
		b, _ := os.ReadFile(copyTo)
		b[len(b)/2] ^= 0xff
		if err := os.WriteFile(copyTo, b, 0o600); err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(t.TempDir(), "data")
		_, err := restore(t, copyTo, data, ", sha256: \""+fileSum(t, copyTo)+"\"")
		plantest.WantError(t, err, `step "r" failed: restoring `+copyTo+` into `, `.data.planrun-part: `)
		noDir(t, data)
		noDir(t, filepath.Join(filepath.Dir(data), ".data.planrun-part"))
	})
	t.Run("non-empty dataDir", func(t *testing.T) {
		data := t.TempDir()
		if err := os.WriteFile(filepath.Join(data, "keep"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := restore(t, to, data, "")
		plantest.WantError(t, err, fmt.Sprintf(`step "r" failed: dataDir: %s is not empty; etcd.restore only restores into a new data directory (remove it or choose another)`, data))
		if entries, _ := os.ReadDir(data); len(entries) != 1 {
			t.Fatalf("data dir changed: %v", entries)
		}
	})
	t.Run("dataDir is a file", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := restore(t, to, f, "")
		plantest.WantError(t, err, fmt.Sprintf(`step "r" failed: dataDir: %s is a file, want a new data directory`, f))
	})
	t.Run("missing snapshot", func(t *testing.T) {
		_, err := restore(t, filepath.Join(t.TempDir(), "nope.db"), filepath.Join(t.TempDir(), "d"), "")
		plantest.WantError(t, err, `step "r" failed: snapshot: stat `, `nope.db: no such file or directory`)
	})
	t.Run("bad config", func(t *testing.T) {
		_, err := load(t, e.URL, fmt.Sprintf("steps:\n  - {id: r, type: etcd.restore, with: {snapshot: %q, dataDir: /tmp/x, sha256: abc, initialAdvertisePeerURLs: [nope]}}\n", to))
		plantest.WantError(t, err, `step "r": with: sha256: want 64 hex digits, got "abc"`)
	})
	t.Run("empty dataDir and a stale temporary folder", func(t *testing.T) {
		data := filepath.Join(t.TempDir(), "data")
		if err := os.Mkdir(data, 0o755); err != nil {
			t.Fatal(err)
		}
		stale := filepath.Join(filepath.Dir(data), ".data.planrun-part")
		if err := os.MkdirAll(filepath.Join(stale, "member", "junk"), 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := restore(t, to, data, ""); err != nil {
			t.Fatal(err)
		}
		noDir(t, stale)
		if _, err := os.Stat(filepath.Join(data, "member", "snap", "db")); err != nil {
			t.Fatal(err)
		}
		// Run again: the data directory is no longer new, and is left alone.
		_, err := restore(t, to, data, "")
		plantest.WantError(t, err, fmt.Sprintf(`step "r" failed: dataDir: %s is not empty`, data))
	})
}

func TestRestoreResumeAndUndo(t *testing.T) {
	e, c, _ := seeded(t)
	wantN, wantSum := digest(t, c)
	to := snapshot(t, e.URL)

	// A crash after the rename: the step runs again, finds its own data directory, converges.
	data := filepath.Join(t.TempDir(), "data")
	body := fmt.Sprintf("steps:\n  - {id: r, type: etcd.restore, with: {snapshot: %q, dataDir: %q}}\n", to, data)
	state := t.TempDir()
	if _, err := apply(t, e.URL, body, runOpts{dir: state}); err != nil {
		t.Fatal(err)
	}
	j, err := crashAndResume(t, e.URL, body, state, "r")
	if err != nil {
		t.Fatal(err)
	}
	if out := j.Step("r").Outputs; out["created"] != true || out["dataDir"] != data {
		t.Fatalf("outputs %v", out)
	}
	n, s := digest(t, startOn(t, data))
	if n != wantN || s != wantSum {
		t.Fatalf("%d keys %s, want %d %s", n, s, wantN, wantSum)
	}

	// Rollback removes the data directory the step created.
	undone := filepath.Join(t.TempDir(), "undone")
	_, err = apply(t, e.URL, fmt.Sprintf(`steps:
  - {id: r, type: etcd.restore, with: {snapshot: %q, dataDir: %q}}
  - {id: fail, type: assert, with: {that: "false"}}
`, to, undone), runOpts{rollback: true})
	plantest.WantError(t, err, `step "fail" failed`)
	noDir(t, undone)
}

func TestDryRuns(t *testing.T) {
	e, c, rev := seeded(t)
	dir := filepath.Join(t.TempDir(), "backups")
	to := filepath.Join(dir, "etcd.db")
	j, err := apply(t, e.URL, fmt.Sprintf("steps:\n  - {id: snap, type: etcd.snapshot, with: {datastore: src, to: %q}}\n", to), runOpts{dryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	out := j.Step("snap").Outputs
	if out["dryRun"] != true || plantest.Num(t, out, "revision") != rev || plantest.Num(t, out, "dbSize") <= 0 || out["etcdVersion"] == "" || out["to"] != to {
		t.Fatalf("dry-run outputs %v", out)
	}
	noDir(t, dir)
	if got := currentRev(t, c); got != rev {
		t.Fatalf("revision %d after a dry run, want %d", got, rev)
	}

	snap := snapshot(t, e.URL)
	data := filepath.Join(t.TempDir(), "data")
	j, err = apply(t, e.URL, fmt.Sprintf("steps:\n  - {id: r, type: etcd.restore, with: {snapshot: %q, dataDir: %q}}\n", snap, data), runOpts{dryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if out := j.Step("r").Outputs; out["dryRun"] != true || plantest.Num(t, out, "revision") != rev || out["dataDir"] != data {
		t.Fatalf("dry-run outputs %v", out)
	}
	noDir(t, data)
	if entries, _ := os.ReadDir(filepath.Dir(data)); len(entries) != 0 {
		t.Fatalf("dry run wrote %v", entries)
	}
	// A dry run still checks: a wrong checksum is refused.
	_, err = apply(t, e.URL, fmt.Sprintf("steps:\n  - {id: r, type: etcd.restore, with: {snapshot: %q, dataDir: %q, sha256: %q}}\n", snap, data, strings.Repeat("1", 64)), runOpts{dryRun: true})
	plantest.WantError(t, err, `step "r" failed: snapshot: `, `refusing to restore it`)

	// A snapshot an earlier step of the plan would take is not there in a dry run: the data
	// directory is still checked.
	later := filepath.Join(t.TempDir(), "taken-later.db")
	j, err = apply(t, e.URL, fmt.Sprintf("steps:\n  - {id: r, type: etcd.restore, with: {snapshot: %q, dataDir: %q}}\n", later, data), runOpts{dryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if out := j.Step("r").Outputs; out["dryRun"] != true || out["snapshotPresent"] != false || out["dataDir"] != data {
		t.Fatalf("dry-run outputs without the snapshot %v", out)
	}
	noDir(t, data)
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = apply(t, e.URL, fmt.Sprintf("steps:\n  - {id: r, type: etcd.restore, with: {snapshot: %q, dataDir: %q}}\n", later, data), runOpts{dryRun: true})
	plantest.WantError(t, err, fmt.Sprintf(`step "r" failed: dataDir: %s is not empty`, data))
	// Outside a dry run, a missing snapshot is an error.
	_, err = apply(t, e.URL, fmt.Sprintf("steps:\n  - {id: r, type: etcd.restore, with: {snapshot: %q, dataDir: %q}}\n", later, filepath.Join(t.TempDir(), "d")), runOpts{})
	plantest.WantError(t, err, `step "r" failed: snapshot: `)
}

func TestSnapshotErrors(t *testing.T) {
	e := controlplane.StartEtcdForTest(t)
	dir := t.TempDir()
	_, err := apply(t, e.URL, fmt.Sprintf("steps:\n  - {id: snap, type: etcd.snapshot, with: {datastore: \"${{ 'nope' }}\", to: %q}}\n", filepath.Join(dir, "x.db")), runOpts{})
	plantest.WantError(t, err, `step "snap" failed: datastore "nope" is not declared in the plan's datastores (src)`)

	_, err = apply(t, e.URL, fmt.Sprintf("steps:\n  - {id: snap, type: etcd.snapshot, with: {datastore: src, to: %q}}\n", dir), runOpts{})
	plantest.WantError(t, err, `step "snap" failed: to: `+dir+` is a folder, want a file path`)

	// An etcd that does not answer: the error names the datastore and its endpoint.
	down := controlplane.StartEtcdForTest(t)
	url := down.URL
	if err := down.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err = apply(t, url, fmt.Sprintf("steps:\n  - {id: snap, type: etcd.snapshot, with: {datastore: src, to: %q}}\n", filepath.Join(dir, "x.db")), runOpts{})
	plantest.WantError(t, err, `step "snap" failed: datastore "src": no endpoint answered within 2s: `+url)
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("failed snapshot left %v", entries)
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeManifest(t testing.TB, snap string, m *etcdsnapshot.Manifest) {
	t.Helper()
	b, _ := json.Marshal(m)
	if err := os.WriteFile(etcdsnapshot.ManifestPath(snap), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func noDir(t testing.TB, p string) {
	t.Helper()
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("%s exists (%v)", p, err)
	}
}
