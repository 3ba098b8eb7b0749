// Package etcdsnapshot implements etcd.snapshot (a full snapshot of a plan datastore through the
// Maintenance API, to a file with a manifest beside it) and etcd.restore (a snapshot file into a
// new etcd data directory, checksum verified first).
package etcdsnapshot

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"planrun.dev/planrun/internal/safepath"
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

// ReadManifest reads the manifest beside snapshot; a missing one gives an fs.ErrNotExist error.
func ReadManifest(snapshot string) (*Manifest, error) {
	b, err := os.ReadFile(ManifestPath(snapshot))
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %v", ManifestPath(snapshot), err)
	}
	// file is a base name beside the manifest; a crafted one ("../x", "/etc/x") is refused so
	// that nothing ever joins it to a folder.
	if err := safepath.Name("snapshot file", m.File); err != nil {
		return nil, fmt.Errorf("manifest %s: file: %w", ManifestPath(snapshot), err)
	}
	return &m, nil
}

// writeFileAtomic writes b to name through a temporary file: synced, renamed, folder synced.
func writeFileAtomic(name string, b []byte, mode fs.FileMode) error {
	part := partName(name)
	f, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(part, name)
	}
	if err != nil {
		_ = os.Remove(part)
		return err
	}
	return syncDir(filepath.Dir(name))
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

// snapshotRevision reads the revision of the key-value store in a snapshot (a bbolt file) without
// scanning it: the newest key of the "key" bucket, or the finished compaction if later (a
// compaction can remove a trailing deletion). Keys and the compaction mark start with the
// revision's main part, 8 bytes big-endian.
func snapshotRevision(path string) (int64, error) {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var rev int64
	err = db.View(func(tx *bolt.Tx) error {
		kb := tx.Bucket([]byte("key"))
		if kb == nil {
			return errors.New("no key bucket: not an etcd v3 snapshot")
		}
		if k, _ := kb.Cursor().Last(); len(k) >= 8 {
			rev = int64(binary.BigEndian.Uint64(k[:8]))
		}
		if mb := tx.Bucket([]byte("meta")); mb != nil {
			if v := mb.Get([]byte("finishedCompactRev")); len(v) >= 8 {
				rev = max(rev, int64(binary.BigEndian.Uint64(v[:8])))
			}
		}
		return nil
	})
	return rev, err
}
