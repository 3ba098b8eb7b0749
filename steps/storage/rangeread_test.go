package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"planrun.dev/planrun/internal/s3test"
)

// plainLocation hides the optional interfaces of a location, for the fallbacks.
type plainLocation struct{ Location }

// locationsForTest are a local folder, a prefix of a bucket on a real S3 server, and a local
// folder seen only through the Location interface.
func locationsForTest(t *testing.T) map[string]Location {
	t.Helper()
	s := s3test.StartForTest(t)
	if err := s.CreateBucket("data"); err != nil {
		t.Fatal(err)
	}
	return map[string]Location{
		"local":         OpenLocal(t.TempDir()),
		"s3":            openS3ForTest(t, s, "data", "repo"),
		"no interfaces": plainLocation{OpenLocal(t.TempDir())},
	}
}

func TestOpenRange(t *testing.T) {
	ctx := context.Background()
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for name, l := range locationsForTest(t) {
		t.Run(name, func(t *testing.T) {
			put(t, l, "a/file", data, CreateOptions{})
			put(t, l, "a/empty", nil, CreateOptions{})
			for _, tc := range []struct {
				path           string
				offset, length int64
				want           []byte
				err            error
			}{
				{path: "a/file", offset: 0, length: -1, want: data},
				{path: "a/file", offset: 0, length: 1000, want: data},
				{path: "a/file", offset: 10, length: 20, want: data[10:30]},
				{path: "a/file", offset: 990, length: -1, want: data[990:]},
				{path: "a/file", offset: 999, length: 1, want: data[999:]},
				{path: "a/file", offset: 0, length: 0, want: []byte{}},
				{path: "a/file", offset: 1000, length: 0, want: []byte{}},
				{path: "a/file", offset: 1000, length: -1, want: []byte{}},
				{path: "a/empty", offset: 0, length: -1, want: []byte{}},
				{path: "a/empty", offset: 0, length: 0, want: []byte{}},
				{path: "a/empty", offset: 0, length: 1, err: ErrRange},
				{path: "a/file", offset: -3, length: 1, err: ErrRange},
				{path: "a/file", offset: 1000, length: 3, err: ErrRange},
				{path: "a/file", offset: 999, length: 3, err: ErrRange},
				{path: "a/file", offset: 1001, length: 3, err: ErrRange},
				{path: "a/file", offset: 1001, length: 0, err: ErrRange},
				{path: "a/file", offset: 5000, length: -1, err: ErrRange},
				{path: "a/nope", offset: 0, length: 10, err: fs.ErrNotExist},
				{path: "a/nope", offset: 0, length: 0, err: fs.ErrNotExist},
			} {
				what := fmt.Sprintf("OpenRange(%s, %d, %d)", tc.path, tc.offset, tc.length)
				r, err := OpenRange(ctx, l, tc.path, tc.offset, tc.length)
				if tc.err != nil {
					if !errors.Is(err, tc.err) {
						t.Errorf("%s: %v, want %v", what, err, tc.err)
						continue
					}
					if msg := err.Error(); strings.Contains(msg, "\n") || (tc.err == ErrRange && !strings.Contains(msg, "bytes")) {
						t.Errorf("%s: message %q", what, msg)
					}
					continue
				}
				if err != nil {
					t.Errorf("%s: %v", what, err)
					continue
				}
				got, err := io.ReadAll(r)
				r.Close()
				if err != nil || !bytes.Equal(got, tc.want) {
					t.Errorf("%s: read %d bytes (%v), want %d", what, len(got), err, len(tc.want))
				}
			}
		})
	}
}

func TestStatFileAndModTime(t *testing.T) {
	ctx := context.Background()
	for name, l := range locationsForTest(t) {
		t.Run(name, func(t *testing.T) {
			before := time.Now().Add(-time.Minute)
			put(t, l, "a/b/file", []byte("hello"), CreateOptions{})
			after := time.Now().Add(time.Minute)
			recent := func(what string, tm time.Time) {
				if tm.Before(before) || tm.After(after) {
					t.Errorf("%s: ModTime %v, want about now", what, tm)
				}
			}
			e, err := StatFile(ctx, l, "a/b/file")
			if err != nil || e.Size != 5 || e.Dir || e.Path != "a/b/file" {
				t.Fatalf("StatFile(a/b/file) = %+v, %v", e, err)
			}
			recent("StatFile", e.ModTime)
			e, err = l.Stat(ctx, "a/b/file")
			if err != nil {
				t.Fatal(err)
			}
			recent("Stat", e.ModTime)
			n := 0
			if err := l.Walk(ctx, "a", func(e Entry) error {
				if !e.Dir {
					n++
					recent("Walk "+e.Path, e.ModTime)
				}
				return nil
			}); err != nil || n != 1 {
				t.Fatalf("Walk: %d files, %v", n, err)
			}
			paths := []string{"a/b", "a/nope"}
			if _, plain := l.(plainLocation); !plain {
				paths = append(paths, "a/b/file/x")
			}
			for _, p := range paths {
				if _, err := StatFile(ctx, l, p); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("StatFile(%s): %v, want fs.ErrNotExist", p, err)
				}
			}
		})
	}
}

// Writers of one path in a local folder, at the same time, each commit whole or fail: a reader
// never sees a mix of their bytes or a truncated file, and no temporary file stays behind.
func TestLocalConcurrentWritersOfOnePath(t *testing.T) {
	dir := t.TempDir()
	l := OpenLocal(dir)
	ctx := context.Background()
	contents := [][]byte{
		bytes.Repeat([]byte("a"), 300<<10),
		bytes.Repeat([]byte("b"), 200<<10),
		bytes.Repeat([]byte("c"), 1),
	}
	put(t, l, "x/blob", contents[0], CreateOptions{})
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			b, err := os.ReadFile(filepath.Join(dir, "x/blob"))
			if err != nil {
				t.Errorf("read: %v", err)
				return
			}
			ok := false
			for _, c := range contents {
				ok = ok || bytes.Equal(b, c)
			}
			if !ok {
				t.Errorf("read %d bytes that no writer wrote whole", len(b))
				return
			}
		}
	}()
	var writers sync.WaitGroup
	for w := range 6 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := range 20 {
				c := contents[(w+i)%len(contents)]
				u, err := l.Create(ctx, "x/blob", CreateOptions{})
				if err != nil {
					t.Errorf("Create: %v", err)
					return
				}
				if _, err := u.Write(c); err != nil {
					t.Errorf("Write: %v", err)
					return
				}
				if err := u.Commit(ctx, sumOf(c)); err != nil {
					t.Errorf("Commit: %v", err)
					return
				}
			}
		}()
	}
	writers.Wait()
	close(stop)
	readers.Wait()
	entries, _ := os.ReadDir(filepath.Join(dir, "x"))
	if len(entries) != 1 {
		t.Fatalf("left %v", entries)
	}
}
