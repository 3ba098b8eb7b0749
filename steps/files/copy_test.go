package files

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/steps/storage"
)

// lastProgress is the last progress event of the step "s" in the last run of apply.
var lastProgress engine.Progress

func apply(t testing.TB, body string, dryRun bool) (*engine.Journal, error) {
	t.Helper()
	r := plantest.Apply(t, body, plantest.Options{DryRun: dryRun, NoRollback: true, Timeout: 2 * time.Minute})
	lastProgress = r.Progress["s"]
	return r.Journal, r.Err
}

func copyPlan(from, to, extra string) string {
	return fmt.Sprintf("steps:\n  - {id: s, type: files.copy, with: {from: %q, to: %q%s}}\n", from, to, extra)
}

func run(t testing.TB, from, to, extra string, dryRun bool) engine.Outputs {
	t.Helper()
	j, err := apply(t, copyPlan(from, to, extra), dryRun)
	if err != nil {
		t.Fatal(err)
	}
	return j.Step("s").Outputs
}

func counts(t testing.TB, out engine.Outputs, files, copied, skipped int64) {
	t.Helper()
	key := "copied"
	if out["dryRun"] == true {
		key = "wouldCopy"
	}
	if plantest.Num(t, out, "files") != files || plantest.Num(t, out, key) != copied || plantest.Num(t, out, "skipped") != skipped {
		t.Fatalf("files/%s/skipped = %v/%v/%v, want %d/%d/%d", key, out["files"], out[key], out["skipped"], files, copied, skipped)
	}
}

func write(t testing.TB, name, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}

// source makes a backup-like tree: nested folders, a secret file, a private folder, a big file.
func source(t testing.TB) string {
	dir := filepath.Join(t.TempDir(), "backup")
	write(t, filepath.Join(dir, "manifest.json"), `{"a":1}`, 0o644)
	write(t, filepath.Join(dir, "resources", "v1", "configmaps", "ns1.json"), "cm1", 0o644)
	write(t, filepath.Join(dir, "resources", "v1", "configmaps", "ns2.json"), "cm2", 0o644)
	write(t, filepath.Join(dir, "resources", "v1", "secrets", "ns1.json"), "secret!", 0o600)
	write(t, filepath.Join(dir, "big.bin"), strings.Repeat("0123456789abcdef", 64<<10), 0o644)
	write(t, filepath.Join(dir, "empty"), "", 0o644)
	if err := os.MkdirAll(filepath.Join(dir, "private", "deeper"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "private"), 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "private", "deeper", "key.pem"), "KEY", 0o600)
	return dir
}

// sameTree fails unless every file of a is in b with the same bytes and mode, and b holds
// nothing else (no leftovers).
func sameTree(t testing.TB, a, b string) {
	t.Helper()
	seen := map[string]bool{}
	err := filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		seen[rel] = true
		ia, _ := os.Stat(p)
		ib, err := os.Stat(filepath.Join(b, rel))
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		if ia.IsDir() != ib.IsDir() {
			t.Fatalf("%s: dir %v, want %v", rel, ib.IsDir(), ia.IsDir())
		}
		if !ia.IsDir() {
			if ia.Mode().Perm() != ib.Mode().Perm() {
				t.Errorf("%s: mode %v, want %v", rel, ib.Mode().Perm(), ia.Mode().Perm())
			}
			x, _ := os.ReadFile(p)
			y, _ := os.ReadFile(filepath.Join(b, rel))
			if !bytes.Equal(x, y) {
				t.Errorf("%s: content differs", rel)
			}
		} else if rel != "." && ia.Mode().Perm() == 0o700 && ib.Mode().Perm() != 0o700 {
			t.Errorf("%s: folder mode %v, want 0700", rel, ib.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(b, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(b, p)
		if !seen[rel] {
			t.Errorf("unexpected %s in the destination", rel)
		}
		return nil
	})
}

func TestCopyFolder(t *testing.T) {
	src := source(t)
	dst := filepath.Join(t.TempDir(), "dest", "backup")

	out := run(t, src, dst, "", false)
	counts(t, out, 7, 7, 0)
	sameTree(t, src, dst)
	if p := lastProgress; p.Done != 7 || p.Total != 7 || p.Bytes != plantest.Num(t, out, "bytes") || p.Unit != "files" {
		t.Fatalf("last progress %+v", p)
	}
	if plantest.Num(t, out, "bytes") != plantest.Num(t, out, "copiedBytes") || plantest.Num(t, out, "bytes") != 1<<20+3+3+7+7+3 {
		t.Fatalf("bytes %v copiedBytes %v", out["bytes"], out["copiedBytes"])
	}
	man := out["manifest"].([]any)
	if len(man) != 7 {
		t.Fatalf("manifest %v", man)
	}
	for _, e := range man {
		m := e.(map[string]any)
		b, _ := os.ReadFile(filepath.Join(src, filepath.FromSlash(m["path"].(string))))
		s := sha256.Sum256(b)
		if m["sha256"] != hex.EncodeToString(s[:]) || m["copied"] != true {
			t.Fatalf("manifest entry %v", m)
		}
		if m["path"] == "resources/v1/secrets/ns1.json" && m["mode"] != "0600" {
			t.Fatalf("secret mode in manifest %v", m)
		}
	}

	// Second run: everything is there and equal.
	out = run(t, src, dst, ", workers: 2", false)
	counts(t, out, 7, 0, 7)
	if plantest.Num(t, out, "copiedBytes") != 0 {
		t.Fatalf("copiedBytes %v on a second run", out["copiedBytes"])
	}

	// A changed source file (same size), a truncated destination file, a destination file
	// with the wrong mode, and an interrupted copy's leftover are all repaired.
	write(t, filepath.Join(src, "resources", "v1", "configmaps", "ns1.json"), "CM1", 0o644)
	big := filepath.Join(dst, "big.bin")
	if err := os.Truncate(big, 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dst, "manifest.json"), 0o666); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dst, "resources", ".ns9.json"+storage.PartSuffix), "half", 0o600)
	write(t, filepath.Join(src, "resources", ".other.json"+storage.PartSuffix), "half", 0o600) // never copied
	out = run(t, src, dst, "", false)
	counts(t, out, 7, 3, 4)
	if err := os.Remove(filepath.Join(src, "resources", ".other.json"+storage.PartSuffix)); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dst, "resources", ".ns9.json"+storage.PartSuffix)); err != nil {
		t.Fatal(err)
	}
	sameTree(t, src, dst)
	copied := map[string]bool{}
	for _, e := range out["manifest"].([]any) {
		m := e.(map[string]any)
		copied[m["path"].(string)] = m["copied"].(bool)
	}
	for _, p := range []string{"big.bin", "manifest.json", "resources/v1/configmaps/ns1.json"} {
		if !copied[p] {
			t.Errorf("%s not recopied: %v", p, copied)
		}
	}
}

func TestCopyDryRun(t *testing.T) {
	src := source(t)
	dst := filepath.Join(t.TempDir(), "dest")
	out := run(t, src, dst, "", true)
	counts(t, out, 7, 7, 0)
	if out["dryRun"] != true {
		t.Fatalf("outputs %v", out)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Fatalf("dry run created the destination: %v", err)
	}

	// With part of it copied, the dry run says what is left and changes nothing.
	run(t, src, dst, "", false)
	write(t, filepath.Join(src, "manifest.json"), `{"a":2}`, 0o644)
	before, _ := os.ReadFile(filepath.Join(dst, "manifest.json"))
	out = run(t, src, dst, "", true)
	counts(t, out, 7, 1, 6)
	after, _ := os.ReadFile(filepath.Join(dst, "manifest.json"))
	if !bytes.Equal(before, after) {
		t.Fatal("dry run changed the destination")
	}
}

func TestCopySnapshotFiles(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "snap.db"), "snapshot", 0o600)
	write(t, filepath.Join(dir, "snap.db.manifest.json"), "{}", 0o600)
	write(t, filepath.Join(dir, "other.db"), "other", 0o600)
	write(t, filepath.Join(dir, "sub", "snap.db"), "nested", 0o600)

	t.Run("file", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "to")
		out := run(t, filepath.Join(dir, "snap.db"), "file://"+dst, "", false)
		counts(t, out, 1, 1, 0)
		b, err := os.ReadFile(filepath.Join(dst, "snap.db"))
		if err != nil || string(b) != "snapshot" {
			t.Fatalf("%q %v", b, err)
		}
		if out["to"] != dst {
			t.Fatalf("to %v", out["to"])
		}
	})
	t.Run("include", func(t *testing.T) {
		dst := t.TempDir()
		out := run(t, dir, dst, `, include: ["snap.db*"]`, false)
		counts(t, out, 3, 3, 0) // snap.db, its manifest, sub/snap.db
		out = run(t, dir, dst, `, include: ["snap.db", "snap.db.manifest.json"]`, false)
		counts(t, out, 3, 0, 3)
		out = run(t, dir, dst, `, include: ["sub/*"]`, false)
		counts(t, out, 1, 0, 1)
		if _, err := os.Stat(filepath.Join(dst, "other.db")); !os.IsNotExist(err) {
			t.Fatalf("other.db copied: %v", err)
		}
	})
}

func TestCopyErrors(t *testing.T) {
	src := source(t)
	dir := t.TempDir()
	write(t, filepath.Join(dir, "file"), "x", 0o644)
	write(t, filepath.Join(dir, "conflict", "big.bin", "x"), "x", 0o644)
	for _, tc := range []struct {
		name, from, to, extra string
		load                  bool // a load error, not a run error
		want                  string
	}{
		{"unsupported scheme", src, "ftp://bucket/backups", "", true,
			`step "s": with: to: ftp://bucket/backups: scheme ftp:// is not supported (use a plain path or one of file://, azblob://, gs://, s3://)`},
		{"unsupported source scheme", "sftp://b/x", dir, "", true, `step "s": with: from: sftp://b/x: scheme sftp:// is not supported`},
		{"credentials in the URL", "s3://key:secret@b/x", dir, "", true, `step "s": with: from: s3://REDACTED@b/x: a location URL must not hold credentials`},
		{"unsafe prefix", "s3://b/a/../x", dir, "", true, `step "s": with: from: s3://b/a/../x: prefix "a/../x"`},
		{"no bucket", "s3:///x", dir, "", true, `step "s": with: from: s3:///x: no bucket`},
		{"file URL with host", src, "file://host/x", "", true, `step "s": with: to: file://host/x: a file:// URL names a local path`},
		{"bad pattern", src, dir, `, include: ["[x"]`, true, `step "s": with: include[0]: bad pattern "[x"`},
		{"missing source", filepath.Join(dir, "nope"), dir, "", false,
			`step "s" failed: from: ` + filepath.Join(dir, "nope") + ` does not exist`},
		{"destination is a file", src, filepath.Join(dir, "file"), "", false,
			`step "s" failed: creating folder "" in ` + filepath.Join(dir, "file") + `: mkdir ` + filepath.Join(dir, "file") + `: not a directory`},
		{"folder in the way", src, filepath.Join(dir, "conflict"), "", false,
			`step "s" failed: copying "big.bin" from ` + src + ` to ` + filepath.Join(dir, "conflict") + `: the destination "big.bin" is a folder`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := copyPlan(tc.from, tc.to, tc.extra)
			var err error
			if tc.load {
				_, err = plantest.Load(t, body, plantest.Options{})
			} else {
				_, err = apply(t, body, false)
			}
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error on several lines: %q", msg)
			}
			if !strings.Contains(msg, tc.want) {
				t.Fatalf("error %q\nwant it to contain %q", msg, tc.want)
			}
		})
	}
}
