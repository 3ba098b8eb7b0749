package main

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// epoch is the time of every file, layer and image built here: with no wall clock in them, the
// same inputs give the same digests, so a rebuild changes nothing for containerd.
var epoch = time.Unix(0, 0).UTC()

// tree is the content of one layer, keyed by path inside the image (no leading slash).
type tree map[string]entry

type entry struct {
	hdr  tar.Header
	data []byte
}

// dir adds a folder (and its parents, 0755 and root's, unless added already).
func (t tree) dir(name string, mode int64, uid, gid int) {
	t.parents(name)
	t[name] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: gid}}
}

// file adds a regular file owned by root.
func (t tree) file(name string, mode int64, data []byte) {
	t.parents(name)
	t[name] = entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data: data}
}

// symlink adds a symbolic link to target.
func (t tree) symlink(name, target string) {
	t.parents(name)
	t[name] = entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

func (t tree) parents(name string) {
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if _, ok := t[d]; !ok {
			t[d] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755}}
		}
	}
}

// layer writes the tree as a tar in path order (a folder before what it holds), every entry
// dated epoch, and wraps it as a layer that go-containerregistry gzips.
func (t tree) layer() (v1.Layer, error) {
	names := make([]string, 0, len(t))
	for name := range t {
		if name != path.Clean(name) || path.IsAbs(name) || strings.HasPrefix(name, "../") {
			return nil, fmt.Errorf("layer path %q is not relative and clean", name)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range names {
		e := t[name]
		e.hdr.ModTime = epoch
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, fmt.Errorf("writing %s into a layer: %w", name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("writing %s into a layer: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// newImage returns a one-layer linux image for this machine's architecture (ctr imports only
// the platform it runs on) with the given process config.
func newImage(l v1.Layer, createdBy string, cfg v1.Config) (v1.Image, error) {
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{
		OS:           "linux",
		Architecture: runtime.GOARCH,
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   l,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: createdBy},
	})
	if err != nil {
		return nil, err
	}
	return mutate.CreatedAt(img, v1.Time{Time: epoch})
}
