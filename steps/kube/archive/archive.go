// Package archive is the on-disk format of planrun backups, shared by kube.backup (which
// writes it), kube.restore (which reads it) and kube.verifyBackup / `planrun verify-backup`.
//
// A backup is a folder:
//
//	manifest.json                                  written last: a folder without it is incomplete
//	resources/<resource>[.<group>]/<namespace>.jsonl   one object per line, as the API served it
//	resources/<resource>[.<group>]/_cluster.jsonl      cluster-scoped objects
//
// JSON lines keep a backup streamable in both directions (memory does not grow with the object
// count), diffable and greppable. The manifest lists, per resource, its API version, kind and
// scope, and per file the object count, size and sha256. Files holding Secrets are 0600.
package archive

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/safepath"
)

// ManifestFile is the name of the manifest in a backup folder.
const ManifestFile = "manifest.json"

// Version of the format.
const Version = 1

// resourcesDir is the folder of a backup that holds every object file.
const resourcesDir = "resources"

// ClusterScope is the file name (without extension) of a resource's cluster-scoped objects.
const ClusterScope = "_cluster"

// Manifest describes a backup.
type Manifest struct {
	Version   int         `json:"version"`
	Created   time.Time   `json:"created"`
	Cluster   ClusterInfo `json:"cluster"`
	Resources []Resource  `json:"resources"`
	Objects   int64       `json:"objects"`
	Bytes     int64       `json:"bytes"`
}

// ClusterInfo says where a backup was taken.
type ClusterInfo struct {
	Name          string `json:"name,omitempty"`
	Server        string `json:"server,omitempty"`
	ServerVersion string `json:"serverVersion,omitempty"`
}

// Resource is one backed-up resource.
type Resource struct {
	Group      string `json:"group"`
	Version    string `json:"version"`
	Resource   string `json:"resource"`
	Kind       string `json:"kind"`
	Namespaced bool   `json:"namespaced"`
	Count      int64  `json:"count"`
	Files      []File `json:"files"`
}

// APIVersion is "group/version", or "version" for the core group.
func (r Resource) APIVersion() string {
	if r.Group == "" {
		return r.Version
	}
	return r.Group + "/" + r.Version
}

// GroupResource is "resource" or "resource.group", as kubectl writes it.
func (r Resource) GroupResource() string { return GroupResource(r.Group, r.Resource) }

// File is one file of a backup.
type File struct {
	Path      string `json:"path"` // relative to the backup folder, with forward slashes
	Namespace string `json:"namespace,omitempty"`
	Count     int64  `json:"count"`
	Bytes     int64  `json:"bytes"`
	SHA256    string `json:"sha256"`
}

// GroupResource is "resource" or "resource.group".
func GroupResource(group, resource string) string {
	if group == "" {
		return resource
	}
	return resource + "." + group
}

// FilePath is where a resource's objects of one namespace ("" for cluster-scoped) go.
func FilePath(group, resource, namespace string) string {
	if namespace == "" {
		namespace = ClusterScope
	}
	return resourcesDir + "/" + GroupResource(group, resource) + "/" + namespace + ".jsonl"
}

// Sensitive reports whether a resource's files must be readable by their owner only.
func Sensitive(group, resource string) bool { return group == "" && resource == "secrets" }

// Writer writes one file of a backup, hashing as it goes.
type Writer struct {
	rel   string
	ns    string
	f     *os.File
	bw    *bufio.Writer
	h     hash.Hash
	count int64
	bytes int64
}

// Create starts a file of the backup in dir.
func Create(dir, group, resource, namespace string) (*Writer, error) {
	rel := FilePath(group, resource, namespace)
	path := filepath.Join(dir, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	mode := os.FileMode(0o644)
	if Sensitive(group, resource) {
		mode = 0o600
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(mode); err != nil { // an existing file keeps its mode otherwise
		f.Close()
		return nil, err
	}
	h := sha256.New()
	return &Writer{rel: rel, ns: namespace, f: f, bw: bufio.NewWriterSize(io.MultiWriter(f, h), 256<<10), h: h}, nil
}

// Write adds one object, given as its JSON encoding (without a newline).
func (w *Writer) Write(objectJSON []byte) error {
	if _, err := w.bw.Write(objectJSON); err != nil {
		return err
	}
	if err := w.bw.WriteByte('\n'); err != nil {
		return err
	}
	w.count++
	w.bytes += int64(len(objectJSON)) + 1
	return nil
}

// Close flushes and syncs the file and returns its manifest entry.
func (w *Writer) Close() (File, error) {
	err := w.bw.Flush()
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return File{Path: w.rel, Namespace: w.ns, Count: w.count, Bytes: w.bytes, SHA256: hex.EncodeToString(w.h.Sum(nil))}, err
}

// Abort closes the file without caring about errors (a failed backup).
func (w *Writer) Abort() { w.f.Close() }

// WriteManifest writes the manifest atomically; it is the last file of a backup.
func WriteManifest(dir string, m *Manifest) error {
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return engine.WriteFileAtomic(filepath.Join(dir, ManifestFile), append(data, '\n'), 0o644)
}

// MaxManifestSize bounds the manifest read from a backup folder (a manifest lists one entry per
// resource and namespace; a million entries stay well below it).
const MaxManifestSize = 256 << 20

// ReadManifest reads a backup's manifest.
func ReadManifest(dir string) (*Manifest, error) {
	m, _, err := ReadManifestFile(dir)
	return m, err
}

// ReadManifestFile reads a backup's manifest and returns its bytes too (their sha256 identifies
// the backup), read once so that both describe the same file.
func ReadManifestFile(dir string) (*Manifest, []byte, error) {
	name := filepath.Join(dir, ManifestFile)
	f, err := openEntry(dir, ManifestFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s is not a complete backup: no %s", dir, ManifestFile)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(data) > MaxManifestSize {
		return nil, nil, fmt.Errorf("%s: larger than %d bytes", name, MaxManifestSize)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", name, err)
	}
	return m, data, nil
}

// ParseManifest decodes a manifest and checks it: its version, and every file path with
// safepath.Rel (no "..", no absolute path, no backslash or control byte), inside resources/.
// A crafted manifest cannot make a reader open anything outside its backup folder.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if m.Version != Version {
		return nil, fmt.Errorf("backup format version %d is not supported (want %d)", m.Version, Version)
	}
	for i, r := range m.Resources {
		for j, f := range r.Files {
			if err := checkEntry(f.Path); err != nil {
				return nil, fmt.Errorf("resources[%d].files[%d]: %w", i, j, err)
			}
		}
	}
	return &m, nil
}

// checkEntry checks the path of an object file named by a manifest: safe (safepath.Rel) and
// inside resources/.
func checkEntry(p string) error {
	if err := safepath.Rel("backup entry", p); err != nil {
		return err
	}
	if !strings.HasPrefix(p, resourcesDir+"/") {
		return &safepath.Error{What: "backup entry", Name: p, Reason: "must be under " + resourcesDir + "/"}
	}
	return nil
}

// MaxObjectSize bounds one line of a backup file (the API server's own limit is 1.5 MiB per
// object in etcd; this leaves room for large CRs).
const MaxObjectSize = 32 << 20

// Reader streams the objects of one backup file.
type Reader struct {
	f  *os.File
	sc *bufio.Scanner
}

// Open opens a backup file for reading.
func Open(dir string, f File) (*Reader, error) {
	if err := checkEntry(f.Path); err != nil {
		return nil, err
	}
	file, err := openEntry(dir, f.Path)
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 256<<10), MaxObjectSize)
	return &Reader{f: file, sc: sc}, nil
}

// Next returns the JSON of the next object, or io.EOF. The slice is valid until the next call.
func (r *Reader) Next() ([]byte, error) {
	for r.sc.Scan() {
		if line := r.sc.Bytes(); len(line) > 0 {
			return line, nil
		}
	}
	if err := r.sc.Err(); err != nil {
		return nil, err
	}
	return nil, io.EOF
}

// Close closes the file.
func (r *Reader) Close() error { return r.f.Close() }
