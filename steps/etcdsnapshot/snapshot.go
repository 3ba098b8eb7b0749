package etcdsnapshot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/etcd"
)

func init() {
	engine.Register(engine.StepType{
		Name: "etcd.snapshot",
		Doc:  "Save a full snapshot of a datastore (Maintenance API) to a file, with sha256, revision and a manifest beside it.",
		New:  func() engine.Action { return new(Snapshot) },
	})
}

// Snapshot saves a full snapshot of a datastore to a file.
type Snapshot struct {
	Datastore string `yaml:"datastore" plan:"required,datastore" doc:"Name of the plan's etcd datastore to snapshot. With several endpoints, the snapshot is taken from the leader (a follower may lag behind the last writes); outputs.member says which."`
	To        string `yaml:"to" plan:"required" doc:"Path of the snapshot file; its manifest is written beside it as <to>.manifest.json. The folder is created if absent."`
	Overwrite bool   `yaml:"overwrite" doc:"Replace an existing file at to that is not a planrun snapshot (one with a manifest beside it is always replaced)."`
}

var (
	_ engine.Action    = (*Snapshot)(nil)
	_ engine.Validator = (*Snapshot)(nil)
	_ engine.Describer = (*Snapshot)(nil)
)

// Validate implements engine.Validator.
func (s *Snapshot) Validate() error {
	if s.To == "" {
		return errors.New("to: must not be empty")
	}
	if strings.HasSuffix(s.To, "/") || filepath.Base(filepath.Clean(s.To)) == "/" {
		return fmt.Errorf("to: %q names a folder, want a file path", s.To)
	}
	return nil
}

// Describe implements engine.Describer.
func (s *Snapshot) Describe() string {
	return fmt.Sprintf("snapshot datastore %q to %s", s.Datastore, s.To)
}

// snapshotState marks a snapshot under way: a re-run may replace what it left at to.
type snapshotState struct {
	To string `json:"to"`
}

// Run implements engine.Action.
func (s *Snapshot) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	to := filepath.Clean(s.To)
	cli, ds, err := etcd.Connect(ctx, rc, s.Datastore)
	if err != nil {
		return nil, err
	}
	member, status, err := leaderStatus(ctx, cli, ds)
	if err != nil {
		return nil, err
	}
	mcli, err := etcd.ConnectMember(ctx, rc, s.Datastore, member)
	if err != nil {
		return nil, err
	}

	var st snapshotState
	resumed, err := rc.LoadState(&st)
	if err != nil {
		return nil, err
	}
	if err := s.checkTarget(to, resumed && st.To == to); err != nil {
		return nil, err
	}
	if rc.DryRun {
		return engine.Outputs{
			"dryRun":      true,
			"member":      member,
			"to":          to,
			"manifest":    ManifestPath(to),
			"datastore":   ds.Name,
			"endpoints":   ds.Endpoints,
			"revision":    status.Header.Revision,
			"dbSize":      status.DbSize,
			"etcdVersion": status.Version,
		}, nil
	}
	if err := rc.SaveState(ctx, snapshotState{To: to}); err != nil {
		return nil, err
	}

	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	// A stale manifest goes first: from here until the new one is written, the file at to (old
	// or new) has none, and etcd.restore refuses it rather than trusting a mismatched one.
	if err := os.Remove(ManifestPath(to)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("to: removing the old manifest: %w", err)
	}
	started := time.Now().UTC()
	sum, size, storageVersion, err := s.save(ctx, rc, mcli, ds, to, status.DbSize)
	if err != nil {
		return nil, err
	}
	rev, err := snapshotRevision(to)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: reading its revision: %w", to, err)
	}
	m := Manifest{
		File:           filepath.Base(to),
		Size:           size,
		SHA256:         sum,
		Revision:       rev,
		EtcdVersion:    status.Version,
		StorageVersion: storageVersion,
		Datastore:      ds.Name,
		Endpoints:      ds.Endpoints,
		Member:         member,
		Time:           started,
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(ManifestPath(to), append(b, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("writing the manifest of %s: %w", to, err)
	}
	return engine.Outputs{
		"to":             to,
		"manifest":       ManifestPath(to),
		"sha256":         sum,
		"size":           size,
		"revision":       rev,
		"etcdVersion":    status.Version,
		"storageVersion": storageVersion,
		"datastore":      ds.Name,
		"endpoints":      ds.Endpoints,
		"member":         member,
		"time":           started.Format(time.RFC3339),
	}, nil
}

// checkTarget refuses to replace a file that is not a planrun snapshot, unless overwrite is set
// or this step itself was writing it when the run stopped.
func (s *Snapshot) checkTarget(to string, ours bool) error {
	fi, err := os.Stat(to)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("to: %w", err)
	}
	if fi.IsDir() {
		return fmt.Errorf("to: %s is a folder, want a file path", to)
	}
	if ours || s.Overwrite {
		return nil
	}
	if _, err := os.Stat(ManifestPath(to)); err != nil {
		return fmt.Errorf("to: %s exists and has no manifest %s beside it: not replacing it (set overwrite: true to replace it)", to, filepath.Base(ManifestPath(to)))
	}
	return nil
}

// leaderStatus returns the endpoint to snapshot and its status (revision, database size,
// version): the only one, or, with several, the one whose member is the leader: a follower may
// not have applied the last writes yet, and a final snapshot must hold them.
func leaderStatus(ctx context.Context, cli *clientv3.Client, ds *etcd.Datastore) (string, *clientv3.StatusResponse, error) {
	var problems, followers []string
	for _, ep := range cli.Endpoints() {
		rctx, cancel := ds.Request(ctx)
		st, err := cli.Status(rctx, ep)
		cancel()
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", ep, err))
			continue
		}
		if len(cli.Endpoints()) == 1 || st.Leader == st.Header.MemberId {
			return ep, st, nil
		}
		followers = append(followers, fmt.Sprintf("%s is member %x, a follower of %x", ep, st.Header.MemberId, st.Leader))
	}
	if len(followers) > 0 {
		problems = append(problems, fmt.Sprintf("no endpoint is the leader (%s): give the leader's endpoint too", strings.Join(followers, ", ")))
	}
	return "", nil, ds.Error(errors.New(strings.Join(problems, "; ")))
}

// save streams the snapshot into a temporary file beside to, hashing it on the way, syncs it and
// renames it to to, so that to never holds a partial snapshot.
func (s *Snapshot) save(ctx context.Context, rc *engine.RunContext, cli *clientv3.Client, ds *etcd.Datastore, to string, dbSize int64) (string, int64, string, error) {
	part := partName(to)
	// The whole snapshot can take longer than one request: only the step's timeout bounds it.
	resp, err := cli.SnapshotWithVersion(ctx)
	if err != nil {
		return "", 0, "", ds.Error(fmt.Errorf("starting the snapshot: %w", err))
	}
	defer resp.Snapshot.Close()
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", 0, "", fmt.Errorf("to: %w", err)
	}
	fail := func(err error) (string, int64, string, error) {
		_ = f.Close()
		_ = os.Remove(part)
		return "", 0, "", err
	}
	h := sha256.New()
	pw := &progressWriter{rc: rc, total: dbSize}
	iw := &integrityWriter{h: sha256.New()}
	n, err := io.Copy(io.MultiWriter(f, h, pw, iw), resp.Snapshot)
	if err != nil {
		// A write error names the file; anything else came from the stream.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fail(fmt.Errorf("writing %s: %w", part, err))
		}
		return fail(ds.Error(fmt.Errorf("receiving the snapshot after %d bytes: %w", n, err)))
	}
	if n == 0 {
		return fail(ds.Error(errors.New("the snapshot stream was empty")))
	}
	// The server appends the sha256 of the database: check it now rather than at restore time.
	if !iw.ok() {
		return fail(engine.Transient(ds.Error(fmt.Errorf("the snapshot received (%d bytes) does not match the sha256 etcd appended to it", n))))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("writing %s: %w", part, err))
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(part)
		return "", 0, "", fmt.Errorf("writing %s: %w", part, err)
	}
	if err := os.Rename(part, to); err != nil {
		_ = os.Remove(part)
		return "", 0, "", fmt.Errorf("to: %w", err)
	}
	if err := syncDir(filepath.Dir(to)); err != nil {
		return "", 0, "", fmt.Errorf("to: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, resp.Version, nil
}

type progressWriter struct {
	rc    *engine.RunContext
	total int64
	n     int64
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	p.rc.Progress(engine.Progress{Done: p.n, Total: max(p.total, p.n), Bytes: p.n, Unit: "bytes"})
	return len(b), nil
}

// integrityWriter hashes everything but the last sha256.Size bytes written, which it keeps:
// etcd appends the sha256 of the database to the snapshot stream.
type integrityWriter struct {
	h    hash.Hash
	tail []byte
}

func (w *integrityWriter) Write(b []byte) (int, error) {
	n := len(b)
	w.tail = append(w.tail, b...)
	if extra := len(w.tail) - sha256.Size; extra > 0 {
		w.h.Write(w.tail[:extra])
		w.tail = append(w.tail[:0], w.tail[extra:]...)
	}
	return n, nil
}

func (w *integrityWriter) ok() bool {
	return len(w.tail) == sha256.Size && bytes.Equal(w.h.Sum(nil), w.tail)
}
