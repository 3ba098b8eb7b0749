package files

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/s3test"
)

// Copies between every kind of location, through real S3 servers: a local folder to a bucket
// and back (file modes kept in the objects' metadata), a bucket to a bucket of another server,
// and within one server (server-side). Credentials come from the SDK's default chain (the
// environment); both servers take the same keys.
func TestCopyBetweenLocations(t *testing.T) {
	a := s3test.StartForTest(t)
	b := s3test.StartForTest(t, s3test.Options{AccessKey: a.AccessKey, SecretKey: a.SecretKey})
	setEnv(t, a)
	for _, name := range []string{"src", "dst"} {
		bucket(t, a, name)
		bucket(t, b, name)
	}
	tree := source(t)
	want := localFiles(t, tree)
	objs := mixed()
	put(t, a.Client(), "src", objs)

	t.Run("local to s3", func(t *testing.T) {
		out := run(t, tree, a.URL("dst", "backup"), "", false)
		counts(t, out, 7, 7, 0)
		got := objects(t, a.Client(), "dst", "backup/")
		sameObjects(t, got, want, true)
		if m := got["resources/v1/secrets/ns1.json"].metadata["mode"]; m != "0600" {
			t.Errorf("mode metadata of the secret %q, want 0600", m)
		}
		out = run(t, tree, a.URL("dst", "backup"), "", false)
		counts(t, out, 7, 0, 7)
	})
	t.Run("s3 to local", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "restored")
		out := run(t, a.URL("dst", "backup"), dst, "", false)
		counts(t, out, 7, 7, 0)
		got := localFiles(t, dst)
		for k, b := range want {
			if !bytes.Equal(got[k], b) {
				t.Errorf("%s differs", k)
			}
			srcInfo, _ := os.Stat(filepath.Join(tree, filepath.FromSlash(k)))
			dstInfo, err := os.Stat(filepath.Join(dst, filepath.FromSlash(k)))
			if err != nil || dstInfo.Mode().Perm() != srcInfo.Mode().Perm() {
				t.Errorf("%s: mode %v (%v), want %v", k, dstInfo.Mode().Perm(), err, srcInfo.Mode().Perm())
			}
		}
		if len(got) != len(want) {
			t.Errorf("%d files restored, want %d", len(got), len(want))
		}
		out = run(t, a.URL("dst", "backup"), dst, "", false)
		counts(t, out, 7, 0, 7)
	})
	t.Run("across endpoints", func(t *testing.T) {
		out := run(t, a.URL("src", ""), b.URL("dst", "entry"), "", false)
		counts(t, out, int64(len(objs)), int64(len(objs)), 0)
		if n := plantest.Num(t, out, "serverSide"); n != 0 {
			t.Errorf("serverSide %d between two servers", n)
		}
		sameObjects(t, objects(t, b.Client(), "dst", "entry/"), objs, true)
		out = run(t, a.URL("src", ""), b.URL("dst", "entry"), "", false)
		counts(t, out, int64(len(objs)), 0, int64(len(objs)))

		// A source object changed (same size), a destination object cut short and one
		// removed: those three are copied again, the others skipped.
		changed := bytes.Clone(objs["incr/Incr-100-110-1700000010"])
		changed[0] ^= 0xff
		put(t, a.Client(), "src", map[string][]byte{"incr/Incr-100-110-1700000010": changed})
		put(t, b.Client(), "dst", map[string][]byte{"entry/k007": []byte("short")})
		if _, err := b.Client().DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String("dst"), Key: aws.String("entry/empty")}); err != nil {
			t.Fatal(err)
		}
		out = run(t, a.URL("src", ""), b.URL("dst", "entry"), "", false)
		counts(t, out, int64(len(objs)), 3, int64(len(objs))-3)
		objs["incr/Incr-100-110-1700000010"] = changed
		sameObjects(t, objects(t, b.Client(), "dst", "entry/"), objs, true)
	})
	t.Run("single object", func(t *testing.T) {
		// An etcd snapshot: one object, copied into a folder and a bucket under its own name.
		key := "full/Full-000-100-1700000000"
		dst := t.TempDir()
		counts(t, run(t, a.URL("src", key), dst, "", false), 1, 1, 0)
		if got, err := os.ReadFile(filepath.Join(dst, "Full-000-100-1700000000")); err != nil || !bytes.Equal(got, objs[key]) {
			t.Errorf("snapshot in the folder: %d bytes, %v", len(got), err)
		}
		counts(t, run(t, a.URL("src", key), b.URL("dst", "snapshots"), "", false), 1, 1, 0)
		counts(t, run(t, a.URL("src", key), b.URL("dst", "snapshots"), "", false), 1, 0, 1)
		if got := objects(t, b.Client(), "dst", "snapshots/"); !bytes.Equal(got["Full-000-100-1700000000"].body, objs[key]) {
			t.Errorf("snapshot in the bucket: %v", got)
		}
	})
	for _, tc := range []struct{ name, bucket, prefix string }{
		{"server-side to another bucket", "dst", "copy"},
		{"server-side within the bucket", "src", "copy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out engine.Outputs
			log := requests(t, a, func() { out = run(t, a.URL("src", "full"), a.URL(tc.bucket, tc.prefix), "", false) })
			counts(t, out, 2, 2, 0)
			// No byte through planrun: the server was asked for copies, never for the
			// source's content or an upload.
			if n := strings.Count(log, "x-id=CopyObject"); n != 2 {
				t.Errorf("%d CopyObject requests, want 2:\n%s", n, log)
			}
			for _, op := range []string{"GET | /src/full/", "x-id=PutObject", "x-id=UploadPart"} {
				if strings.Contains(log, op) {
					t.Errorf("the server saw %q during a server-side copy:\n%s", op, log)
				}
			}
			if n := plantest.Num(t, out, "serverSide"); n != 2 {
				t.Errorf("serverSide %d, want 2", n)
			}
			got := objects(t, a.Client(), tc.bucket, tc.prefix+"/")
			for k, o := range got {
				if !bytes.Equal(o.body, objs["full/"+k]) {
					t.Errorf("%s differs", k)
				}
			}
			if len(got) != 2 {
				t.Errorf("%d objects copied, want 2", len(got))
			}
		})
	}
}
