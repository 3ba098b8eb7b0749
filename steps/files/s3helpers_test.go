package files

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"planrun.dev/planrun/internal/s3test"
)

// setEnv points the AWS SDK's default chain at srv (its keys and region) for the test.
func setEnv(t testing.TB, srv *s3test.Server) {
	t.Helper()
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// bucket creates a bucket on srv or fails the test.
func bucket(t testing.TB, srv *s3test.Server, name string) {
	t.Helper()
	if err := srv.CreateBucket(name); err != nil {
		t.Fatal(err)
	}
}

// put stores objects (key → content) with plain PUTs: no planrun metadata, as the objects of
// etcd-backup-restore.
func put(t testing.TB, c *s3.Client, bucketName string, objects map[string][]byte) {
	t.Helper()
	for k, b := range objects {
		if _, err := c.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(bucketName), Key: aws.String(k), Body: bytes.NewReader(b)}); err != nil {
			t.Fatalf("putting %s/%s: %v", bucketName, k, err)
		}
	}
}

// object is what a bucket holds under a key.
type object struct {
	body     []byte
	metadata map[string]string
}

// objects reads every object of bucket under prefix (keys relative to it), with its metadata.
func objects(t testing.TB, c *s3.Client, bucketName, prefix string) map[string]object {
	t.Helper()
	out := map[string]object{}
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucketName), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatalf("listing %s/%s: %v", bucketName, prefix, err)
		}
		for _, o := range page.Contents {
			g, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(bucketName), Key: o.Key})
			if err != nil {
				t.Fatalf("getting %s: %v", aws.ToString(o.Key), err)
			}
			b, err := io.ReadAll(g.Body)
			g.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			out[strings.TrimPrefix(aws.ToString(o.Key), prefix)] = object{body: b, metadata: g.Metadata}
		}
	}
	return out
}

// localFiles reads every file under dir (paths relative, slash-separated).
func localFiles(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// sameObjects fails unless got holds exactly want's keys with the same bytes, and every object
// records its sha256 when withSums is set.
func sameObjects(t testing.TB, got map[string]object, want map[string][]byte, withSums bool) {
	t.Helper()
	for k, b := range want {
		o, ok := got[k]
		if !ok {
			t.Errorf("%s missing in the destination", k)
			continue
		}
		if !bytes.Equal(o.body, b) {
			t.Errorf("%s: %d bytes differ from the source's %d", k, len(o.body), len(b))
		}
		if withSums && len(b) <= maxSmall && o.metadata["sha256"] != sha(b) {
			t.Errorf("%s: sha256 metadata %q, want %s", k, o.metadata["sha256"], sha(b))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s in the destination", k)
		}
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// mixed is a small bucket's worth of objects: nested keys, an empty one, one of a few bytes, one
// larger than maxSmall (streamed) and one larger than S3's multipart threshold (uploaded in
// parts).
func mixed() map[string][]byte {
	pattern := func(n, seed int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + seed)
		}
		return b
	}
	return map[string][]byte{
		"full/Full-000-100-1700000000": pattern(maxSmall+1234, 1),
		"full/Full-100-200-1700000100": pattern(17<<20, 2),
		"incr/Incr-100-110-1700000010": pattern(4096, 3),
		"incr/Incr-110-120-1700000020": pattern(12345, 4),
		"incr/Incr-120-130-1700000030": []byte("delta"),
		"empty":                        {},
		"a/b/c/deep.json":              []byte(`{"deep":true}`),
		fmt.Sprintf("k%03d", 7):        pattern(1<<20, 5),
	}
}
