package archive

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteVerifyRead(t *testing.T) {
	dir := t.TempDir()
	m := &Manifest{Version: Version}
	for _, tc := range []struct{ group, resource, ns string }{{"", "secrets", "a"}, {"", "configmaps", "a"}, {"apps", "deployments", ""}} {
		w, err := Create(dir, tc.group, tc.resource, tc.ns)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if err := w.Write([]byte(`{"kind":"X","i":` + string(rune('0'+i)) + `}`)); err != nil {
				t.Fatal(err)
			}
		}
		f, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		m.Resources = append(m.Resources, Resource{Group: tc.group, Resource: tc.resource, Count: f.Count, Files: []File{f}})
		m.Objects += f.Count
		m.Bytes += f.Bytes
	}
	if err := WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "resources/secrets/a.jsonl"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secrets file mode %v %v", st.Mode(), err)
	}
	if st, _ := os.Stat(filepath.Join(dir, "resources/deployments.apps/_cluster.jsonl")); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", st.Mode())
	}
	res, err := Verify(dir, nil)
	if err != nil || res.Objects != 9 || res.Files != 3 {
		t.Fatalf("verify: %+v %v", res, err)
	}
	r, err := Open(dir, m.Resources[1].Files[0])
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for {
		line, err := r.Next()
		if err != nil {
			break
		}
		if !strings.HasPrefix(string(line), `{"kind":"X"`) {
			t.Fatalf("line %q", line)
		}
		n++
	}
	r.Close()
	if n != 3 {
		t.Fatalf("read %d objects", n)
	}

	// Damage one file: verify names it.
	p := filepath.Join(dir, "resources/configmaps/a.jsonl")
	b, _ := os.ReadFile(p)
	b[3] = 'Z'
	os.WriteFile(p, b, 0o644)
	os.Remove(filepath.Join(dir, "resources/secrets/a.jsonl"))
	_, err = Verify(dir, nil)
	if err == nil || !strings.Contains(err.Error(), "resources/configmaps/a.jsonl: sha256") || !strings.Contains(err.Error(), "resources/secrets/a.jsonl: lstat") || !strings.Contains(err.Error(), "2 problems") {
		t.Fatalf("verify of a damaged backup: %v", err)
	}
}

func TestIncompleteBackup(t *testing.T) {
	if _, err := ReadManifest(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a complete backup") {
		t.Fatalf("got %v", err)
	}
}
