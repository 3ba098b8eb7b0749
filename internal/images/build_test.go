package images

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBuildBusyboxAndPause builds the two images every test node needs and checks that each
// tarball names its image as ctr will import it; a second Build keeps both files as they are.
func TestBuildBusyboxAndPause(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a cold run compiles hack/images and its dependencies (minutes)")
	}
	if _, err := os.Stat("/bin/busybox"); errors.Is(err, os.ErrNotExist) {
		t.Skip("/bin/busybox not found: install Debian's busybox-static (hack/install-node-deps.sh)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	paths, err := Build(ctx, Busybox, Pause)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{Busybox: BusyboxImage, Pause: PauseImage}
	before := map[string]os.FileInfo{}
	for name, ref := range want {
		path := paths[name]
		if path != filepath.Join(dir, name+".tar") {
			t.Errorf("%s: path %q, want %s", name, path, filepath.Join(dir, name+".tar"))
		}
		if tags := repoTags(t, path); !slices.Equal(tags, []string{ref}) {
			t.Errorf("%s: manifest.json RepoTags %q, want [%s]", name, tags, ref)
		}
		if before[name], err = os.Stat(path); err != nil {
			t.Fatal(err)
		}
	}

	again, err := Build(ctx, Busybox, Pause)
	if err != nil {
		t.Fatal(err)
	}
	for name := range want {
		// Written files are renamed into place, so a rebuilt tarball is another file.
		if after, err := os.Stat(again[name]); err != nil || !os.SameFile(before[name], after) {
			t.Errorf("%s: rebuilt although nothing changed (%v)", name, err)
		}
	}
}

func TestBuildReportsTheCommandsError(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: a cold run compiles hack/images and its dependencies (minutes)")
	}
	_, err := Build(context.Background(), "frobnicate")
	if err == nil || !strings.Contains(err.Error(), `unknown image "frobnicate" (known: busybox, pause, planrun)`) ||
		strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v, want one line naming the unknown image", err)
	}
}

// repoTags reads the RepoTags of the one image in a docker-save tarball's manifest.json.
func repoTags(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			t.Fatalf("%s has no manifest.json", path)
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct{ RepoTags []string }
		if err := json.NewDecoder(tr).Decode(&m); err != nil || len(m) != 1 {
			t.Fatalf("%s: manifest.json: %v (%d images)", path, err, len(m))
		}
		return m[0].RepoTags
	}
}
