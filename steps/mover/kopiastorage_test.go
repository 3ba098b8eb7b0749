package mover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kopia/kopia/repo/blob"

	"planrun.dev/planrun/internal/s3test"
	"planrun.dev/planrun/steps/storage"
)

// sliceBytes is a blob.Bytes of one slice (kopia's gather package is internal).
type sliceBytes []byte

func (b sliceBytes) WriteTo(w io.Writer) (int64, error) {
	n, err := w.Write(b)
	return int64(n), err
}
func (b sliceBytes) Length() int { return len(b) }
func (b sliceBytes) Reader() io.ReadSeekCloser {
	return struct {
		io.ReadSeeker
		io.Closer
	}{bytes.NewReader(b), io.NopCloser(nil)}
}

func s3Credentials(s *s3test.Server) *storage.Credentials {
	return storage.NewCredentials("Secret test/s3", map[string][]byte{"accessKeyID": []byte(s.AccessKey), "secretAccessKey": []byte(s.SecretKey)})
}

// openS3 opens prefix of bucket on s (the bucket is created when missing).
func openS3(t testing.TB, s *s3test.Server, bucket, prefix string) storage.Location {
	t.Helper()
	_ = s.CreateBucket(bucket)
	l, err := storage.Open(context.Background(), s.URL(bucket, prefix), s3Credentials(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

type testLocation struct {
	name string
	loc  storage.Location
	s3   *s3test.Server // nil for a local folder
}

// testLocations are a local folder and a prefix of a bucket on a real S3 server (versitygw).
func testLocations(t *testing.T) []testLocation {
	s := s3test.StartForTest(t)
	return []testLocation{
		{name: "local", loc: storage.OpenLocal(filepath.Join(t.TempDir(), "repo"))},
		{name: "s3", loc: openS3(t, s, "backups", "cluster/volumes"), s3: s},
	}
}

func getBlob(ctx context.Context, st blob.Storage, id blob.ID, offset, length int64) ([]byte, error) {
	var b outputBuffer
	err := st.GetBlob(ctx, id, offset, length, &b)
	if err != nil && b.Len() != 0 {
		return nil, fmt.Errorf("GetBlob failed (%v) and left %d bytes in the output", err, b.Len())
	}
	return b.Bytes(), err
}

func listIDs(t *testing.T, st blob.Storage, prefix blob.ID) []string {
	t.Helper()
	var ids []string
	if err := st.ListBlobs(context.Background(), prefix, func(m blob.Metadata) error {
		ids = append(ids, string(m.BlobID))
		return nil
	}); err != nil {
		t.Fatalf("ListBlobs(%q): %v", prefix, err)
	}
	slices.Sort(ids)
	return ids
}

// The semantics kopia's own storage tests check (internal/blobtesting: VerifyStorage,
// AssertGetBlob...), on a local folder and a bucket.
func TestBlobStorage(t *testing.T) {
	ctx := context.Background()
	blobs := []struct {
		id   blob.ID
		data []byte
	}{
		{"abcdbbf4f0507d054ed5a80a5b65086f602b", []byte{}},
		{"zxce0e35630770c54668a8cfb4e414c6bf8f", []byte{1}},
		{"abff4585856ebf0748fd989e1dd623a8963d", bytes.Repeat([]byte{1, 2, 3}, 1000)},
		{"abgc3dca496d510f492c858a2df1eb824e62", bytes.Repeat([]byte{4, 5}, 10000)},
		{"kopia.repository", bytes.Repeat([]byte{2}, 100)},
		{"xn0_8d3f", []byte("index of epoch 0")},
		{"xn1_77", []byte("index of epoch 1")},
		{"xe0", []byte("epoch marker")},
		{"p", []byte("an id of one character")},
		{"_log_20260101_1", []byte("log")},
	}
	for _, tl := range testLocations(t) {
		t.Run(tl.name, func(t *testing.T) {
			st := NewBlobStorage(tl.loc)
			defer st.Close(ctx)

			for _, b := range blobs {
				if _, err := getBlob(ctx, st, b.id, 0, -1); !errors.Is(err, blob.ErrBlobNotFound) {
					t.Fatalf("GetBlob(%s) before Put: %v", b.id, err)
				}
				if _, err := st.GetMetadata(ctx, b.id); !errors.Is(err, blob.ErrBlobNotFound) {
					t.Fatalf("GetMetadata(%s) before Put: %v", b.id, err)
				}
			}
			if err := st.DeleteBlob(ctx, "no-such-blob"); err != nil {
				t.Fatalf("DeleteBlob of an absent blob: %v", err)
			}
			if ids := listIDs(t, st, ""); len(ids) != 0 {
				t.Fatalf("an empty repository lists %v", ids)
			}

			before := time.Now().Add(-time.Minute)
			for _, b := range blobs {
				if err := st.PutBlob(ctx, b.id, sliceBytes(b.data), blob.PutOptions{}); err != nil {
					t.Fatalf("PutBlob(%s): %v", b.id, err)
				}
			}
			after := time.Now().Add(time.Minute)

			t.Run("get", func(t *testing.T) {
				for _, b := range blobs {
					n := int64(len(b.data))
					half := n / 2
					for _, tc := range []struct {
						offset, length int64
						want           []byte
					}{
						{0, -1, b.data},
						{0, 0, nil},
						{0, half, b.data[:half]},
						{half, n - half, b.data[half:]},
					} {
						got, err := getBlob(ctx, st, b.id, tc.offset, tc.length)
						if err != nil || !bytes.Equal(got, tc.want) {
							t.Errorf("GetBlob(%s, %d, %d) = %d bytes, %v; want %d", b.id, tc.offset, tc.length, len(got), err, len(tc.want))
						}
					}
					for _, r := range [][2]int64{{-3, 1}, {n, 3}, {n - 1, 3}, {n + 1, 3}} {
						if _, err := getBlob(ctx, st, b.id, r[0], r[1]); !errors.Is(err, blob.ErrInvalidRange) {
							t.Errorf("GetBlob(%s, %d, %d): %v, want ErrInvalidRange", b.id, r[0], r[1], err)
						} else if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, tl.loc.String()) {
							t.Errorf("GetBlob(%s, %d, %d): message %q", b.id, r[0], r[1], msg)
						}
					}
					m, err := st.GetMetadata(ctx, b.id)
					if err != nil || m.BlobID != b.id || m.Length != n || m.Timestamp.Before(before) || m.Timestamp.After(after) {
						t.Errorf("GetMetadata(%s) = %+v, %v", b.id, m, err)
					}
				}
			})

			t.Run("list", func(t *testing.T) {
				for _, tc := range []struct {
					prefix blob.ID
					want   string
				}{
					{"", "_log_20260101_1 abcdbbf4f0507d054ed5a80a5b65086f602b abff4585856ebf0748fd989e1dd623a8963d abgc3dca496d510f492c858a2df1eb824e62 kopia.repository p xe0 xn0_8d3f xn1_77 zxce0e35630770c54668a8cfb4e414c6bf8f"},
					{"ab", "abcdbbf4f0507d054ed5a80a5b65086f602b abff4585856ebf0748fd989e1dd623a8963d abgc3dca496d510f492c858a2df1eb824e62"},
					{"abf", "abff4585856ebf0748fd989e1dd623a8963d"},
					{"x", "xe0 xn0_8d3f xn1_77"},
					{"xn", "xn0_8d3f xn1_77"},
					{"xn0_", "xn0_8d3f"},
					{"p", "p"},
					{"pq", ""},
					{"_log_", "_log_20260101_1"},
					{"kopia.repository", "kopia.repository"},
					{"kopia.repository.backup.", ""},
					{"q", ""},
					{".x", ""},
					{"a/b", ""},
				} {
					if got := strings.Join(listIDs(t, st, tc.prefix), " "); got != tc.want {
						t.Errorf("ListBlobs(%q) = %s\nwant %s", tc.prefix, got, tc.want)
					}
				}
				// Listed metadata agrees with GetMetadata.
				if err := st.ListBlobs(ctx, "", func(m blob.Metadata) error {
					m2, err := st.GetMetadata(ctx, m.BlobID)
					if err != nil || m2.Length != m.Length || m2.Timestamp.Sub(m.Timestamp).Abs() > time.Minute {
						t.Errorf("%s: listed %+v, GetMetadata %+v, %v", m.BlobID, m, m2, err)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				// The callback's error ends the listing and comes back as it is.
				stop := errors.New("stop")
				for _, prefix := range []blob.ID{"", "ab"} {
					if err := st.ListBlobs(ctx, prefix, func(blob.Metadata) error { return stop }); err != stop {
						t.Errorf("ListBlobs(%q) with a failing callback: %v", prefix, err)
					}
				}
			})

			t.Run("layout", func(t *testing.T) {
				// Every blob two folders deep, under its first two characters; nothing else.
				var paths []string
				if err := tl.loc.Walk(ctx, "", func(e storage.Entry) error {
					if !e.Dir {
						paths = append(paths, e.Path)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				want := []string{"_/l/_log_20260101_1", "a/b/abcdbbf4f0507d054ed5a80a5b65086f602b", "a/b/abff4585856ebf0748fd989e1dd623a8963d",
					"a/b/abgc3dca496d510f492c858a2df1eb824e62", "k/o/kopia.repository", "p/-/p", "x/e/xe0", "x/n/xn0_8d3f", "x/n/xn1_77",
					"z/x/zxce0e35630770c54668a8cfb4e414c6bf8f"}
				if strings.Join(paths, " ") != strings.Join(want, " ") {
					t.Fatalf("stored as %v\nwant %v", paths, want)
				}
				// A listing by prefix lists one folder.
				if tl.s3 != nil {
					// versitygw logs a request after answering it: let the log settle, then
					// wait for the listing's line.
					logSize := func() int64 { fi, _ := os.Stat(tl.s3.LogPath); return fi.Size() }
					for n := int64(-1); n != logSize(); time.Sleep(300 * time.Millisecond) {
						n = logSize()
					}
					const want = "prefix=cluster%2Fvolumes%2Fx%2Fn%2F"
					reqs := tl.s3.RequestsDuring(t, func() {
						before := logSize()
						listIDs(t, st, "xn0_")
						for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
							if b, _ := os.ReadFile(tl.s3.LogPath); bytes.Contains(b[before:], []byte(want)) {
								break
							}
						}
					})
					if !strings.Contains(reqs, want) || strings.Count(reqs, "list-type") != 1 {
						t.Fatalf("listing xn0_ sent:\n%s", reqs)
					}
				}
				// Files that are not blobs of this layout are not listed.
				for _, p := range []string{"README", "x/n/README/x", "x/e/xn9_misplaced", "x/n/.xn0_hidden"} {
					if err := storage.WriteFile(ctx, tl.loc, p, []byte("foreign"), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				if got := strings.Join(listIDs(t, st, "x"), " "); got != "xe0 xn0_8d3f xn1_77" {
					t.Fatalf("ListBlobs(x) with foreign files: %s", got)
				}
			})

			t.Run("put options", func(t *testing.T) {
				var mtime time.Time
				if err := st.PutBlob(ctx, "xn2_0", sliceBytes("x"), blob.PutOptions{GetModTime: &mtime}); err != nil {
					t.Fatal(err)
				}
				m, _ := st.GetMetadata(ctx, "xn2_0")
				if mtime.IsZero() || !mtime.Equal(m.Timestamp) {
					t.Fatalf("GetModTime %v, GetMetadata %v", mtime, m.Timestamp)
				}
				if err := st.PutBlob(ctx, "xn2_0", sliceBytes("y"), blob.PutOptions{DoNotRecreate: true}); !errors.Is(err, blob.ErrBlobAlreadyExists) {
					t.Fatalf("DoNotRecreate of a present blob: %v", err)
				}
				if got, _ := getBlob(ctx, st, "xn2_0", 0, -1); string(got) != "x" {
					t.Fatalf("DoNotRecreate overwrote: %q", got)
				}
				if err := st.PutBlob(ctx, "xn2_1", sliceBytes("y"), blob.PutOptions{DoNotRecreate: true}); err != nil {
					t.Fatalf("DoNotRecreate of an absent blob: %v", err)
				}
				if err := st.PutBlob(ctx, "xn2_2", sliceBytes("y"), blob.PutOptions{SetModTime: time.Now()}); !errors.Is(err, blob.ErrSetTimeUnsupported) {
					t.Fatalf("SetModTime: %v", err)
				}
				if err := st.PutBlob(ctx, "xn2_2", sliceBytes("y"), blob.PutOptions{RetentionMode: blob.Governance, RetentionPeriod: time.Hour}); !errors.Is(err, blob.ErrUnsupportedPutBlobOption) {
					t.Fatalf("retention: %v", err)
				}
				if err := st.ExtendBlobRetention(ctx, "xn2_0", blob.ExtendOptions{}); err == nil {
					t.Fatal("ExtendBlobRetention succeeded")
				}
				// Overwrite.
				if err := st.PutBlob(ctx, "xn2_0", sliceBytes("zz"), blob.PutOptions{}); err != nil {
					t.Fatal(err)
				}
				if got, _ := getBlob(ctx, st, "xn2_0", 0, -1); string(got) != "zz" {
					t.Fatalf("after overwrite: %q", got)
				}
				for _, id := range []blob.ID{"", "a/b", "../x", ".hidden", "x y", "x.planrun-part"} {
					if err := st.PutBlob(ctx, id, sliceBytes("x"), blob.PutOptions{}); err == nil {
						t.Errorf("PutBlob(%q) succeeded", id)
					}
				}
				if _, err := st.GetCapacity(ctx); !errors.Is(err, blob.ErrNotAVolume) {
					t.Errorf("GetCapacity: %v", err)
				}
			})

			t.Run("delete", func(t *testing.T) {
				for range 2 {
					if err := st.DeleteBlob(ctx, blobs[0].id); err != nil {
						t.Fatal(err)
					}
				}
				if got := strings.Join(listIDs(t, st, "ab"), " "); got != "abff4585856ebf0748fd989e1dd623a8963d abgc3dca496d510f492c858a2df1eb824e62" {
					t.Fatalf("after delete: %s", got)
				}
				if _, err := getBlob(ctx, st, blobs[0].id, 0, -1); !errors.Is(err, blob.ErrBlobNotFound) {
					t.Fatalf("GetBlob after delete: %v", err)
				}
			})

			t.Run("connection info", func(t *testing.T) {
				ci := st.ConnectionInfo()
				js, err := json.Marshal(ci)
				if err != nil {
					t.Fatal(err)
				}
				if tl.s3 != nil && (strings.Contains(string(js), tl.s3.SecretKey) || strings.Contains(string(js), tl.s3.AccessKey)) {
					t.Fatalf("connection info holds a credential: %s", js)
				}
				var back blob.ConnectionInfo
				if err := json.Unmarshal(js, &back); err != nil {
					t.Fatal(err)
				}
				st2, err := blob.NewStorage(ctx, back, false)
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := getBlob(ctx, st2, "kopia.repository", 0, -1); len(got) != 100 {
					t.Fatalf("the storage made from the connection info reads %d bytes", len(got))
				}
				if ci2 := st2.ConnectionInfo(); *ci2.Config.(*StorageConfig) != *ci.Config.(*StorageConfig) {
					t.Fatalf("connection info %+v, then %+v", ci.Config, ci2.Config)
				}
				st2.Close(ctx) // a copy: the handle stays
				if _, err := blob.NewStorage(ctx, back, false); err != nil {
					t.Fatalf("after closing a copy: %v", err)
				}
				st.Close(ctx)
				if _, err := blob.NewStorage(ctx, back, false); err == nil || !strings.Contains(err.Error(), "not open in this process") {
					t.Fatalf("after closing the original: %v", err)
				}
			})
		})
	}
}

// A local folder that does not exist yet is an empty repository, and holds blobs once written.
func TestBlobStorageMissingFolder(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "a", "b")
	st := NewBlobStorage(storage.OpenLocal(dir))
	if ids := listIDs(t, st, ""); len(ids) != 0 {
		t.Fatal(ids)
	}
	if ids := listIDs(t, st, "xn"); len(ids) != 0 {
		t.Fatal(ids)
	}
	if err := st.PutBlob(ctx, "q1", sliceBytes("x"), blob.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "q", "1", "q1"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stored blob: %v %v", fi, err)
	}
}

// Failures of the service keep their kind through the adapter, are not taken for an absent
// blob, and fit on one line.
func TestBlobStorageErrors(t *testing.T) {
	ctx := context.Background()
	s := s3test.StartForTest(t)
	loc := openS3(t, s, "data", "repo")
	noBucket, err := storage.Open(ctx, s.URL("nosuchbucket", "repo"), s3Credentials(s))
	if err != nil {
		t.Fatal(err)
	}
	defer noBucket.Close()
	wrong, err := storage.Open(ctx, s.URL("data", "repo"), storage.NewCredentials("Secret test/wrong",
		map[string][]byte{"accessKeyID": []byte(s.AccessKey), "secretAccessKey": []byte("WRONGSECRETVALUE")}))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if err := NewBlobStorage(loc).PutBlob(ctx, "p1", sliceBytes("x"), blob.PutOptions{}); err != nil {
		t.Fatal(err)
	}

	check := func(t *testing.T, st blob.Storage, want error) {
		t.Helper()
		_, gerr := getBlob(ctx, st, "p1", 0, -1)
		lerr := st.ListBlobs(ctx, "p", func(blob.Metadata) error { return nil })
		perr := st.PutBlob(ctx, "p2", sliceBytes("y"), blob.PutOptions{})
		for op, err := range map[string]error{"GetBlob": gerr, "ListBlobs": lerr, "PutBlob": perr} {
			var se *storage.Error
			if !errors.Is(err, want) || errors.Is(err, blob.ErrBlobNotFound) || !errors.As(err, &se) {
				t.Errorf("%s: %v, want %v", op, err, want)
				continue
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || strings.Contains(msg, "WRONGSECRETVALUE") || strings.Contains(msg, s.SecretKey) {
				t.Errorf("%s: message %q", op, msg)
			}
		}
	}
	t.Run("no bucket", func(t *testing.T) { check(t, NewBlobStorage(noBucket), storage.ErrNoBucket) })
	t.Run("access denied", func(t *testing.T) { check(t, NewBlobStorage(wrong), storage.ErrAccessDenied) })
	t.Run("unreachable", func(t *testing.T) {
		s.Kill()
		defer func() {
			if err := s.Restart(); err != nil {
				t.Fatal(err)
			}
		}()
		st := NewBlobStorage(loc)
		check(t, st, storage.ErrUnreachable)
		var se *storage.Error
		_, err := getBlob(ctx, st, "p1", 0, -1)
		if !errors.As(err, &se) || !se.Transient() {
			t.Fatalf("an unreachable server is not worth a retry: %v", err)
		}
	})
}
