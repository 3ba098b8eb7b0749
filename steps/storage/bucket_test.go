package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"testing"
	"time"

	"planrun.dev/planrun/internal/s3test"
)

// s3Creds are a server's keys as a Secret would hold them (Gardener's names).
func s3Creds(s *s3test.Server) *Credentials {
	return NewCredentials("Secret test/s3", map[string][]byte{"accessKeyID": []byte(s.AccessKey), "secretAccessKey": []byte(s.SecretKey)})
}

func openS3ForTest(t *testing.T, s *s3test.Server, bucket, prefix string) Location {
	t.Helper()
	l, err := Open(context.Background(), s.URL(bucket, prefix), s3Creds(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func put(t *testing.T, l Location, p string, data []byte, opts CreateOptions) {
	t.Helper()
	ctx := context.Background()
	u, err := l.Create(ctx, p, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := u.Commit(ctx, sumOf(data)); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, l Location, p string) ([]byte, string) {
	t.Helper()
	r, err := l.Open(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	known := ""
	if k, ok := r.(KnownSHA256); ok {
		known = k.SHA256()
	}
	return b, known
}

func TestS3Location(t *testing.T) {
	s := s3test.StartForTest(t)
	for _, b := range []string{"one", "two"} {
		if err := s.CreateBucket(b); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	l := openS3ForTest(t, s, "one", "backups/x")

	big := bytes.Repeat([]byte("0123456789abcdef"), 20<<20/16) // several parts
	put(t, l, "big.bin", big, CreateOptions{SHA256: sumOf(big)})
	put(t, l, "resources/secrets/ns.jsonl", []byte("{}\n"), CreateOptions{Mode: 0o600})
	put(t, l, "resources/configmaps/ns.jsonl", []byte("{}\n{}\n"), CreateOptions{})

	t.Run("stat", func(t *testing.T) {
		for _, tc := range []struct {
			path string
			want Entry
			err  error
		}{
			{path: "big.bin", want: Entry{Path: "big.bin", Size: int64(len(big)), Mode: 0o644, SHA256: sumOf(big)}},
			{path: "resources/secrets/ns.jsonl", want: Entry{Path: "resources/secrets/ns.jsonl", Size: 3, Mode: 0o600}},
			{path: "resources", want: Entry{Path: "resources", Dir: true}},
			{path: "", want: Entry{Dir: true}},
			{path: "nope", err: fs.ErrNotExist},
			{path: "resources/secret", err: fs.ErrNotExist}, // a key prefix is not a folder
		} {
			got, err := l.Stat(ctx, tc.path)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Errorf("Stat(%q): %v, want %v", tc.path, err, tc.err)
				}
				continue
			}
			// A file has the time it was written (the server's clock); a folder none.
			if err == nil && got.ModTime.IsZero() == !got.Dir {
				t.Errorf("Stat(%q): ModTime %v", tc.path, got.ModTime)
			}
			got.ModTime = time.Time{}
			if err != nil || got != tc.want {
				t.Errorf("Stat(%q) = %+v, %v; want %+v", tc.path, got, err, tc.want)
			}
		}
	})

	t.Run("walk", func(t *testing.T) {
		var got []string
		if err := l.Walk(ctx, "", func(e Entry) error {
			got = append(got, fmt.Sprintf("%s:%d", e.Path, e.Size))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("big.bin:%d resources/configmaps/ns.jsonl:6 resources/secrets/ns.jsonl:3", len(big))
		if strings.Join(got, " ") != want {
			t.Fatalf("Walk: %v\nwant %s", got, want)
		}
		got = nil
		if err := l.Walk(ctx, "resources/secrets", func(e Entry) error { got = append(got, e.Path); return nil }); err != nil || strings.Join(got, " ") != "resources/secrets/ns.jsonl" {
			t.Fatalf("Walk(resources/secrets): %v %v", got, err)
		}
	})

	t.Run("read", func(t *testing.T) {
		b, known := readAll(t, l, "big.bin")
		if !bytes.Equal(b, big) || known != sumOf(big) {
			t.Fatalf("read %d bytes, known sum %q", len(b), known)
		}
		if _, known := readAll(t, l, "resources/configmaps/ns.jsonl"); known != "" {
			t.Fatalf("a sum nobody gave: %q", known)
		}
		if _, err := l.Open(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Open(nope): %v", err)
		}
	})

	t.Run("a bad sum never appears", func(t *testing.T) {
		for _, opts := range []CreateOptions{{}, {SHA256: sumOf([]byte("other"))}} {
			u, err := l.Create(ctx, "bad.bin", opts)
			if err != nil {
				t.Fatal(err)
			}
			u.Write(big)
			want := sumOf(big)
			if opts.SHA256 == "" {
				want = sumOf([]byte("what the source had"))
			}
			if err := u.Commit(ctx, want); !errors.Is(err, ErrChecksum) {
				t.Fatalf("Commit: %v", err)
			}
			if _, err := l.Stat(ctx, "bad.bin"); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("after a bad commit: %v", err)
			}
		}
		u, _ := l.Create(ctx, "aborted.bin", CreateOptions{})
		u.Write(big)
		if err := u.Abort(); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Stat(ctx, "aborted.bin"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("after Abort: %v", err)
		}
	})

	t.Run("server-side copy", func(t *testing.T) {
		e, _ := l.Stat(ctx, "big.bin")
		for _, tc := range []struct {
			name string
			dst  Location
			want bool
		}{
			{"same bucket", openS3ForTest(t, s, "one", "copies"), true},
			{"other bucket", openS3ForTest(t, s, "two", "copies"), true},
			{"local folder", OpenLocal(t.TempDir()), false},
		} {
			sc, ok := tc.dst.(ServerCopier)
			if !ok {
				if tc.want {
					t.Fatalf("%s: no ServerCopier", tc.name)
				}
				continue
			}
			done, err := sc.CopyFrom(ctx, l, "big.bin", "a/big.bin", e)
			if err != nil || done != tc.want {
				t.Fatalf("%s: CopyFrom = %v, %v", tc.name, done, err)
			}
			if done {
				b, known := readAll(t, tc.dst, "a/big.bin")
				if !bytes.Equal(b, big) || known != sumOf(big) {
					t.Fatalf("%s: copy differs (known sum %q)", tc.name, known)
				}
			}
		}
		// Another server is another service, even with the same bucket names.
		other := s3test.StartForTest(t)
		if err := other.CreateBucket("one"); err != nil {
			t.Fatal(err)
		}
		if done, err := openS3ForTest(t, other, "one", "").(ServerCopier).CopyFrom(ctx, l, "big.bin", "x", e); done || err != nil {
			t.Fatalf("across servers: %v %v", done, err)
		}
	})

	t.Run("remove", func(t *testing.T) {
		if err := l.Remove(ctx, "nope"); err != nil {
			t.Fatalf("Remove of an absent object: %v", err)
		}
		if err := l.RemoveAll(ctx, "resources"); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Stat(ctx, "resources"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("after RemoveAll: %v", err)
		}
		if _, err := l.Stat(ctx, "big.bin"); err != nil {
			t.Fatalf("RemoveAll removed too much: %v", err)
		}
	})
}

// Failures say what and where in one line, match the package's errors, never quote the secret
// key, and mark what is worth retrying.
func TestS3Errors(t *testing.T) {
	s := s3test.StartForTest(t)
	if err := s.CreateBucket("data"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	wrong := NewCredentials("Secret test/wrong", map[string][]byte{"accessKeyID": []byte(s.AccessKey), "secretAccessKey": []byte("WRONGSECRETVALUE")})
	for _, tc := range []struct {
		name  string
		url   string
		creds *Credentials
		want  error
		retry bool
	}{
		{"missing bucket", s.URL("nosuchbucket", "x"), s3Creds(s), ErrNoBucket, false},
		{"wrong secret key", s.URL("data", "x"), wrong, ErrAccessDenied, false},
		{"unreachable endpoint", "s3://data/x?endpoint=http://127.0.0.1:1&region=us-east-1", s3Creds(s), ErrUnreachable, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := Open(ctx, tc.url, tc.creds)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			_, err = l.Stat(ctx, "file")
			if !errors.Is(err, tc.want) {
				t.Fatalf("Stat: %v, want %v", err, tc.want)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || strings.Contains(msg, s.SecretKey) || strings.Contains(msg, "WRONGSECRETVALUE") {
				t.Fatalf("message %q: several lines or a secret", msg)
			}
			if !strings.HasPrefix(msg, Redact(tc.url)) {
				t.Fatalf("message %q does not start with the location", msg)
			}
			var se *Error
			if !errors.As(err, &se) || se.Transient() != tc.retry {
				t.Fatalf("transient: %v", se)
			}
		})
	}
}

// A server that dies during an upload leaves no object: the upload fails, and after a restart
// the key is absent, not half written.
func TestS3UploadServerKilled(t *testing.T) {
	s := s3test.StartForTest(t)
	if err := s.CreateBucket("data"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l := openS3ForTest(t, s, "data", "")
	u, err := l.Create(ctx, "big.bin", CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	for i := 0; i < 20; i++ {
		u.Write(chunk)
	}
	s.Kill()
	var werr error
	for i := 0; i < 20 && werr == nil; i++ {
		_, werr = u.Write(chunk)
	}
	if werr == nil {
		werr = u.Commit(ctx, sumOf(bytes.Repeat(chunk, 40)))
	} else {
		u.Abort()
	}
	if werr == nil {
		t.Fatal("the upload succeeded with the server dead")
	}
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Stat(ctx, "big.bin"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after the failed upload: %v", err)
	}
}
