package etcdsnapshot

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"planrun.dev/planrun/internal/safepath"
)

// A snapshot manifest whose file name is not a plain base name is refused.
func TestManifestRefusesHostileFileNames(t *testing.T) {
	for _, name := range []string{"../snap.db", "/etc/passwd", `..\snap.db`, "", "..", "a/b.db", "snap\x00.db"} {
		t.Run(name, func(t *testing.T) {
			snap := filepath.Join(t.TempDir(), "snap.db")
			b, _ := json.Marshal(Manifest{File: name, SHA256: "x"})
			if err := os.WriteFile(ManifestPath(snap), b, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := ReadManifest(snap); !errors.Is(err, safepath.ErrUnsafe) {
				t.Fatalf("ReadManifest: %v", err)
			}
		})
	}
	snap := filepath.Join(t.TempDir(), "snap.db")
	b, _ := json.Marshal(Manifest{File: "snap.db"})
	if err := os.WriteFile(ManifestPath(snap), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadManifest(snap); err != nil {
		t.Fatal(err)
	}
}
