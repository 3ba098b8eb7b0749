package exec_test

import (
	"strings"
	"testing"
)

// TestExecErrors: a failing command's last stderr line is quoted with its control bytes
// escaped, a last stdout line too long to be read for outputs fails the step instead of giving
// empty outputs, and a missing working directory is named.
func TestExecErrors(t *testing.T) {
	for _, tc := range []struct {
		name, with, want string
	}{
		{
			name: "control bytes in stderr",
			with: `{command: [sh, -c, 'printf "x\033[31my\rz\007\n" >&2; exit 3']}`,
			want: `sh exited with status 3: x\x1b[31my\rz\a`,
		},
		{
			name: "invalid UTF-8 in stderr",
			with: `{command: [sh, -c, 'printf "caf\351\n" >&2; exit 3']}`,
			want: `sh exited with status 3: caf\xe9`,
		},
		{
			name: "long stderr line",
			with: `{command: [sh, -c, 'head -c 3000 /dev/zero | tr "\0" a >&2; printf "END\n" >&2; exit 3']}`,
			want: `sh exited with status 3: ...aaa`,
		},
		{
			name: "last stdout line over 64 KiB",
			with: `{command: [sh, -c, 'printf "{\"a\": \""; head -c 70000 /dev/zero | tr "\0" a; printf "\"}\n"']}`,
			want: `the last line of stdout is longer than 64 KiB`,
		},
		{
			name: "missing dir",
			with: `{command: ["true"], dir: /nonexistent/planrun-test}`,
			want: `dir "/nonexistent/planrun-test" does not exist`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err, _ := runPlan(t, tc.with, false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %.300q; want it to contain %q", err, tc.want)
			}
			if msg := err.Error(); strings.ContainsAny(msg, "\x1b\r\a") || len(msg) > 1000 {
				t.Errorf("raw control bytes or %d bytes in %q", len(msg), msg)
			}
		})
	}
}
