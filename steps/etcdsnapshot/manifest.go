// Package etcdsnapshot implements etcd.snapshot (a full snapshot of a plan datastore through the
// Maintenance API, to a file with a manifest beside it) and etcd.restore (a snapshot file into a
// new etcd data directory, checksum verified first).
package etcdsnapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"time"

	"planrun.dev/planrun/steps/storage"
)

// ManifestSuffix is appended to a snapshot's path to name its manifest.
const ManifestSuffix = ".manifest.json"

// partSuffix marks a file or folder being written; it takes its final name only when complete.
const partSuffix = ".planrun-part"

// Manifest describes a snapshot file; etcd.snapshot writes it beside the file and etcd.restore
// checks the file against it.
type Manifest struct {
	File string `json:"file"` // base name of the snapshot file
	Size int64  `json:"size"`
	// SHA256 is the hex sha256 of the whole file (etcd's own integrity hash, appended by the
	// server, included).
	SHA256   string `json:"sha256"`
	Revision int64  `json:"revision"`
	// EtcdVersion is the version of the server that made the snapshot; StorageVersion the
	// snapshot's storage version (etcd ≥ 3.6), which says what etcd can restore it.
	EtcdVersion    string   `json:"etcdVersion,omitempty"`
	StorageVersion string   `json:"storageVersion,omitempty"`
	Datastore      string   `json:"datastore"`
	Endpoints      []string `json:"endpoints"`
	// Member is the endpoint the snapshot was taken from: the leader when there are several.
	Member string    `json:"member,omitempty"`
	Time   time.Time `json:"time"`
}

// ManifestPath is where the manifest of the snapshot file path is.
func ManifestPath(snapshot string) string { return snapshot + ManifestSuffix }

// ReadManifest reads the manifest beside the local snapshot file snapshot; a missing one gives
// an fs.ErrNotExist error.
func ReadManifest(snapshot string) (*Manifest, error) {
	f, err := parseSnapshotFile(snapshot)
	if err != nil {
		return nil, err
	}
	return readManifest(context.Background(), storage.OpenLocal(f.dir), f)
}

// partName is the temporary name of name while it is written: hidden, in the same folder (so
// that the rename is atomic), fixed so that a re-run reuses it rather than leaving litter.
func partName(name string) string {
	return filepath.Join(filepath.Dir(name), "."+filepath.Base(name)+partSuffix)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func fileSHA256(name string) (string, int64, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
