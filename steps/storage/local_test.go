package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCommitVerifies: a written file whose bytes do not match the source's sha256 never takes
// its final name, and leaves no temporary file.
func TestCommitVerifies(t *testing.T) {
	dir := t.TempDir()
	l := OpenLocal(dir)
	ctx := context.Background()
	u, err := l.Create(ctx, "a/file", CreateOptions{Mode: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256([]byte("hellO"))
	err = u.Commit(ctx, hex.EncodeToString(s[:]))
	if !errors.Is(err, ErrChecksum) {
		t.Fatalf("Commit: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "a"))
	if len(entries) != 0 {
		t.Fatalf("left %v", entries)
	}

	// Abort before commit: nothing under the final name either.
	u, _ = l.Create(ctx, "a/file", CreateOptions{Mode: 0o600})
	_, _ = u.Write([]byte("partial"))
	if err := u.Abort(); err != nil {
		t.Fatal(err)
	}
	entries, _ = os.ReadDir(filepath.Join(dir, "a"))
	if len(entries) != 0 {
		t.Fatalf("left %v", entries)
	}
}
