package s3test

// What versitygw does where S3 implementations differ, pinned because the storage code relies
// on it (or must work around it). Each test says what real S3 does where that differs.

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"hash/crc64"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Keys are listed in the byte order of their UTF-8 encoding, as S3 lists them, although the
// posix backend stores "a/b" as a file in a folder: "a/" sorts between "a." and "a0".
func TestListingOrderAndPages(t *testing.T) {
	s := StartForTest(t)
	c := s.Client()
	mustCreateBucket(t, s, "listed")
	keys := []string{"b", "a/c", "a/b", "A", "a-", "a.", "z", "a0", "é", "~x", "_u"}
	for _, k := range keys {
		mustPut(t, c, "listed", k, []byte(k), nil)
	}
	want := slices.Clone(keys)
	sort.Strings(want)
	if got := listKeys(t, c, "listed", ""); !slices.Equal(got, want) {
		t.Errorf("listed %q, want %q", got, want)
	}

	// MaxKeys pages, with a continuation token while IsTruncated.
	var pages [][]string
	input := &s3.ListObjectsV2Input{Bucket: aws.String("listed"), MaxKeys: aws.Int32(5)}
	for {
		out, err := c.ListObjectsV2(t.Context(), input)
		if err != nil {
			t.Fatal(err)
		}
		var page []string
		for _, o := range out.Contents {
			page = append(page, aws.ToString(o.Key))
		}
		pages = append(pages, page)
		if int(aws.ToInt32(out.KeyCount)) != len(page) {
			t.Errorf("KeyCount %d for %d keys", aws.ToInt32(out.KeyCount), len(page))
		}
		if !aws.ToBool(out.IsTruncated) {
			break
		}
		if out.NextContinuationToken == nil || len(pages) > len(keys) {
			t.Fatalf("page %d is truncated but has no continuation token", len(pages))
		}
		input.ContinuationToken = out.NextContinuationToken
	}
	if sizes := []int{len(pages[0]), len(pages[1]), len(pages[2])}; len(pages) != 3 || !slices.Equal(sizes, []int{5, 5, 1}) ||
		!slices.Equal(slices.Concat(pages...), want) {
		t.Errorf("pages %q, want %q in pages of 5", pages, want)
	}

	out, err := c.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{
		Bucket: aws.String("listed"), Prefix: aws.String("a"), Delimiter: aws.String("/"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var contents, prefixes []string
	for _, o := range out.Contents {
		contents = append(contents, aws.ToString(o.Key))
	}
	for _, p := range out.CommonPrefixes {
		prefixes = append(prefixes, aws.ToString(p.Prefix))
	}
	if !slices.Equal(contents, []string{"a-", "a.", "a0"}) || !slices.Equal(prefixes, []string{"a/"}) {
		t.Errorf("prefix a, delimiter /: %q and prefixes %q", contents, prefixes)
	}
}

// S3 allows an object "p" beside objects "p/q"; a folder-backed server cannot, since "p" would
// be both a file and a folder. The storage code must never write such a pair.
func TestAKeyCannotBeTheFolderOfAnother(t *testing.T) {
	s := StartForTest(t)
	c := s.Client()
	mustCreateBucket(t, s, "nested")
	for _, tc := range []struct{ first, second, want string }{
		{"dir/object", "dir", "ExistingObjectIsDirectory"},
		{"file", "file/object", "ObjectParentIsFile"},
	} {
		mustPut(t, c, "nested", tc.first, []byte("first"), nil)
		_, err := c.PutObject(t.Context(), &s3.PutObjectInput{
			Bucket: aws.String("nested"), Key: aws.String(tc.second), Body: strings.NewReader("second"),
		})
		if got := errorCode(err); got != tc.want {
			t.Errorf("%s, then %s: %q (%v), want %s", tc.first, tc.second, got, err, tc.want)
		}
	}
}

// User metadata keys come back lower-case whatever case they were sent in, as from S3; an
// overwrite replaces the metadata rather than merging it (the sidecar folder keeps no stale
// keys), also after a delete.
func TestMetadata(t *testing.T) {
	s := StartForTest(t)
	c := s.Client()
	mustCreateBucket(t, s, "meta")
	mustPut(t, c, "meta", "object", []byte("1"), map[string]string{"sha256": "abc", "Mixed-Case": "Value", "UPPER": "V"})
	if _, got := mustGet(t, c, "meta", "object"); !mapsEqual(got, map[string]string{"sha256": "abc", "mixed-case": "Value", "upper": "V"}) {
		t.Errorf("metadata %v, want lower-case keys and values as sent", got)
	}
	mustPut(t, c, "meta", "object", []byte("2"), map[string]string{"other": "x"})
	if _, got := mustGet(t, c, "meta", "object"); !mapsEqual(got, map[string]string{"other": "x"}) {
		t.Errorf("after an overwrite: %v, want only the new metadata", got)
	}
	if _, err := c.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String("meta"), Key: aws.String("object")}); err != nil {
		t.Fatal(err)
	}
	mustPut(t, c, "meta", "object", []byte("3"), nil)
	if _, got := mustGet(t, c, "meta", "object"); len(got) != 0 {
		t.Errorf("after delete and put: %v, want none", got)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// CopyObject between two buckets of one server keeps the metadata (directive COPY, the
// default) or replaces it (REPLACE).
func TestCopyObjectAcrossBuckets(t *testing.T) {
	s := StartForTest(t)
	c := s.Client()
	mustCreateBucket(t, s, "source")
	mustCreateBucket(t, s, "target")
	mustPut(t, c, "source", "dir/object", []byte("copied"), map[string]string{"sha256": "abc"})
	for _, tc := range []struct {
		directive types.MetadataDirective
		metadata  map[string]string
		want      map[string]string
	}{
		{"", nil, map[string]string{"sha256": "abc"}},
		{types.MetadataDirectiveReplace, map[string]string{"sha256": "new"}, map[string]string{"sha256": "new"}},
	} {
		_, err := c.CopyObject(t.Context(), &s3.CopyObjectInput{
			Bucket: aws.String("target"), Key: aws.String("copy"), CopySource: aws.String("source/dir/object"),
			MetadataDirective: tc.directive, Metadata: tc.metadata,
		})
		if err != nil {
			t.Fatalf("directive %q: %v", tc.directive, err)
		}
		if body, meta := mustGet(t, c, "target", "copy"); string(body) != "copied" || !mapsEqual(meta, tc.want) {
			t.Errorf("directive %q: %q %v, want %v", tc.directive, body, meta, tc.want)
		}
	}
}

// headerRecorder is an HTTP client that remembers the checksum headers of the last PUT.
type headerRecorder struct {
	base s3.HTTPClient
	mu   sync.Mutex
	last http.Header
}

func (r *headerRecorder) Do(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPut {
		r.mu.Lock()
		r.last = req.Header.Clone()
		r.mu.Unlock()
	}
	return r.base.Do(req)
}

// sent names how the last PUT carried its checksum: "header x-amz-checksum-crc32", "trailer
// x-amz-checksum-crc32", or "none".
func (r *headerRecorder) sent() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if trailer := r.last.Get("X-Amz-Trailer"); trailer != "" {
		return "trailer " + trailer
	}
	for name := range r.last {
		if name = strings.ToLower(name); strings.HasPrefix(name, "x-amz-checksum-") {
			return "header " + name
		}
	}
	return "none"
}

// Request checksums as the SDK sends them by default (CRC32; over HTTPS in an aws-chunked
// trailer, over HTTP in a header, since without TLS the SDK reads the body twice instead), or
// SHA256 when asked: versitygw accepts both forms, checks them, stores the checksum and returns
// it. Sent none, it computes a CRC64NVME, as S3 does. Over HTTP the SDK refuses a body it cannot
// rewind, before sending anything.
func TestRequestChecksums(t *testing.T) {
	plain, secure := StartForTest(t), StartForTest(t, Options{TLS: true})
	for _, s := range []*Server{plain, secure} {
		mustCreateBucket(t, s, "sums")
	}
	body := []byte("checksummed")
	crc32Sum := binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(body))
	// CRC-64/NVME: Go's crc64 with the polynomial's reversed form (its init and final xor are
	// all ones, as Go's).
	crc64Sum := binary.BigEndian.AppendUint64(nil, crc64.Checksum(body, crc64.MakeTable(0x9a6c9329ac4bc9b5)))
	sha256Sum := sha256.Sum256(body)
	wrongSHA256 := sha256.Sum256([]byte("something else"))
	b64 := base64.StdEncoding.EncodeToString

	for _, tc := range []struct {
		name       string
		server     *Server
		whenNeeded bool // RequestChecksumCalculation when_required: no checksum unless asked
		algorithm  types.ChecksumAlgorithm
		sha256     string // an explicit x-amz-checksum-sha256
		unseekable bool
		wantSent   string
		wantErr    string // an S3 error code, or a part of a client-side error
		wantStored types.ChecksumAlgorithm
		want       string // its value
	}{
		{name: "http, default", server: plain,
			wantSent: "header x-amz-checksum-crc32", wantStored: types.ChecksumAlgorithmCrc32, want: b64(crc32Sum)},
		{name: "https, default, stream", server: secure, unseekable: true,
			wantSent: "trailer x-amz-checksum-crc32", wantStored: types.ChecksumAlgorithmCrc32, want: b64(crc32Sum)},
		{name: "http, SHA256", server: plain, algorithm: types.ChecksumAlgorithmSha256,
			wantSent: "header x-amz-checksum-sha256", wantStored: types.ChecksumAlgorithmSha256, want: b64(sha256Sum[:])},
		{name: "https, SHA256, stream", server: secure, algorithm: types.ChecksumAlgorithmSha256, unseekable: true,
			wantSent: "trailer x-amz-checksum-sha256", wantStored: types.ChecksumAlgorithmSha256, want: b64(sha256Sum[:])},
		{name: "http, none sent", server: plain, whenNeeded: true,
			wantSent: "none", wantStored: types.ChecksumAlgorithmCrc64nvme, want: b64(crc64Sum)},
		{name: "http, wrong SHA256", server: plain, sha256: b64(wrongSHA256[:]), wantErr: "BadDigest"},
		{name: "http, stream", server: plain, unseekable: true, wantErr: "unseekable stream is not supported without TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recorder := &headerRecorder{base: tc.server.http}
			c := tc.server.Client(noRetries, func(o *s3.Options) {
				o.HTTPClient = recorder
				if tc.whenNeeded {
					o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
				}
			})
			var r io.Reader = bytes.NewReader(body)
			if tc.unseekable {
				r = io.MultiReader(r)
			}
			key := strings.ReplaceAll(tc.name, " ", "")
			input := &s3.PutObjectInput{
				Bucket: aws.String("sums"), Key: aws.String(key), Body: r,
				ContentLength: aws.Int64(int64(len(body))), ChecksumAlgorithm: tc.algorithm,
			}
			if tc.sha256 != "" {
				input.ChecksumSHA256 = aws.String(tc.sha256)
			}
			_, err := c.PutObject(t.Context(), input)
			if tc.wantErr != "" {
				if got := errorCode(err); !strings.Contains(got, tc.wantErr) {
					t.Errorf("got %q (%v), want %s", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := recorder.sent(); got != tc.wantSent {
				t.Errorf("sent %s, want %s", got, tc.wantSent)
			}
			head, err := c.HeadObject(t.Context(), &s3.HeadObjectInput{
				Bucket: aws.String("sums"), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled,
			})
			if err != nil {
				t.Fatal(err)
			}
			stored := map[types.ChecksumAlgorithm]*string{
				types.ChecksumAlgorithmCrc32:     head.ChecksumCRC32,
				types.ChecksumAlgorithmSha256:    head.ChecksumSHA256,
				types.ChecksumAlgorithmCrc64nvme: head.ChecksumCRC64NVME,
			}
			if got := aws.ToString(stored[tc.wantStored]); got != tc.want || head.ChecksumType != types.ChecksumTypeFullObject {
				t.Errorf("stored %s %q (%s), want %q", tc.wantStored, got, head.ChecksumType, tc.want)
			}
		})
	}
}

// CompleteMultipartUpload names each part's checksum exactly when CreateMultipartUpload named
// an algorithm: versitygw keeps no part checksum otherwise, although UploadPart returns the one
// the SDK sent, and refuses a part that names one (InvalidPart); with an algorithm, a part
// without its checksum is refused (InvalidRequest). The transfer manager always names CRC32.
func TestMultipartPartChecksums(t *testing.T) {
	s := StartForTest(t)
	c := s.Client()
	mustCreateBucket(t, s, "parts")
	for _, tc := range []struct {
		name       string
		algorithm  types.ChecksumAlgorithm
		partChecks bool
		want       string
	}{
		{"no algorithm, ETags only", "", false, ""},
		{"no algorithm, part checksums", "", true, "InvalidPart"},
		{"CRC32, part checksums", types.ChecksumAlgorithmCrc32, true, ""},
		{"CRC32, ETags only", types.ChecksumAlgorithmCrc32, false, "InvalidRequest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := aws.String(strings.ReplaceAll(tc.name, " ", ""))
			upload, err := c.CreateMultipartUpload(t.Context(), &s3.CreateMultipartUploadInput{
				Bucket: aws.String("parts"), Key: key, ChecksumAlgorithm: tc.algorithm,
			})
			if err != nil {
				t.Fatal(err)
			}
			part, err := c.UploadPart(t.Context(), &s3.UploadPartInput{
				Bucket: aws.String("parts"), Key: key, UploadId: upload.UploadId,
				PartNumber: aws.Int32(1), Body: strings.NewReader("only part"), ChecksumAlgorithm: tc.algorithm,
			})
			if err != nil {
				t.Fatal(err)
			}
			completed := types.CompletedPart{PartNumber: aws.Int32(1), ETag: part.ETag}
			if tc.partChecks {
				completed.ChecksumCRC32 = part.ChecksumCRC32
			}
			_, err = c.CompleteMultipartUpload(t.Context(), &s3.CompleteMultipartUploadInput{
				Bucket: aws.String("parts"), Key: key, UploadId: upload.UploadId,
				MultipartUpload: &types.CompletedMultipartUpload{Parts: []types.CompletedPart{completed}},
			})
			if got := errorCode(err); got != tc.want {
				t.Errorf("got %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}

// An aborted multipart upload is gone: not listed, no object, its id refused, and no file of it
// left in the bucket's folder. Before the abort, the upload is listed but its object is not.
func TestAbortedMultipartUpload(t *testing.T) {
	s := StartForTest(t)
	c := s.Client()
	ctx := t.Context()
	mustCreateBucket(t, s, "aborted")
	bucket, key := aws.String("aborted"), aws.String("dir/object")
	upload, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: bucket, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: bucket, Key: key, UploadId: upload.UploadId, PartNumber: aws.Int32(1), Body: strings.NewReader("part"),
	}); err != nil {
		t.Fatal(err)
	}
	uploads := func() []string {
		t.Helper()
		out, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: bucket})
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, u := range out.Uploads {
			keys = append(keys, aws.ToString(u.Key))
		}
		return keys
	}
	if got := uploads(); !slices.Equal(got, []string{"dir/object"}) {
		t.Errorf("uploads in progress: %q", got)
	}
	if got := listKeys(t, c, "aborted", ""); len(got) != 0 {
		t.Errorf("objects while the upload is in progress: %q, want none", got)
	}

	if _, err := c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: bucket, Key: key, UploadId: upload.UploadId}); err != nil {
		t.Fatal(err)
	}
	if got := uploads(); len(got) != 0 {
		t.Errorf("uploads after the abort: %q, want none", got)
	}
	_, err = c.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: bucket, Key: key, UploadId: upload.UploadId, PartNumber: aws.Int32(2), Body: strings.NewReader("late"),
	})
	if got := errorCode(err); got != "NoSuchUpload" {
		t.Errorf("a part after the abort: %q (%v), want NoSuchUpload", got, err)
	}
	_, err = c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: bucket, Key: key, UploadId: upload.UploadId})
	if got := errorCode(err); got != "NoSuchUpload" {
		t.Errorf("a second abort: %q (%v), want NoSuchUpload", got, err)
	}
	var notFound *types.NotFound
	if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: bucket, Key: key}); !errors.As(err, &notFound) {
		t.Errorf("the object after the abort: %v, want NotFound", err)
	}
	if files := filesUnder(t, filepath.Join(s.Dir, "aborted")); len(files) != 0 {
		t.Errorf("left in the bucket's folder: %q", files)
	}
}

// filesUnder returns the files below dir (not folders), relative to it.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			files = append(files, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// A server killed while an object streams in shows no part of it: versitygw writes the body to
// a temporary file and moves it in place only once complete. Where the partial body stays
// depends: the first upload into a bucket creates BUCKET/.sgwtmp and writes a named file there,
// which the crash leaves behind (hidden from listings); later ones write an unnamed O_TMPFILE
// file there, which vanishes with the process (on file systems that support O_TMPFILE).
func TestKilledMidUploadLeavesNoObject(t *testing.T) {
	s := StartForTest(t, Options{TLS: true}) // a body that streams as it is written needs TLS
	for _, tc := range []struct {
		name   string
		before bool // an upload into the bucket before the one cut off
	}{{"first upload into the bucket", false}, {"later upload", true}} {
		t.Run(tc.name, func(t *testing.T) {
			bucket := strings.ReplaceAll(tc.name, " ", "-")
			mustCreateBucket(t, s, bucket)
			var want []string
			if tc.before {
				mustPut(t, s.Client(), bucket, "before", []byte("x"), nil)
				want = []string{"before"}
			}
			killMidUpload(t, s, bucket, "partial")
			if err := s.Restart(); err != nil {
				t.Fatal(err)
			}
			var notFound *types.NotFound
			_, err := s.Client().HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("partial")})
			if !errors.As(err, &notFound) {
				t.Errorf("the object after the crash: %v, want NotFound", err)
			}
			if keys := listKeys(t, s.Client(), bucket, ""); !slices.Equal(keys, want) {
				t.Errorf("listed after the crash: %q, want %q", keys, want)
			}
			for _, f := range filesUnder(t, filepath.Join(s.Dir, bucket)) {
				switch {
				case slices.Contains(want, f):
				case strings.HasPrefix(f, ".sgwtmp"+string(filepath.Separator)):
					t.Logf("left in the bucket's folder: %s", f)
				default:
					t.Errorf("left in the bucket's folder: %s", f)
				}
			}
		})
	}
}

// killMidUpload starts an upload of 8 MiB to bucket/key, kills the server once 1 MiB of it has
// been sent, and waits for the upload to fail.
func killMidUpload(t *testing.T, s *Server, bucket, key string) {
	t.Helper()
	r, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := s.Client(noRetries).PutObject(t.Context(), &s3.PutObjectInput{
			Bucket: aws.String(bucket), Key: aws.String(key), Body: r, ContentLength: aws.Int64(8 << 20),
		})
		done <- err
	}()
	if _, err := w.Write(make([]byte, 1<<20)); err != nil { // returns once the client has read it
		t.Fatal(err)
	}
	s.Kill()
	w.CloseWithError(errors.New("the test stopped writing"))
	if err := <-done; err == nil {
		t.Fatal("the upload succeeded although the server was killed")
	}
}
