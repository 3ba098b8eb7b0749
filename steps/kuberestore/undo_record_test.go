package kuberestore

import (
	"os"
	"path/filepath"
	"testing"
)

// A killed attempt may leave the last record half-written; the next attempt's records must start
// on lines of their own, so the torn line is cut and every complete one kept.
func TestDropTornLine(t *testing.T) {
	full := `{"version":"v1","resource":"namespaces","kind":"Namespace","name":"a","uid":"1"}` + "\n"
	for _, tc := range []struct{ name, in, want string }{
		{"missing file", "", ""},
		{"empty", "", ""},
		{"complete lines", full + full, full + full},
		{"torn last line", full + `{"version":"v1","r`, full},
		{"only a torn line", `{"version":"v1","r`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), RecordFile)
			if tc.name != "missing file" {
				if err := os.WriteFile(path, []byte(tc.in), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := dropTornLine(path); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(path)
			if tc.name == "missing file" {
				if !os.IsNotExist(err) {
					t.Fatalf("created the file: %v", err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %q (%v), want %q", got, err, tc.want)
			}
		})
	}
}
