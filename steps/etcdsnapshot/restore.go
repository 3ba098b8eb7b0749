package etcdsnapshot

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/etcd"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/storage"
)

func init() {
	engine.Register(engine.StepType{
		Name: "etcd.restore",
		Doc:  "Restore a snapshot file or object (s3://, gs://, azblob://) into a new etcd data directory for a new member, after checking its sha256.",
		New:  func() engine.Action { return new(Restore) },
	})
}

// Defaults for a single new member, as etcd's own flags default.
const (
	defaultName    = "default"
	defaultPeerURL = "http://localhost:2380"
	defaultToken   = "etcd-cluster"
)

// Restore restores a snapshot file into a new etcd data directory.
type Restore struct {
	Snapshot                 string                   `yaml:"snapshot" plan:"required" doc:"The snapshot file (etcd.snapshot's to, or etcdctl snapshot save's file): a path, file:///path, or an object in a bucket (s3://bucket/prefix/final-full-snapshot.db?region=…, gs://…, azblob://…). An object is first downloaded into a temporary file beside dataDir (mode 0600, removed after), its sha256 checked on the way."`
	CredentialsFrom          *storage.CredentialsFrom `yaml:"credentialsFrom" doc:"Secret with the credentials of an object store snapshot (default: the provider's own chain: environment, profile, workload identity)."`
	DataDir                  string                   `yaml:"dataDir" plan:"required" doc:"The new member's data directory: must not exist or be empty. It is restored beside it under a temporary name, then renamed."`
	SHA256                   string                   `yaml:"sha256" doc:"Expected sha256 (hex) of the snapshot file. Default: the one in the manifest beside it (<snapshot>.manifest.json, read through the same location); with neither, the step refuses."`
	Name                     string                   `yaml:"name" doc:"Member name (default \"default\", etcd's default)."`
	InitialCluster           string                   `yaml:"initialCluster" doc:"name=peerURL,... of the new cluster (default: this member alone, name=initialAdvertisePeerURLs)."`
	InitialAdvertisePeerURLs []string                 `yaml:"initialAdvertisePeerURLs" doc:"Peer URLs the member advertises (default http://localhost:2380)."`
	InitialClusterToken      string                   `yaml:"initialClusterToken" doc:"Token of the new cluster (default \"etcd-cluster\", etcd's default)."`
	BumpRevision             int64                    `yaml:"bumpRevision" doc:"Raise the restored revision by this much and mark it compacted, so that watchers (Kubernetes API servers) never see revisions go back; etcd advises 1000000000 when restoring under running clients."`
	SkipHashCheck            bool                     `yaml:"skipHashCheck" doc:"Skip etcd's own integrity hash check: needed for a db file copied out of a data directory (it has none). The sha256 check still applies."`

	file snapshotFile
}

var (
	_ engine.Action      = (*Restore)(nil)
	_ engine.Provisioner = (*Restore)(nil)
	_ engine.Validator   = (*Restore)(nil)
	_ engine.Undoer      = (*Restore)(nil)
	_ engine.Describer   = (*Restore)(nil)
	_ kube.AccessNeeder  = (*Restore)(nil)
)

// Access implements kube.AccessNeeder:
//   - get on the Secret credentialsFrom names, on its cluster (the step talks to no other API).
func (r *Restore) Access() []kube.Rule { return r.CredentialsFrom.Access() }

// Provision implements engine.Provisioner: snapshot is checked (storage.SplitFile) and split into
// its folder's location and its name.
func (r *Restore) Provision() error {
	f, err := parseSnapshotFile(r.Snapshot)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	r.file = f
	return nil
}

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Validate implements engine.Validator.
func (r *Restore) Validate() error {
	if err := r.CredentialsFrom.Check(); err != nil {
		return fmt.Errorf("credentialsFrom: %w", err)
	}
	if r.SHA256 != "" && !hexSHA256.MatchString(strings.ToLower(r.SHA256)) {
		return fmt.Errorf("sha256: want 64 hex digits, got %q", r.SHA256)
	}
	for i, u := range r.InitialAdvertisePeerURLs {
		if pu, err := url.Parse(u); err != nil || pu.Scheme == "" || pu.Host == "" {
			return fmt.Errorf("initialAdvertisePeerURLs[%d]: %q is not a URL such as http://10.0.0.1:2380", i, u)
		}
	}
	if r.BumpRevision < 0 {
		return fmt.Errorf("bumpRevision: must not be negative, got %d", r.BumpRevision)
	}
	if filepath.Clean(r.DataDir) == "/" {
		return errors.New("dataDir: must not be /")
	}
	return nil
}

// Describe implements engine.Describer.
func (r *Restore) Describe() string {
	return fmt.Sprintf("restore %s into new etcd data directory %s", r.file.url, r.DataDir)
}

// restoreState marks a restore under way (or done, once renamed): a re-run of the step finds
// its own data directory and converges instead of refusing it as not empty.
type restoreState struct {
	DataDir string `json:"dataDir"`
	SHA256  string `json:"sha256"`
}

func (r *Restore) settings() (name string, peers []string, cluster, token string) {
	name = cmp.Or(r.Name, defaultName)
	peers = r.InitialAdvertisePeerURLs
	if len(peers) == 0 {
		peers = []string{defaultPeerURL}
	}
	cluster = r.InitialCluster
	if cluster == "" {
		parts := make([]string, len(peers))
		for i, p := range peers {
			parts[i] = name + "=" + p
		}
		cluster = strings.Join(parts, ",")
	}
	return name, peers, cluster, cmp.Or(r.InitialClusterToken, defaultToken)
}

// Run implements engine.Action.
func (r *Restore) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	f := r.file
	dataDir, err := filepath.Abs(r.DataDir)
	if err != nil {
		return nil, fmt.Errorf("dataDir: %w", err)
	}
	name, peers, cluster, token := r.settings()
	loc, err := f.open(ctx, rc, r.CredentialsFrom)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	e, err := loc.Stat(ctx, f.name)
	if rc.DryRun && errors.Is(err, fs.ErrNotExist) {
		// The snapshot comes from an earlier step of the plan, which a dry run did not take:
		// the data directory is what can be checked now.
		return r.dryRunWithoutSnapshot(rc, dataDir, name)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if e.Dir {
		return nil, fmt.Errorf("snapshot: %s is a folder, want a snapshot file", f.url)
	}
	want, source, rev, err := r.expected(ctx, loc)
	if err != nil {
		return nil, err
	}
	local := ""
	if lf, ok := loc.(storage.LocalFile); ok {
		local = lf.LocalPath(f.name)
	}
	out := engine.Outputs{
		"dataDir":  dataDir,
		"name":     name,
		"snapshot": f.url,
		"sha256":   want,
	}
	revision := func(path string) {
		if rev == 0 && path != "" {
			if v, err := snapshotRevision(path); err == nil {
				rev = v
			}
		}
		if rev > 0 {
			out["revision"] = rev + r.BumpRevision
		}
	}

	var st restoreState
	had, err := rc.LoadState(&st)
	if err != nil {
		return nil, err
	}
	tmp := partName(dataDir)
	empty, exists, err := dirState(dataDir)
	if err != nil {
		return nil, err
	}
	if had && st.DataDir == dataDir && st.SHA256 == want && exists && !empty {
		// This step restored it, from a snapshot with this sum, before the run stopped: the
		// rename was its last act.
		if _, err := os.Stat(filepath.Join(dataDir, "member", "snap", "db")); err == nil {
			revision(local)
			out["created"] = true
			return out, nil
		}
	}
	if exists && !empty {
		return nil, notEmpty(dataDir)
	}

	path, err := r.fetch(ctx, rc, loc, e, local, dataDir, want, source)
	if path != "" && path != local {
		defer os.Remove(path)
	}
	if err != nil {
		return nil, err
	}
	revision(path)
	if rc.DryRun {
		out["dryRun"] = true
		return out, nil
	}

	if err := rc.SaveState(ctx, restoreState{DataDir: dataDir, SHA256: want}); err != nil {
		return nil, err
	}
	// Whatever an interrupted attempt left under the temporary name is incomplete.
	if err := os.RemoveAll(tmp); err != nil {
		return nil, fmt.Errorf("dataDir: clearing %s: %w", tmp, err)
	}
	if err := os.MkdirAll(filepath.Dir(dataDir), 0o755); err != nil {
		return nil, fmt.Errorf("dataDir: %w", err)
	}
	err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        path,
		Name:                name,
		OutputDataDir:       tmp,
		PeerURLs:            peers,
		InitialCluster:      cluster,
		InitialClusterToken: token,
		SkipHashCheck:       r.SkipHashCheck,
		RevisionBump:        uint64(r.BumpRevision),
		MarkCompacted:       r.BumpRevision > 0,
	})
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("restoring %s into %s: %v", f.url, tmp, etcd.OneLine(err))
	}
	// etcd refuses a data directory that others can read.
	if err := os.Chmod(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("dataDir: %w", err)
	}
	if err := syncDir(filepath.Join(tmp, "member")); err != nil {
		return nil, fmt.Errorf("dataDir: %w", err)
	}
	// An empty dataDir makes way (os.Remove removes only an empty folder: anything written
	// there meanwhile stops the restore). A crash before the rename leaves only the temporary
	// folder, which the next attempt clears.
	if exists {
		if err := os.Remove(dataDir); err != nil {
			return nil, fmt.Errorf("dataDir: %w", err)
		}
	}
	if err := os.Rename(tmp, dataDir); err != nil {
		return nil, fmt.Errorf("dataDir: moving %s into place: %w", tmp, err)
	}
	if err := syncDir(filepath.Dir(dataDir)); err != nil {
		return nil, fmt.Errorf("dataDir: %w", err)
	}
	out["created"] = true
	return out, nil
}

// expected returns the sha256 the snapshot must have (sha256:, else the manifest beside it),
// where that comes from, and the snapshot's revision when the manifest says it.
func (r *Restore) expected(ctx context.Context, loc storage.Location) (want, source string, rev int64, err error) {
	f := r.file
	want, source = strings.ToLower(r.SHA256), "sha256"
	m, err := readManifest(ctx, loc, f)
	switch {
	case err == nil:
		rev = m.Revision
		if want == "" {
			want, source = strings.ToLower(m.SHA256), "manifest "+f.manifestURL
		}
	case errors.Is(err, fs.ErrNotExist):
		if want == "" {
			return "", "", 0, fmt.Errorf("snapshot: %s has no manifest %s beside it; give its sha256: to check it against", f.url, f.manifestName())
		}
	default:
		if want == "" {
			return "", "", 0, fmt.Errorf("snapshot: %w", err)
		}
	}
	return want, source, rev, nil
}

// fetch returns the snapshot as a local file whose sha256 is want: a local snapshot where it
// is; an object downloaded into a temporary file beside the data directory (on its file
// system, which has room for the restored database anyway), hashed on the way. In a dry run an
// object is only hashed as it streams by, and the path is "". A mismatch is refused naming the
// snapshot; the returned path, when not local, is for the caller to remove.
func (r *Restore) fetch(ctx context.Context, rc *engine.RunContext, loc storage.Location, e storage.Entry, local, dataDir, want, source string) (string, error) {
	f := r.file
	if err := ctx.Err(); err != nil {
		return "", err
	}
	mismatch := func(got string) error {
		return &checksumError{msg: fmt.Sprintf("snapshot: %s has sha256 %s but %s says %s: refusing to restore it", f.url, got, source, want)}
	}
	if local != "" {
		got, _, err := fileSHA256(local)
		if err != nil {
			return "", fmt.Errorf("snapshot: %w", err)
		}
		if got != want {
			return "", mismatch(got)
		}
		return local, nil
	}

	rd, err := loc.Open(ctx, f.name)
	if err != nil {
		return "", fmt.Errorf("snapshot: %w", err)
	}
	defer rd.Close()
	h := sha256.New()
	pw := &progressWriter{rc: rc, total: e.Size}
	var file *os.File
	path := ""
	if !rc.DryRun {
		if err := os.MkdirAll(filepath.Dir(dataDir), 0o755); err != nil {
			return "", fmt.Errorf("dataDir: %w", err)
		}
		// A fixed name: a re-run after a crash truncates what the last attempt left.
		path = downloadName(dataDir)
		if file, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
			return "", f.fail("snapshot", "downloading", err)
		}
		defer file.Close()
		// Left by an earlier attempt with other permissions, it is made private again.
		if err := file.Chmod(0o600); err != nil {
			return path, f.fail("snapshot", "downloading", err)
		}
	}
	ws := []io.Writer{h, pw}
	if file != nil {
		ws = append(ws, file)
	}
	if _, err := io.Copy(io.MultiWriter(ws...), rd); err != nil {
		return path, f.fail("snapshot", "downloading", err)
	}
	if file != nil {
		if err := file.Close(); err != nil {
			return path, f.fail("snapshot", "downloading", err)
		}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return path, mismatch(got)
	}
	return path, nil
}

// downloadName is where a snapshot object is downloaded for a restore into dataDir: hidden,
// beside it, fixed so that a re-run reuses it rather than leaving another.
func downloadName(dataDir string) string {
	return filepath.Join(filepath.Dir(dataDir), "."+filepath.Base(dataDir)+".snapshot"+partSuffix)
}

// checksumError is a snapshot whose sha256 is not the expected one; it matches
// storage.ErrChecksum.
type checksumError struct{ msg string }

func (e *checksumError) Error() string { return e.msg }
func (e *checksumError) Unwrap() error { return storage.ErrChecksum }

// dirState reports whether dir exists and whether it is empty; a file there is an error.
func dirState(dir string) (empty, exists bool, err error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return true, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("dataDir: %w", err)
	}
	if !fi.IsDir() {
		return false, true, fmt.Errorf("dataDir: %s is a file, want a new data directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, true, fmt.Errorf("dataDir: %w", err)
	}
	return len(entries) == 0, true, nil
}

// Undo implements engine.Undoer: it removes the data directory the step created. A folder that
// does not look like an etcd data directory is left alone.
func (r *Restore) Undo(_ context.Context, rc *engine.RunContext, outputs engine.Outputs) error {
	if created, _ := outputs["created"].(bool); !created {
		return nil
	}
	dir, _ := outputs["dataDir"].(string)
	if dir == "" {
		return nil
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if _, err := os.Stat(filepath.Join(dir, "member")); err != nil {
		return fmt.Errorf("dataDir: %s has no member folder: not an etcd data directory, not removing it", dir)
	}
	if rc.DryRun {
		return nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("dataDir: removing %s: %w", dir, err)
	}
	return nil
}

// dryRunWithoutSnapshot is a dry run's answer when the snapshot is not there yet: the restore
// would fail now only if the data directory is not empty.
func (r *Restore) dryRunWithoutSnapshot(rc *engine.RunContext, dataDir, name string) (engine.Outputs, error) {
	empty, exists, err := dirState(dataDir)
	if err != nil {
		return nil, err
	}
	if exists && !empty {
		return nil, notEmpty(dataDir)
	}
	rc.Logger.Info("dry run: the snapshot is not there yet (an earlier step makes it); checked the data directory only", "snapshot", r.file.url)
	return engine.Outputs{"dataDir": dataDir, "name": name, "snapshot": r.file.url, "snapshotPresent": false, "dryRun": true}, nil
}

func notEmpty(dataDir string) error {
	return fmt.Errorf("dataDir: %s is not empty; etcd.restore only restores into a new data directory (remove it or choose another)", dataDir)
}
