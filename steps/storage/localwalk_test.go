package storage

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A file that another writer removes while a local folder is listed is left out of the listing
// (as an object store's listing would), not an error; a dangling symlink still is one.
func TestLocalWalkConcurrentRemoval(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l := OpenLocal(dir)
	for _, p := range []string{"d/a", "d/b", "d/c", "e/x"} {
		put(t, l, p, []byte(p), CreateOptions{})
	}
	var got []string
	err := l.Walk(ctx, "", func(e Entry) error {
		got = append(got, e.Path)
		if e.Path == "d/a" {
			// Removed after the folder was read, before Walk looks at them.
			if err := os.Remove(filepath.Join(dir, "d/b")); err != nil {
				return err
			}
			return os.RemoveAll(filepath.Join(dir, "e"))
		}
		return nil
	})
	if err != nil || strings.Join(got, " ") != "d d/a d/c" {
		t.Fatalf("Walk: %v, %v", got, err)
	}
	if err := os.Symlink(filepath.Join(dir, "nowhere"), filepath.Join(dir, "d/link")); err != nil {
		t.Fatal(err)
	}
	if err := l.Walk(ctx, "", func(Entry) error { return nil }); err == nil {
		t.Fatal("Walk over a dangling symlink succeeded")
	}
}
