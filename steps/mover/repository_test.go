package mover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/format"
	"github.com/kopia/kopia/repo/object"

	"planrun.dev/planrun/internal/s3test"
	"planrun.dev/planrun/steps/storage"
)

func randomBytes(seed uint64, n int) []byte {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	b := make([]byte, n)
	r.Read(b)
	return b
}

// writeObject writes data as an object of r and flushes it.
func writeObject(t *testing.T, r repo.Repository, data []byte) object.ID {
	t.Helper()
	var id object.ID
	err := repo.WriteSession(context.Background(), r, repo.WriteSessionOptions{Purpose: "test"}, func(ctx context.Context, w repo.RepositoryWriter) error {
		ow := w.NewObjectWriter(ctx, object.WriterOptions{Description: "test"})
		defer ow.Close()
		if _, err := ow.Write(data); err != nil {
			return err
		}
		var err error
		id, err = ow.Result()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func readObject(t *testing.T, r repo.Repository, id object.ID) []byte {
	t.Helper()
	or, err := r.OpenObject(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer or.Close()
	b, err := io.ReadAll(or)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The first connection creates the repository, later ones open it; an object written through
// the first is read back through a later one.
func TestConnectRepository(t *testing.T) {
	ctx := context.Background()
	for _, tl := range testLocations(t) {
		t.Run(tl.name, func(t *testing.T) {
			var logs bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			work := t.TempDir()
			r, err := ConnectRepository(ctx, tl.loc, RepositoryOptions{WorkDir: work, Logger: logger})
			if err != nil {
				t.Fatal(err)
			}
			if got := r.ClientOptions(); got.Hostname != "planrun" || got.Username != "mover" {
				t.Errorf("client identity %s@%s", got.Username, got.Hostname)
			}
			// What kopia chose for the repository.
			f := r.ContentReader().ContentFormat()
			if f.GetHashFunction() != "BLAKE2B-256-128" || f.GetEncryptionAlgorithm() != "AES256-GCM-HMAC-SHA256" || r.ObjectFormat().Splitter != "DYNAMIC-4M-BUZHASH" {
				t.Errorf("format: hash %s, encryption %s, splitter %s", f.GetHashFunction(), f.GetEncryptionAlgorithm(), r.ObjectFormat().Splitter)
			}
			mp, err := f.GetMutableParameters(ctx)
			if err != nil || mp.MaxPackSize != 20<<20 || mp.Version != format.FormatVersion3 {
				t.Errorf("mutable parameters %+v, %v", mp, err)
			}
			data := randomBytes(1, 9<<20+12345) // a few chunks of the 4 MiB splitter
			id := writeObject(t, r, data)
			uniqueID := r.UniqueID()

			// kopia's configuration names the location and holds no credential.
			config, err := os.ReadFile(filepath.Join(work, "repository.config"))
			if err != nil {
				t.Fatal(err)
			}
			var lc struct {
				Storage struct {
					Type   string
					Config StorageConfig
				}
			}
			if err := json.Unmarshal(config, &lc); err != nil || lc.Storage.Type != "planrun" || lc.Storage.Config.URL != storage.Display(tl.loc.String()) {
				t.Errorf("config file (%v):\n%s", err, config)
			}
			if err := r.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if tl.s3 != nil {
				for _, secret := range []string{tl.s3.SecretKey, tl.s3.AccessKey} {
					if strings.Contains(string(config), secret) || strings.Contains(logs.String(), secret) {
						t.Fatalf("a credential in kopia's config file or logs")
					}
				}
			}
			if !strings.Contains(logs.String(), "kopia=") {
				t.Errorf("no kopia logs reached slog:\n%s", logs.String())
			}

			// Reopened, without a work folder (a temporary one, removed on Close).
			r2, err := ConnectRepository(ctx, tl.loc, RepositoryOptions{Password: DefaultPassword, ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(r2.UniqueID(), uniqueID) {
				t.Fatal("reopened another repository")
			}
			if got := readObject(t, r2, id); !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes, differing", len(got))
			}
			tmp := r2.workDir
			if err := r2.Close(ctx); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(tmp); !os.IsNotExist(err) {
				t.Fatalf("temporary work folder left: %v", err)
			}

			// The wrong password.
			_, err = ConnectRepository(ctx, tl.loc, RepositoryOptions{Password: "another one"})
			if !errors.Is(err, ErrWrongPassword) {
				t.Fatalf("wrong password: %v", err)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, storage.Display(tl.loc.String())) {
				t.Fatalf("wrong password: message %q", msg)
			}
		})
	}
}

// A repository that does not exist is not created by a read-only connection.
func TestConnectRepositoryReadOnlyAbsent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	_, err := ConnectRepository(context.Background(), storage.OpenLocal(dir), RepositoryOptions{ReadOnly: true})
	if !errors.Is(err, ErrNoRepository) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("ReadOnly on an empty folder: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a read-only connection wrote: %v", err)
	}
}

// Movers of several claims start at once on a new repository: they all connect to one
// repository, and what each writes is read back by the others.
func TestConnectRepositoryConcurrentCreation(t *testing.T) {
	ctx := context.Background()
	s := s3test.StartForTest(t)
	const movers = 4
	for _, tc := range []struct {
		name string
		locs func(t *testing.T) []storage.Location // one Location per mover, as in separate pods
	}{
		{"local", func(t *testing.T) []storage.Location {
			dir := filepath.Join(t.TempDir(), "repo")
			var out []storage.Location
			for range movers {
				out = append(out, storage.OpenLocal(dir))
			}
			return out
		}},
		{"s3", func(t *testing.T) []storage.Location {
			var out []storage.Location
			for range movers {
				out = append(out, openS3(t, s, "concurrent", "volumes"))
			}
			return out
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			locs := tc.locs(t)
			repos := make([]*Repository, movers)
			ids := make([]object.ID, movers)
			errs := make([]error, movers)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range movers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					repos[i], errs[i] = ConnectRepository(ctx, locs[i], RepositoryOptions{Username: "mover" + string(rune('a'+i))})
				}()
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("mover %d: %v", i, err)
				}
			}
			for i, r := range repos {
				if !bytes.Equal(r.UniqueID(), repos[0].UniqueID()) {
					t.Fatalf("mover %d connected to another repository", i)
				}
			}
			// Each writes (at once too), then all close.
			for i, r := range repos {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ids[i] = writeObject(t, r, randomBytes(uint64(10+i), 1<<20+i))
				}()
			}
			wg.Wait()
			for _, r := range repos {
				if err := r.Close(ctx); err != nil {
					t.Fatal(err)
				}
			}
			// A later mover reads them all.
			r, err := ConnectRepository(ctx, locs[0], RepositoryOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close(ctx)
			for i, id := range ids {
				if got := readObject(t, r, id); !bytes.Equal(got, randomBytes(uint64(10+i), 1<<20+i)) {
					t.Fatalf("object of mover %d differs", i)
				}
			}
		})
	}
}

// A creator that died between its two writes (kopia.blobcfg, then kopia.repository) leaves a
// repository that the next one finishes.
func TestConnectRepositoryAfterHalfCreation(t *testing.T) {
	ctx := context.Background()
	defer func(d time.Duration) { creationWait = d }(creationWait)
	creationWait = 500 * time.Millisecond
	loc := storage.OpenLocal(filepath.Join(t.TempDir(), "repo"))
	st := NewBlobStorage(loc)
	opts, err := newRepositoryOptions(loc, DefaultPassword)
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Initialize(ctx, st, opts, DefaultPassword); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteBlob(ctx, format.KopiaRepositoryBlobID); err != nil {
		t.Fatal(err)
	}
	r, err := ConnectRepository(ctx, loc, RepositoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	id := writeObject(t, r, []byte("after a half creation"))
	if got := readObject(t, r, id); string(got) != "after a half creation" {
		t.Fatalf("read %q", got)
	}
}

// The location's failures come out as its own errors, on one line.
func TestConnectRepositoryStorageErrors(t *testing.T) {
	ctx := context.Background()
	s := s3test.StartForTest(t)
	if err := s.CreateBucket("data"); err != nil {
		t.Fatal(err)
	}
	open := func(t *testing.T, url string, creds *storage.Credentials) storage.Location {
		l, err := storage.Open(ctx, url, creds)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	wrong := storage.NewCredentials("Secret test/wrong", map[string][]byte{"accessKeyID": []byte(s.AccessKey), "secretAccessKey": []byte("WRONGSECRETVALUE")})
	for _, tc := range []struct {
		name string
		loc  func(t *testing.T) storage.Location
		kill bool
		want error
	}{
		{"no bucket", func(t *testing.T) storage.Location { return open(t, s.URL("nosuchbucket", "v"), s3Credentials(s)) }, false, storage.ErrNoBucket},
		{"access denied", func(t *testing.T) storage.Location { return open(t, s.URL("data", "v"), wrong) }, false, storage.ErrAccessDenied},
		{"unreachable", func(t *testing.T) storage.Location { return open(t, s.URL("data", "v"), s3Credentials(s)) }, true, storage.ErrUnreachable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loc := tc.loc(t)
			if tc.kill {
				s.Kill()
				defer func() {
					if err := s.Restart(); err != nil {
						t.Fatal(err)
					}
				}()
			}
			work := t.TempDir()
			_, err := ConnectRepository(ctx, loc, RepositoryOptions{WorkDir: work})
			if !errors.Is(err, tc.want) {
				t.Fatalf("%v, want %v", err, tc.want)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || strings.Contains(msg, "WRONGSECRETVALUE") || strings.Contains(msg, s.SecretKey) || !strings.HasPrefix(msg, loc.String()) {
				t.Fatalf("message %q", msg)
			}
			if entries, _ := os.ReadDir(work); len(entries) != 0 {
				t.Fatalf("left in the work folder: %v", entries)
			}
		})
	}
	_ = blob.ErrBlobNotFound
}
