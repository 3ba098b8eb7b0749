package etcdsnapshot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
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
)

func init() {
	engine.Register(engine.StepType{
		Name: "etcd.restore",
		Doc:  "Restore a snapshot file into a new etcd data directory for a new member, after checking its sha256.",
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
	Snapshot                 string   `yaml:"snapshot" plan:"required" doc:"Path of the snapshot file (etcd.snapshot's to, or etcdctl snapshot save's file)."`
	DataDir                  string   `yaml:"dataDir" plan:"required" doc:"The new member's data directory: must not exist or be empty. It is restored beside it under a temporary name, then renamed."`
	SHA256                   string   `yaml:"sha256" doc:"Expected sha256 (hex) of the snapshot file. Default: the one in the manifest beside it (<snapshot>.manifest.json); with neither, the step refuses."`
	Name                     string   `yaml:"name" doc:"Member name (default \"default\", etcd's default)."`
	InitialCluster           string   `yaml:"initialCluster" doc:"name=peerURL,... of the new cluster (default: this member alone, name=initialAdvertisePeerURLs)."`
	InitialAdvertisePeerURLs []string `yaml:"initialAdvertisePeerURLs" doc:"Peer URLs the member advertises (default http://localhost:2380)."`
	InitialClusterToken      string   `yaml:"initialClusterToken" doc:"Token of the new cluster (default \"etcd-cluster\", etcd's default)."`
	BumpRevision             int64    `yaml:"bumpRevision" doc:"Raise the restored revision by this much and mark it compacted, so that watchers (Kubernetes API servers) never see revisions go back; etcd advises 1000000000 when restoring under running clients."`
	SkipHashCheck            bool     `yaml:"skipHashCheck" doc:"Skip etcd's own integrity hash check: needed for a db file copied out of a data directory (it has none). The sha256 check still applies."`
}

var (
	_ engine.Action    = (*Restore)(nil)
	_ engine.Validator = (*Restore)(nil)
	_ engine.Undoer    = (*Restore)(nil)
	_ engine.Describer = (*Restore)(nil)
)

var hexSHA256 = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Validate implements engine.Validator.
func (r *Restore) Validate() error {
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
	return fmt.Sprintf("restore %s into new etcd data directory %s", r.Snapshot, r.DataDir)
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
	dataDir, err := filepath.Abs(r.DataDir)
	if err != nil {
		return nil, fmt.Errorf("dataDir: %w", err)
	}
	name, peers, cluster, token := r.settings()
	if rc.DryRun {
		if _, err := os.Stat(r.Snapshot); errors.Is(err, fs.ErrNotExist) {
			// The snapshot comes from an earlier step of the plan, which a dry run did not
			// take: the data directory is what can be checked now.
			return r.dryRunWithoutSnapshot(rc, dataDir, name)
		}
	}
	sum, rev, err := r.verify(ctx)
	if err != nil {
		return nil, err
	}
	out := engine.Outputs{
		"dataDir":  dataDir,
		"name":     name,
		"snapshot": r.Snapshot,
		"sha256":   sum,
	}
	if rev > 0 {
		out["revision"] = rev + r.BumpRevision
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
	if had && st.DataDir == dataDir && st.SHA256 == sum && exists && !empty {
		// This step restored it before the run stopped: the rename was its last act.
		if _, err := os.Stat(filepath.Join(dataDir, "member", "snap", "db")); err == nil {
			out["created"] = true
			return out, nil
		}
	}
	if exists && !empty {
		return nil, notEmpty(dataDir)
	}
	if rc.DryRun {
		out["dryRun"] = true
		return out, nil
	}

	if err := rc.SaveState(ctx, restoreState{DataDir: dataDir, SHA256: sum}); err != nil {
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
		SnapshotPath:        r.Snapshot,
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
		return nil, fmt.Errorf("restoring %s into %s: %v", r.Snapshot, tmp, etcd.OneLine(err))
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

// verify checks the snapshot file's sha256 against sha256: or the manifest beside it, and
// returns the sum and the snapshot's revision (from the manifest, else read from the file).
func (r *Restore) verify(ctx context.Context) (string, int64, error) {
	fi, err := os.Stat(r.Snapshot)
	if err != nil {
		return "", 0, fmt.Errorf("snapshot: %w", err)
	}
	if fi.IsDir() {
		return "", 0, fmt.Errorf("snapshot: %s is a folder, want a snapshot file", r.Snapshot)
	}
	want := strings.ToLower(r.SHA256)
	source := "sha256"
	var rev int64
	m, err := ReadManifest(r.Snapshot)
	switch {
	case err == nil:
		rev = m.Revision
		if want == "" {
			want, source = strings.ToLower(m.SHA256), "manifest "+ManifestPath(r.Snapshot)
		}
	case errors.Is(err, fs.ErrNotExist):
		if want == "" {
			return "", 0, fmt.Errorf("snapshot: %s has no manifest %s beside it; give its sha256: to check it against", r.Snapshot, filepath.Base(ManifestPath(r.Snapshot)))
		}
	default:
		if want == "" {
			return "", 0, fmt.Errorf("snapshot: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return "", 0, err
	}
	got, _, err := fileSHA256(r.Snapshot)
	if err != nil {
		return "", 0, fmt.Errorf("snapshot: %w", err)
	}
	if got != want {
		return "", 0, fmt.Errorf("snapshot: %s has sha256 %s but %s says %s: refusing to restore it", r.Snapshot, got, source, want)
	}
	if rev == 0 {
		if v, err := snapshotRevision(r.Snapshot); err == nil {
			rev = v
		}
	}
	return got, rev, nil
}

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
	rc.Logger.Info("dry run: the snapshot is not there yet (an earlier step makes it); checked the data directory only", "snapshot", r.Snapshot)
	return engine.Outputs{"dataDir": dataDir, "name": name, "snapshot": r.Snapshot, "snapshotPresent": false, "dryRun": true}, nil
}

func notEmpty(dataDir string) error {
	return fmt.Errorf("dataDir: %s is not empty; etcd.restore only restores into a new data directory (remove it or choose another)", dataDir)
}
