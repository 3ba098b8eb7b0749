//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestValidateInputs: planrun validate reaches the engine's checks of what it reads (special
// files, second documents, reads of later steps, undeclared clusters): one line per problem,
// exit code 2, no hang.
func TestValidateInputs(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	header := "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: v}\n"
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(header+body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	later := write("later.yaml", "steps:\n  - {id: a, type: assert, with: {that: 'steps.b.status == \"Succeeded\"'}}\n  - {id: b, type: assert, with: {that: 'true'}}\n")
	cluster := write("cluster.yaml", "clusters: {main: {}}\nsteps:\n  - {id: a, type: kube.get, with: {cluster: mian, apiVersion: v1, kind: Namespace, name: x}}\n")
	twoDocs := write("two.yaml", "steps: [{id: a, type: assert, with: {that: 'true'}}]\n---\nsteps: []\n")
	for _, tc := range []struct {
		name, path, want string
	}{
		{"fifo", fifo, fifo + ": cannot read plan: it is a named pipe (FIFO), not a file"},
		{"zero device", "/dev/zero", "/dev/zero: cannot read plan: it is a character device, not a file"},
		{"directory", dir, dir + ": cannot read plan: it is a directory, not a file"},
		{"later step", later, later + `:5:`},
		{"undeclared cluster", cluster, cluster + `:6:45: cluster "mian" is not one of the plan's clusters (main)`},
		{"second document", twoDocs, twoDocs + ":5:1: a second YAML document starts here; a plan holds one document"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, "validate", tc.path)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, exitUsage, tc.want)
			}
			if lines := strings.Count(strings.TrimSpace(stderr), "\n") + 1; lines > 2 {
				t.Errorf("%d lines of errors: %q", lines, stderr)
			}
		})
	}
}
