package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// inputsLabel holds, in an image's config, the cache key of what it was made from (see
// cacheKey). The tarball carries its own key, so there is no side file to fall out of step with
// it, and reading the key back costs only the tarball's manifest and config.
const inputsLabel = "dev.planrun.images.inputs"

// cacheKey is the sha256 of the parts given: the digest of this program's source (job.self) and
// those of the files copied into the image.
func cacheKey(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%s\n", p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// upToDate reports whether path is an image tarball for ref whose inputsLabel is key. Anything
// unreadable (missing, cut short, another format) is simply out of date: it gets rebuilt.
func upToDate(path string, ref name.Tag, key string) bool {
	img, err := tarball.ImageFromPath(path, &ref)
	if err != nil {
		return false
	}
	cf, err := img.ConfigFile()
	return err == nil && cf.Config.Labels[inputsLabel] == key
}

// writeImage writes img as a docker-save tarball (what `ctr images import` and `docker load`
// read) at path, under every tag in refs.
func writeImage(path string, img v1.Image, refs ...name.Tag) error {
	m := make(map[name.Reference]v1.Image, len(refs))
	for _, r := range refs {
		m[r] = img
	}
	return atomicWrite(path, func(tmp string) error { return tarball.MultiRefWriteToFile(tmp, m) })
}

// atomicWrite has write fill a temporary file next to path, then renames it over path: a reader
// (or a concurrent build of the same image) sees the old tarball or the new one, never half of
// one. No fsync: a tarball lost to a crash is rebuilt by the next run, because upToDate cannot
// read it.
func atomicWrite(path string, write func(tmp string) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	f.Close()
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err := write(tmp); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil { // CreateTemp made it 0600
		return err
	}
	return os.Rename(tmp, path)
}
