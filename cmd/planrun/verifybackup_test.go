package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/storage"
)

func TestVerifyBackupCommand(t *testing.T) {
	dir := t.TempDir()
	loc := storage.OpenLocal(dir)
	ctx := t.Context()
	m := &archive.Manifest{}
	for _, res := range []string{"configmaps", "secrets"} {
		w, err := archive.Create(ctx, loc, archive.None, "", res, "ns")
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(`{"apiVersion":"v1","kind":"X","metadata":{"name":"a","namespace":"ns"}}`))
		f, err := w.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		m.Resources = append(m.Resources, archive.Resource{Version: "v1", Resource: res, Namespaced: true, Count: 1, Files: []archive.File{f}})
		m.Objects++
		m.Bytes += f.Bytes
	}
	if err := archive.WriteManifest(ctx, loc, m); err != nil {
		t.Fatal(err)
	}

	code, stdout, stderr := runCLI(t, "verify-backup", dir)
	if code != exitOK || stdout != dir+": ok (2 files, 2 objects, "+strconv.FormatInt(m.Bytes, 10)+" bytes)\n" || stderr != "" {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, "verify-backup", dir, "-o", "json")
	if code != exitOK || !strings.Contains(stdout, `"objects": 2`) {
		t.Fatalf("exit %d, stdout %s", code, stdout)
	}

	p := filepath.Join(dir, "resources/secrets/ns.jsonl")
	b, _ := os.ReadFile(p)
	b[5] = 'Z'
	os.WriteFile(p, b, 0o600)
	code, stdout, stderr = runCLI(t, "verify-backup", dir)
	want := "planrun verify-backup: backup " + dir + " is damaged (1 problems): resources/secrets/ns.jsonl: sha256 "
	if code != exitRunFailed || stdout != "" || !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s\nwant prefix %q", code, stdout, stderr, want)
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"verify-backup"}, exitUsage, "verify-backup takes one argument: the backup location (a folder or a URL)"},
		{[]string{"verify-backup", t.TempDir()}, exitRunFailed, "is not a complete backup: no manifest.json"},
	} {
		code, _, stderr := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %s", tc.args, code, stderr)
		}
	}
}
