// Package archive is the format of planrun backups, shared by kube.backup (which writes it),
// kube.restore (which reads it) and kube.verifyBackup / `planrun verify-backup`.
//
// A backup is a folder, or a prefix of a bucket (any storage.Location):
//
//	manifest.json                                  written last: a backup without it is incomplete
//	resources/<resource>[.<group>]/<namespace>.jsonl   one object per line, as the API served it
//	resources/<resource>[.<group>]/_cluster.jsonl      cluster-scoped objects
//
// JSON lines keep a backup streamable in both directions (memory does not grow with the object
// count), diffable and greppable. The manifest lists, per resource, its API version, kind and
// scope, and per file the object count, size and sha256. Files holding Secrets are 0600 (in a
// bucket, the mode is recorded in the object's metadata). With compression, files are stored
// gzip (.jsonl.gz) or zstd (.jsonl.zst) compressed, and the manifest's sizes and sums are those of
// the stored bytes.
//
// Every path a manifest names is checked (safepath.Rel, under resources/) before anything opens
// it, and in a local folder no symlink or special file is followed or read: a crafted manifest or
// folder cannot make a reader open anything outside the backup.
package archive

import (
	"strings"
	"time"

	"planrun.dev/planrun/internal/safepath"
)

// ManifestFile is the name of the manifest in a backup folder.
const ManifestFile = "manifest.json"

// Versions of the format. An uncompressed backup is version 1, as every backup was before
// compression existed, so that it stays readable by older planruns. A compressed one is version
// 2: an older planrun, which would read its files as plain JSON lines, refuses it instead.
const (
	Version           = 1
	VersionCompressed = 2
)

// ResourcesDir is the folder of a backup that holds every object file.
const ResourcesDir = "resources"

// ClusterScope is the file name (without extension) of a resource's cluster-scoped objects.
const ClusterScope = "_cluster"

// Manifest describes a backup.
type Manifest struct {
	Version int `json:"version"`
	// Compression of every object file; absent (None) in a version 1 manifest.
	Compression Compression `json:"compression,omitempty"`
	Created     time.Time   `json:"created"`
	Cluster     ClusterInfo `json:"cluster"`
	Resources   []Resource  `json:"resources"`
	Objects     int64       `json:"objects"`
	// Bytes is the size of every object file as stored (compressed, with compression).
	Bytes int64 `json:"bytes"`
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
	// Bytes and SHA256 describe the file as stored (compressed, with compression).
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// GroupResource is "resource" or "resource.group".
func GroupResource(group, resource string) string {
	if group == "" {
		return resource
	}
	return resource + "." + group
}

// FilePath is where a resource's objects of one namespace ("" for cluster-scoped) go, stored
// with compression c.
func FilePath(group, resource, namespace string, c Compression) string {
	if namespace == "" {
		namespace = ClusterScope
	}
	return ResourcesDir + "/" + GroupResource(group, resource) + "/" + namespace + ".jsonl" + c.Suffix()
}

// checkEntry checks the path of an object file named by a manifest: safe (safepath.Rel) and
// inside resources/.
func checkEntry(p string) error {
	if err := safepath.Rel("backup entry", p); err != nil {
		return err
	}
	if !strings.HasPrefix(p, ResourcesDir+"/") {
		return &safepath.Error{What: "backup entry", Name: p, Reason: "must be under " + ResourcesDir + "/"}
	}
	return nil
}

// Sensitive reports whether a resource's files must be readable by their owner only.
func Sensitive(group, resource string) bool { return group == "" && resource == "secrets" }
