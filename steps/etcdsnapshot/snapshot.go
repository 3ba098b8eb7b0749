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
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/etcd"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/storage"
)

func init() {
	engine.Register(engine.StepType{
		Name: "etcd.snapshot",
		Doc:  "Save a full snapshot of a datastore (Maintenance API) to a file or object store (s3://, gs://, azblob://), with sha256, revision and a manifest beside it.",
		New:  func() engine.Action { return new(Snapshot) },
	})
}

// Snapshot saves a full snapshot of a datastore to a file or an object.
type Snapshot struct {
	Datastore       string                   `yaml:"datastore" plan:"required,datastore" doc:"Name of the plan's etcd datastore to snapshot. With several endpoints, the snapshot is taken from the leader (a follower may lag behind the last writes); outputs.member says which."`
	To              string                   `yaml:"to" plan:"required" doc:"The snapshot file: a path (its folder is created if absent), file:///path, or an object in a bucket (s3://bucket/prefix/final-full-snapshot.db?region=…, gs://…, azblob://…). It is streamed there (to an object store as a multipart upload: parts of 8 MiB in memory, no local copy) and appears only once complete and checked against etcd's own hash; its manifest is written beside it, last, as <to>.manifest.json."`
	CredentialsFrom *storage.CredentialsFrom `yaml:"credentialsFrom" doc:"Secret with the credentials of an object store to (default: the provider's own chain: environment, profile, workload identity)."`
	Overwrite       bool                     `yaml:"overwrite" doc:"Replace an existing file or object at to that is not a planrun snapshot (one with a manifest beside it is always replaced)."`

	file snapshotFile
}

var (
	_ engine.Action      = (*Snapshot)(nil)
	_ engine.Provisioner = (*Snapshot)(nil)
	_ engine.Describer   = (*Snapshot)(nil)
	_ kube.AccessNeeder  = (*Snapshot)(nil)
)

// Access implements kube.AccessNeeder:
//   - get on the Secret credentialsFrom names, on its cluster. The datastore's own Secrets (TLS,
//     password) are the datastore's: etcd.Datastore.Access.
func (s *Snapshot) Access() []kube.Rule { return s.CredentialsFrom.Access() }

// Provision implements engine.Provisioner: to is checked (storage.SplitFile: a known scheme, a
// file rather than a folder, no credentials in the URL) and split into its folder's location
// and its name.
func (s *Snapshot) Provision() error {
	f, err := parseSnapshotFile(s.To)
	if err != nil {
		return fmt.Errorf("to: %w", err)
	}
	if err := s.CredentialsFrom.Check(); err != nil {
		return fmt.Errorf("credentialsFrom: %w", err)
	}
	s.file = f
	return nil
}

// Describe implements engine.Describer.
func (s *Snapshot) Describe() string {
	return fmt.Sprintf("snapshot datastore %q to %s", s.Datastore, s.file.url)
}

// snapshotState marks a snapshot under way: a re-run may replace what it left at to.
type snapshotState struct {
	To string `json:"to"`
}

// Run implements engine.Action.
func (s *Snapshot) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	f := s.file
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
	loc, err := f.open(ctx, rc, s.CredentialsFrom)
	if err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}

	var st snapshotState
	resumed, err := rc.LoadState(&st)
	if err != nil {
		return nil, err
	}
	if err := s.checkTarget(ctx, loc, resumed && st.To == f.url); err != nil {
		return nil, err
	}
	if rc.DryRun {
		return engine.Outputs{
			"dryRun":      true,
			"member":      member,
			"to":          f.url,
			"manifest":    f.manifestURL,
			"datastore":   ds.Name,
			"endpoints":   ds.Endpoints,
			"revision":    status.Header.Revision,
			"dbSize":      status.DbSize,
			"etcdVersion": status.Version,
		}, nil
	}
	if err := rc.SaveState(ctx, snapshotState{To: f.url}); err != nil {
		return nil, err
	}

	// A stale manifest goes first: from here until the new one is written, the file at to (old
	// or new) has none, and etcd.restore refuses it rather than trusting a mismatched one.
	if err := loc.Remove(ctx, f.manifestName()); err != nil {
		return nil, fmt.Errorf("to: removing the old manifest: %w", err)
	}
	started := time.Now().UTC()
	saved, err := s.save(ctx, rc, mcli, ds, loc, status)
	if err != nil {
		return nil, err
	}
	m := Manifest{
		File:           f.name,
		Size:           saved.size,
		SHA256:         saved.sha256,
		Revision:       saved.revision,
		EtcdVersion:    status.Version,
		StorageVersion: saved.storageVersion,
		Datastore:      ds.Name,
		Endpoints:      ds.Endpoints,
		Member:         member,
		Time:           started,
	}
	if err := writeManifest(ctx, loc, f, &m); err != nil {
		return nil, err
	}
	return engine.Outputs{
		"to":             f.url,
		"manifest":       f.manifestURL,
		"sha256":         saved.sha256,
		"size":           saved.size,
		"revision":       saved.revision,
		"etcdVersion":    status.Version,
		"storageVersion": saved.storageVersion,
		"datastore":      ds.Name,
		"endpoints":      ds.Endpoints,
		"member":         member,
		"time":           started.Format(time.RFC3339),
	}, nil
}

// checkTarget refuses to replace a file that is not a planrun snapshot, unless overwrite is set
// or this step itself was writing it when the run stopped.
func (s *Snapshot) checkTarget(ctx context.Context, loc storage.Location, ours bool) error {
	f := s.file
	e, err := loc.Stat(ctx, f.name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("to: %w", err)
	}
	if e.Dir {
		return fmt.Errorf("to: %s is a folder, want a file path", f.url)
	}
	if ours || s.Overwrite {
		return nil
	}
	if _, err := loc.Stat(ctx, f.manifestName()); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("to: %s exists and has no manifest %s beside it: not replacing it (set overwrite: true to replace it)", f.url, f.manifestName())
	} else if err != nil {
		return fmt.Errorf("to: %w", err)
	}
	return nil
}

// writeManifest writes m beside the snapshot, last: its presence says the snapshot is complete.
func writeManifest(ctx context.Context, loc storage.Location, f snapshotFile, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	sum := sha256.Sum256(b)
	hexSum := hex.EncodeToString(sum[:])
	w, err := loc.Create(ctx, f.manifestName(), storage.CreateOptions{Mode: 0o600, SHA256: hexSum})
	if err == nil {
		if _, err = w.Write(b); err == nil {
			err = w.Commit(ctx, hexSum)
		}
		if err != nil {
			_ = w.Abort()
		}
	}
	if err != nil {
		return fmt.Errorf("writing the manifest of %s: %w", f.url, err)
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

// saved is what save wrote.
type saved struct {
	sha256         string
	size           int64
	revision       int64
	storageVersion string
}

// save streams the snapshot into the location, hashing it and reading its revision on the way;
// etcd's own integrity hash at its end is checked before the upload is committed, so that
// nothing appears at to unless it is a complete, intact snapshot (a local file is written
// under a temporary name, synced and renamed; an object is a multipart upload completed only
// then, aborted otherwise).
func (s *Snapshot) save(ctx context.Context, rc *engine.RunContext, cli *clientv3.Client, ds *etcd.Datastore, loc storage.Location, status *clientv3.StatusResponse) (saved, error) {
	f := s.file
	// The whole snapshot can take longer than one request: only the step's timeout bounds it.
	resp, err := cli.SnapshotWithVersion(ctx)
	if err != nil {
		return saved{}, ds.Error(fmt.Errorf("starting the snapshot: %w", err))
	}
	defer resp.Snapshot.Close()
	up, err := loc.Create(ctx, f.name, storage.CreateOptions{Mode: 0o600})
	if err != nil {
		return saved{}, fmt.Errorf("to: %w", err)
	}
	fail := func(err error) (saved, error) {
		_ = up.Abort()
		return saved{}, err
	}
	pw := &progressWriter{rc: rc, total: status.DbSize}
	// The snapshot holds at least what etcd reported before it started.
	scan := newRevisionScanner(status.Header.Revision)
	iw := &integrityWriter{h: sha256.New(), body: scan}
	dst := &writeErr{w: up}
	n, err := io.Copy(io.MultiWriter(dst, pw, iw), resp.Snapshot)
	if err != nil {
		// A write error names the location; anything else came from the stream.
		if dst.err != nil {
			return fail(f.fail("to", "writing", dst.err))
		}
		return fail(ds.Error(fmt.Errorf("receiving the snapshot after %d bytes: %w", n, err)))
	}
	if n == 0 {
		return fail(ds.Error(errors.New("the snapshot stream was empty")))
	}
	// The server appends the sha256 of the database: check it now rather than at restore time.
	sum, ok := iw.finish()
	if !ok {
		return fail(engine.Transient(ds.Error(fmt.Errorf("the snapshot received (%d bytes) does not match the sha256 etcd appended to it", n))))
	}
	rev, err := scan.Revision()
	if err != nil {
		return fail(ds.Error(fmt.Errorf("reading the revision of the snapshot received (%d bytes): %w", n, err)))
	}
	if err := up.Commit(ctx, sum); err != nil {
		return fail(f.fail("to", "writing", err))
	}
	return saved{sha256: sum, size: n, revision: rev, storageVersion: resp.Version}, nil
}

// writeErr keeps the error of the writer it wraps, to tell a failed write from a failed read.
type writeErr struct {
	w   io.Writer
	err error
}

func (w *writeErr) Write(b []byte) (int, error) {
	n, err := w.w.Write(b)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
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

// integrityWriter hashes the snapshot stream, keeping its last sha256.Size bytes apart: etcd
// appends the sha256 of the database to it. What it hashes (the database) also goes to body.
// One pass gives both sums: the database's, then, with the tail added, the whole stream's.
type integrityWriter struct {
	h    hash.Hash
	body io.Writer
	tail []byte
}

func (w *integrityWriter) Write(b []byte) (int, error) {
	n := len(b)
	w.tail = append(w.tail, b...)
	if extra := len(w.tail) - sha256.Size; extra > 0 {
		w.h.Write(w.tail[:extra])
		w.body.Write(w.tail[:extra])
		w.tail = append(w.tail[:0], w.tail[extra:]...)
	}
	return n, nil
}

// finish returns the sha256 (hex) of the whole stream, and whether it ended with the sha256 of
// the database before it.
func (w *integrityWriter) finish() (string, bool) {
	ok := len(w.tail) == sha256.Size && bytes.Equal(w.h.Sum(nil), w.tail)
	w.h.Write(w.tail)
	return hex.EncodeToString(w.h.Sum(nil)), ok
}
