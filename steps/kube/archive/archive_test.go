package archive

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"planrun.dev/planrun/internal/s3test"
	"planrun.dev/planrun/steps/storage"
)

// backend is where a test backup lives: a local folder or a prefix of a bucket on a real S3
// server, with what a test needs to tamper with it from outside planrun.
type backend struct {
	name string
	open func(t *testing.T) (loc storage.Location, files fakeDisk)
}

// fakeDisk changes a backup's files behind planrun's back.
type fakeDisk struct {
	read   func(t *testing.T, rel string) []byte
	write  func(t *testing.T, rel string, data []byte)
	remove func(t *testing.T, rel string)
}

var backends = []backend{
	{"local", func(t *testing.T) (storage.Location, fakeDisk) {
		dir := filepath.Join(t.TempDir(), "backup")
		return storage.OpenLocal(dir), fakeDisk{
			read: func(t *testing.T, rel string) []byte {
				b, err := os.ReadFile(filepath.Join(dir, rel))
				must(t, err)
				return b
			},
			write: func(t *testing.T, rel string, data []byte) {
				must(t, os.WriteFile(filepath.Join(dir, rel), data, 0o644))
			},
			remove: func(t *testing.T, rel string) { must(t, os.Remove(filepath.Join(dir, rel))) },
		}
	}},
	{"s3", func(t *testing.T) (storage.Location, fakeDisk) {
		srv := s3test.StartForTest(t)
		must(t, srv.CreateBucket("backups"))
		loc := openS3(t, srv, "backups", "cluster/a")
		c := srv.Client()
		key := func(rel string) *string { return aws.String("cluster/a/" + rel) }
		return loc, fakeDisk{
			read: func(t *testing.T, rel string) []byte {
				out, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String("backups"), Key: key(rel)})
				must(t, err)
				defer out.Body.Close()
				b, err := io.ReadAll(out.Body)
				must(t, err)
				return b
			},
			// Overwritten as any S3 client would: without planrun's metadata.
			write: func(t *testing.T, rel string, data []byte) {
				_, err := c.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String("backups"), Key: key(rel), Body: bytes.NewReader(data)})
				must(t, err)
			},
			remove: func(t *testing.T, rel string) {
				_, err := c.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String("backups"), Key: key(rel)})
				must(t, err)
			},
		}
	}},
}

// openS3 opens prefix of bucket on srv with its keys given as a Secret's data would give them.
func openS3(t *testing.T, srv *s3test.Server, bucket, prefix string) storage.Location {
	t.Helper()
	creds := storage.NewCredentials("test keys", map[string][]byte{"accessKeyID": []byte(srv.AccessKey), "secretAccessKey": []byte(srv.SecretKey)})
	loc, err := storage.Open(context.Background(), srv.URL(bucket, prefix), creds)
	must(t, err)
	t.Cleanup(func() { loc.Close() })
	return loc
}

// writeBackup writes three files of three objects each, and the manifest.
func writeBackup(t *testing.T, loc storage.Location, c Compression) *Manifest {
	t.Helper()
	ctx := context.Background()
	m := &Manifest{Compression: c}
	for _, tc := range []struct{ group, resource, ns string }{{"", "secrets", "a"}, {"", "configmaps", "a"}, {"apps", "deployments", ""}} {
		w, err := Create(ctx, loc, c, tc.group, tc.resource, tc.ns)
		must(t, err)
		for i := 0; i < 3; i++ {
			must(t, w.Write([]byte(fmt.Sprintf(`{"kind":"X","i":%d,"pad":%q}`, i, strings.Repeat("z", 300)))))
		}
		f, err := w.Close(ctx)
		must(t, err)
		m.Resources = append(m.Resources, Resource{Group: tc.group, Resource: tc.resource, Count: f.Count, Files: []File{f}})
		m.Objects += f.Count
		m.Bytes += f.Bytes
	}
	must(t, WriteManifest(ctx, loc, m))
	return m
}

// readAll reads the objects of a file, as a restore does.
func readAll(loc storage.Location, c Compression, f File) ([]string, error) {
	r, err := Open(context.Background(), loc, c, f)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []string
	for {
		line, err := r.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, string(line))
	}
}

// TestWriteVerifyRead writes a backup to a folder and to a bucket, uncompressed and compressed,
// verifies it, reads it back, then damages and removes files: verify and every reader name them.
func TestWriteVerifyRead(t *testing.T) {
	ctx := context.Background()
	for _, be := range backends {
		for _, c := range []Compression{None, Gzip, Zstd} {
			t.Run(be.name+"/"+c.String(), func(t *testing.T) {
				loc, disk := be.open(t)
				m := writeBackup(t, loc, c)

				got, _, err := ReadManifestFile(ctx, loc)
				must(t, err)
				wantVersion := Version
				if c != None {
					wantVersion = VersionCompressed
				}
				if got.Version != wantVersion || got.Compression != c || got.Objects != 9 {
					t.Fatalf("manifest version %d compression %q objects %d", got.Version, got.Compression, got.Objects)
				}
				if c == None && strings.Contains(string(disk.read(t, ManifestFile)), "compression") {
					t.Fatalf("an uncompressed manifest names a compression: an older reader must read it unchanged")
				}
				for _, r := range got.Resources {
					f := r.Files[0]
					if !strings.HasSuffix(f.Path, ".jsonl"+c.Suffix()) {
						t.Errorf("%s: want suffix .jsonl%s", f.Path, c.Suffix())
					}
					if stored := disk.read(t, f.Path); int64(len(stored)) != f.Bytes || (c != None) == bytes.HasPrefix(stored, []byte(`{"kind"`)) {
						t.Errorf("%s: %d stored bytes (manifest %d), compressed %v", f.Path, len(stored), f.Bytes, c != None)
					}
					e, err := loc.Stat(ctx, f.Path)
					must(t, err)
					wantMode := fs.FileMode(0o644)
					if r.Resource == "secrets" {
						wantMode = 0o600
					}
					if e.Mode != wantMode {
						t.Errorf("%s: mode %v, want %v", f.Path, e.Mode, wantMode)
					}
					objs, err := readAll(loc, c, f)
					if err != nil || len(objs) != 3 || !strings.HasPrefix(objs[2], `{"kind":"X","i":2,`) {
						t.Fatalf("%s: read %d objects, %v", f.Path, len(objs), err)
					}
				}
				res, err := Verify(ctx, loc, nil)
				if err != nil || res.Objects != 9 || res.Files != 3 || res.Bytes != m.Bytes {
					t.Fatalf("verify: %+v %v", res, err)
				}

				// Damage one file, remove another: verify names both, reading the damaged one
				// fails at its end (whatever it returned before), naming it.
				cm, secrets := m.Resources[1].Files[0], m.Resources[0].Files[0]
				b := disk.read(t, cm.Path)
				b[len(b)/2] ^= 1
				disk.write(t, cm.Path, b)
				disk.remove(t, secrets.Path)
				_, err = Verify(ctx, loc, nil)
				var ve *VerifyError
				if !errors.As(err, &ve) || !errors.Is(err, ErrDamaged) || len(ve.Problems) != 2 || strings.Contains(err.Error(), "\n") ||
					!strings.HasPrefix(ve.Problems[0], secrets.Path+": missing") || !strings.HasPrefix(ve.Problems[1], cm.Path+": ") ||
					!strings.HasPrefix(err.Error(), "backup "+loc.String()+" is damaged (2 problems): ") {
					t.Fatalf("verify of a damaged backup: %v", err)
				}
				_, err = readAll(loc, c, cm)
				var de *DamagedError
				if !errors.As(err, &de) || de.Path != cm.Path || !strings.HasPrefix(err.Error(), "backup "+loc.String()+": "+cm.Path+": ") || strings.Contains(err.Error(), "\n") {
					t.Fatalf("reading a damaged file: %v", err)
				}
				if _, err := readAll(loc, c, secrets); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("reading a missing file: %v", err)
				}

				// A file that grew past its manifest size is not read to its end.
				disk.write(t, cm.Path, append(disk.read(t, m.Resources[2].Files[0].Path), make([]byte, 1<<20)...))
				if _, err := readAll(loc, c, cm); !errors.Is(err, ErrDamaged) {
					t.Fatalf("reading a grown file: %v", err)
				}
			})
		}
	}
}

// TestManifestVersions: an uncompressed backup stays version 1 (older planruns read it); a
// compressed one is version 2, which they refuse rather than read compressed bytes as JSON.
func TestManifestVersions(t *testing.T) {
	for _, tc := range []struct {
		json string
		want string // "" accepted
	}{
		{`{"version": 1, "resources": []}`, ""},
		{`{"version": 2, "compression": "gzip"}`, ""},
		{`{"version": 2, "compression": "zstd"}`, ""},
		{`{"version": 1, "compression": "gzip"}`, `backup format version 1 has no compression, this one says "gzip"`},
		{`{"version": 2}`, `compression "none" is not supported (want gzip or zstd)`},
		{`{"version": 2, "compression": "lz4"}`, `compression "lz4" is not supported`},
		{`{"version": 3, "compression": "gzip"}`, `backup format version 3 is not supported (want 1 or 2)`},
	} {
		_, err := ParseManifest([]byte(tc.json))
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.json, err, tc.want)
		}
	}
}

func TestIncompleteBackup(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			loc, _ := be.open(t)
			_, err := ReadManifest(context.Background(), loc)
			if !errors.Is(err, ErrIncomplete) || err.Error() != loc.String()+" is not a complete backup: no manifest.json" {
				t.Fatalf("got %v", err)
			}
		})
	}
}

// TestLargeFiles: a file larger than what is sent whole to a bucket is streamed from the point it
// outgrows the buffer, and reads back and verifies like a small one; a file sent whole carries
// its sha256 in the object's metadata.
func TestLargeFiles(t *testing.T) {
	ctx := context.Background()
	for _, be := range backends {
		for _, c := range []Compression{None} { // the stored bytes reach the buffer after the compressor, if any
			t.Run(be.name+"/"+c.String(), func(t *testing.T) {
				loc, _ := be.open(t)
				m := &Manifest{Compression: c}
				pad := strings.Repeat("0123456789abcdef", 64)
				for _, n := range []int{10, 12_000} {
					w, err := Create(ctx, loc, c, "", "configmaps", fmt.Sprintf("n%d", n))
					must(t, err)
					for i := 0; i < n; i++ {
						must(t, w.Write([]byte(fmt.Sprintf(`{"i":%d,"pad":"%s","h":"%x"}`, i, pad, sha256sum(i)))))
					}
					f, err := w.Close(ctx)
					must(t, err)
					if n > 10 && f.Bytes <= wholeLimit {
						t.Fatalf("%d objects made only %d bytes", n, f.Bytes)
					}
					m.Resources = append(m.Resources, Resource{Resource: "configmaps", Count: f.Count, Files: []File{f}})
					m.Objects += f.Count
					m.Bytes += f.Bytes
					objs, err := readAll(loc, c, f)
					if err != nil || len(objs) != n {
						t.Fatalf("read back %d of %d objects: %v", len(objs), n, err)
					}
				}
				must(t, WriteManifest(ctx, loc, m))
				if _, err := Verify(ctx, loc, nil); err != nil {
					t.Fatal(err)
				}
				if be.name == "s3" {
					small, err := loc.Stat(ctx, m.Resources[0].Files[0].Path)
					must(t, err)
					if small.SHA256 != m.Resources[0].Files[0].SHA256 {
						t.Errorf("a file sent whole has sha256 %q in its metadata, want %s", small.SHA256, m.Resources[0].Files[0].SHA256)
					}
				}
			})
		}
	}
}

func sha256sum(i int) []byte {
	s := sha256.Sum256([]byte(fmt.Sprint(i)))
	return s[:]
}

// TestMetadataSumChecked: an object whose recorded sha256 is not the manifest's (another file of
// the backup copied over it, metadata and all) is refused when it is opened, before a restore
// reads a single object from it.
func TestMetadataSumChecked(t *testing.T) {
	srv := s3test.StartForTest(t)
	must(t, srv.CreateBucket("meta"))
	loc := openS3(t, srv, "meta", "b")
	m := writeBackup(t, loc, None)
	w, err := Create(context.Background(), loc, None, "", "configmaps", "other")
	must(t, err)
	must(t, w.Write([]byte(`{"kind":"Other"}`)))
	from, err := w.Close(context.Background())
	must(t, err)
	to := m.Resources[2].Files[0]
	_, err = srv.Client().CopyObject(context.Background(), &s3.CopyObjectInput{Bucket: aws.String("meta"), Key: aws.String("b/" + to.Path), CopySource: aws.String("meta/b/" + from.Path)})
	must(t, err)
	r, err := Open(context.Background(), loc, None, to)
	want := fmt.Sprintf("backup %s: %s: sha256 %s (in its metadata), the manifest says %s", loc, to.Path, from.SHA256, to.SHA256)
	if !errors.Is(err, ErrDamaged) || err.Error() != want {
		if r != nil {
			r.Close()
		}
		t.Fatalf("Open: %v\nwant %s", err, want)
	}
}
