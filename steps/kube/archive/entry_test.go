package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"planrun.dev/planrun/internal/s3test"
	"planrun.dev/planrun/internal/safepath"
	"planrun.dev/planrun/steps/storage"
)

// manifestWith is a manifest naming one file at path.
func manifestWith(path string) string {
	p, _ := json.Marshal(path)
	return fmt.Sprintf(`{"version": 1, "resources": [{"version": "v1", "resource": "configmaps", "files": [{"path": %s}]}]}`, p)
}

var ctx = context.Background()

// A crafted manifest whose entry names leave the backup folder is refused by every reader:
// ReadManifest (and so kube.restore, kube.verifyBackup and planrun verify-backup), Verify, Open.
func TestHostileManifestNames(t *testing.T) {
	for _, path := range []string{
		"../outside.jsonl",
		"resources/../../outside.jsonl",
		"resources/configmaps/../../../etc/passwd",
		"/etc/passwd",
		"resources//x.jsonl",
		"resources/configmaps/",
		`resources\..\..\x.jsonl`,
		"resources/configmaps/a\x00.jsonl",
		"resources/configmaps/a\n.jsonl",
		"manifest.json",
		"",
		".",
		"resources/./x.jsonl",
	} {
		t.Run(path, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, ManifestFile), []byte(manifestWith(path)), 0o644); err != nil {
				t.Fatal(err)
			}
			loc := storage.OpenLocal(dir)
			_, err := ReadManifest(ctx, loc)
			if !errors.Is(err, safepath.ErrUnsafe) || !strings.Contains(err.Error(), "resources[0].files[0]: backup entry") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("ReadManifest: %v", err)
			}
			if _, err := Verify(ctx, loc, nil); !errors.Is(err, safepath.ErrUnsafe) {
				t.Fatalf("Verify: %v", err)
			}
			if _, err := Open(ctx, loc, None, File{Path: path}); !errors.Is(err, safepath.ErrUnsafe) {
				t.Fatalf("Open: %v", err)
			}
		})
	}
}

// A backup folder whose entries (or the manifest) are symlinks or special files is refused
// where a reader opens them: no link is followed out of the folder, no FIFO blocks a reader.
func TestNonRegularEntries(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret.jsonl")
	if err := os.WriteFile(outside, []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const entry = "resources/configmaps/a.jsonl"
	for _, tc := range []struct {
		name string
		make func(t *testing.T, dir string)
	}{
		{"symlinked entry", func(t *testing.T, dir string) {
			mkdir(t, dir, "resources/configmaps")
			must(t, os.Symlink(outside, filepath.Join(dir, entry)))
		}},
		{"symlinked folder", func(t *testing.T, dir string) {
			mkdir(t, dir, "resources")
			must(t, os.Symlink(filepath.Dir(outside), filepath.Join(dir, "resources/configmaps")))
			must(t, os.Rename(outside, filepath.Join(filepath.Dir(outside), "a.jsonl")))
			t.Cleanup(func() { os.Rename(filepath.Join(filepath.Dir(outside), "a.jsonl"), outside) })
		}},
		{"fifo", func(t *testing.T, dir string) {
			mkdir(t, dir, "resources/configmaps")
			if err := syscall.Mkfifo(filepath.Join(dir, entry), 0o644); err != nil {
				t.Skip(err)
			}
		}},
		{"folder", func(t *testing.T, dir string) { mkdir(t, dir, entry) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			must(t, os.WriteFile(filepath.Join(dir, ManifestFile), []byte(manifestWith(entry)), 0o644))
			tc.make(t, dir)
			loc := storage.OpenLocal(dir)
			if _, err := Open(ctx, loc, None, File{Path: entry}); !errors.Is(err, ErrNotRegular) {
				t.Fatalf("Open: %v", err)
			}
			if _, err := Verify(ctx, loc, nil); !errors.Is(err, ErrNotRegular) && (err == nil || !strings.Contains(err.Error(), "not a regular file")) {
				t.Fatalf("Verify: %v", err)
			}
		})
	}
	t.Run("symlinked manifest", func(t *testing.T) {
		dir := t.TempDir()
		elsewhere := filepath.Join(t.TempDir(), ManifestFile)
		must(t, os.WriteFile(elsewhere, []byte(manifestWith(entry)), 0o644))
		must(t, os.Symlink(elsewhere, filepath.Join(dir, ManifestFile)))
		if _, err := ReadManifest(ctx, storage.OpenLocal(dir)); !errors.Is(err, ErrNotRegular) {
			t.Fatalf("ReadManifest: %v", err)
		}
	})
}

// A crafted manifest in a bucket is refused as in a folder: the names it gives never reach
// the object store.
func TestHostileManifestInBucket(t *testing.T) {
	srv := s3test.StartForTest(t)
	must(t, srv.CreateBucket("hostile"))
	loc := openS3(t, srv, "hostile", "b")
	must(t, storage.WriteFile(ctx, loc, ManifestFile, []byte(manifestWith("resources/../../other/manifest.json")), 0o644))
	if _, err := ReadManifest(ctx, loc); !errors.Is(err, safepath.ErrUnsafe) || !strings.HasPrefix(err.Error(), "backup "+loc.String()+": manifest.json: resources[0].files[0]: backup entry") {
		t.Fatalf("ReadManifest: %v", err)
	}
	if _, err := Open(ctx, loc, None, File{Path: "resources/../../other/x.jsonl"}); !errors.Is(err, safepath.ErrUnsafe) {
		t.Fatalf("Open: %v", err)
	}
}

func mkdir(t *testing.T, dir, rel string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(dir, filepath.FromSlash(rel)), 0o755))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
