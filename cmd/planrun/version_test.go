package main

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"

	"planrun.dev/planrun/internal/version"
)

func TestVersionCommand(t *testing.T) {
	// What -ldflags -X sets in make build and in the planrun image.
	defer func(v, c string) { version.Version, version.Commit = v, c }(version.Version, version.Commit)
	version.Version, version.Commit = "v0.3.0-2-g1234567-dirty", "1234567890abcdef1234567890abcdef12345678"

	cases := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr string
	}{
		{"text", []string{"version"}, exitOK,
			[]string{"Version: v0.3.0-2-g1234567-dirty\n", "Commit:  1234567890abcdef1234567890abcdef12345678\n", "Go:      " + runtime.Version() + "\n"}, ""},
		{"json", []string{"version", "-o", "json"}, exitOK,
			[]string{`"version": "v0.3.0-2-g1234567-dirty"`, `"goVersion": "` + runtime.Version() + `"`, `"commit": "1234567890abcdef1234567890abcdef12345678"`}, ""},
		{"argument", []string{"version", "extra"}, exitUsage, nil, "planrun version: version takes no arguments"},
		{"bad output format", []string{"version", "-o", "yaml"}, exitUsage, nil, "-o yaml: unknown output format"},
		{"listed in help", []string{"help"}, exitOK, []string{"\n  version ", " Print planrun's version"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr)
			}
		})
	}

	// -o json is one object with exactly kubectl's three names, for scripts.
	_, stdout, _ := runCLI(t, "version", "-o", "json")
	var got map[string]string
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || len(got) != 3 || got["version"] == "" || got["goVersion"] == "" || got["commit"] == "" {
		t.Fatalf("version -o json: %v\n%s", err, stdout)
	}
}
