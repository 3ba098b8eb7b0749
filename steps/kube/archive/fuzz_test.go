package archive

import (
	"path/filepath"
	"strings"
	"testing"

	"planrun.dev/planrun/internal/safepath"
)

// FuzzParseManifest: no manifest makes the decoder panic, and every manifest it accepts names
// only files that stay inside the backup folder.
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(manifestWith("resources/configmaps/a.jsonl")))
	f.Add([]byte(manifestWith("resources/deployments.apps/_cluster.jsonl")))
	f.Add([]byte(manifestWith("../x")))
	f.Add([]byte(manifestWith("resources/a/../../x")))
	f.Add([]byte(manifestWith("/etc/passwd")))
	f.Add([]byte(`{"version": 1, "resources": [{"files": [{"path": "resources/a\\u0000b"}, {"path": "resources/b"}]}]}`))
	f.Add([]byte(`{"version": 1, "resources": null}`))
	f.Add([]byte(`{"version": 2}`))
	f.Add([]byte(`[]`))
	dir := filepath.Join(f.TempDir(), "backup")
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		for _, r := range m.Resources {
			for _, file := range r.Files {
				if err := safepath.Rel("backup entry", file.Path); err != nil {
					t.Fatalf("accepted an unsafe path: %v", err)
				}
				if !strings.HasPrefix(file.Path, ResourcesDir+"/") {
					t.Fatalf("accepted %q outside %s/", file.Path, ResourcesDir)
				}
				rel, err := filepath.Rel(dir, filepath.Join(dir, filepath.FromSlash(file.Path)))
				if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) || filepath.IsAbs(rel) {
					t.Fatalf("accepted %q, which resolves to %q outside the folder", file.Path, rel)
				}
			}
		}
	})
}
