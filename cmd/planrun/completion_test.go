package main

import (
	"slices"
	"strings"
	"testing"
)

// TestCompletionScripts: planrun completion SHELL prints a script for each shell it names, and
// any other word is a usage error of one line.
func TestCompletionScripts(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{[]string{"bash"}, exitOK, "complete -o default -F __start_planrun planrun", ""},
		{[]string{"zsh"}, exitOK, "#compdef planrun", ""},
		{[]string{"fish"}, exitOK, "complete -c planrun ", ""},
		{[]string{"powershell"}, exitOK, "Register-ArgumentCompleter -CommandName 'planrun'", ""},
		{[]string{"nope"}, exitUsage, "", "planrun completion: unknown shell \"nope\" (bash, zsh, fish, powershell)\n"},
		{[]string{"zhs"}, exitUsage, "", "planrun completion: unknown shell \"zhs\": did you mean \"zsh\"?\n"},
		{nil, exitUsage, "", "planrun completion: completion takes one shell: bash, zsh, fish, powershell\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, append([]string{"completion"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stdout, tc.stdout) || stderr != tc.stderr {
				t.Errorf("exit %d, stderr %q, stdout:\n%.300s\nwant exit %d, stdout with %q, stderr %q", code, stderr, stdout, tc.code, tc.stdout, tc.stderr)
			}
			if tc.code == exitOK && !strings.Contains(stdout, "__complete") {
				t.Errorf("the script does not ask planrun __complete:\n%.300s", stdout)
			}
		})
	}
}

// TestCommandLine: installed (or linked) as kubectl_complete-planrun, planrun answers kubectl's
// requests to complete kubectl planrun …, as planrun __complete does.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		argv, want []string
	}{
		{[]string{"/usr/local/bin/planrun", "status", "-w"}, []string{"status", "-w"}},
		{[]string{"kubectl-planrun", "apply"}, []string{"apply"}},
		{[]string{"/usr/local/bin/kubectl_complete-planrun", "status", ""}, []string{"__complete", "status", ""}},
		{[]string{"C:/bin/kubectl_complete-planrun.exe", "ap"}, []string{"__complete", "ap"}},
	} {
		if got := commandLine(tc.argv); !slices.Equal(got, tc.want) {
			t.Errorf("commandLine(%q) = %q, want %q", tc.argv, got, tc.want)
		}
	}
}
