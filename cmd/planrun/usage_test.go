package main

import (
	"io"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestUsage: the command line built from the table parses as planrun always has: help and
// usage exit 0, mistakes exit 2 with one line naming the command.
func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr string // the whole of stderr, when the exit is not 0
	}{
		{"no arguments", nil, exitOK, []string{"Usage: planrun COMMAND [flags]", "\n  apply          Start a run of a plan.\n", "\n  completion     Print the shell completion script"}, ""},
		{"help", []string{"help"}, exitOK, []string{"Commands:\n  apply ", "\n  runner  ", "\n  mover  ", "Run planrun COMMAND --help for its flags."}, ""},
		{"--help", []string{"--help"}, exitOK, []string{"Commands:\n  apply "}, ""},
		{"-h", []string{"-h"}, exitOK, []string{"Commands:\n  apply "}, ""},
		{"flags only", []string{"-v"}, exitOK, []string{"Commands:\n  apply "}, ""},
		{"help COMMAND", []string{"help", "logs"}, exitOK, []string{"Usage: planrun logs RUN [STEP] [-f]\n"}, ""},
		{"COMMAND --help", []string{"apply", "--help"}, exitOK, []string{"Usage: planrun apply PLAN.yaml [--set name=value]", "\nStart a run of a plan.\n", "\nFlags:\n", "      --dry-run ", "\nGlobal flags:\n", "      --state-dir string "}, ""},
		{"a typo", []string{"aply"}, exitUsage, nil, "planrun: unknown command \"aply\": did you mean \"apply\"? (run planrun help)\n"},
		{"a typo before a bad flag", []string{"aply", "--frob"}, exitUsage, nil, "planrun: unknown command \"aply\": did you mean \"apply\"? (run planrun help)\n"},
		{"a typo after a flag", []string{"-v", "aply"}, exitUsage, nil, "planrun: unknown command \"aply\": did you mean \"apply\"? (run planrun help)\n"},
		{"an unknown command", []string{"frobnicate"}, exitUsage, nil, "planrun: unknown command \"frobnicate\" (run planrun help)\n"},
		{"an unknown flag", []string{"--frob"}, exitUsage, nil, "planrun: unknown flag: --frob\n"},
		{"an unknown flag of a command", []string{"status", "--frob"}, exitUsage, nil, "planrun status: unknown flag: --frob\n"},
		{"a bad flag value", []string{"apply", "p.yaml", "--parallel", "x"}, exitUsage, nil, "planrun apply: invalid argument \"x\" for \"--parallel\" flag: strconv.ParseInt: parsing \"x\": invalid syntax\n"},
		{"a flag without its value", []string{"status", "--state-dir"}, exitUsage, nil, "planrun status: flag needs an argument: --state-dir\n"},
		{"a fleet verb typo", []string{"fleet", "pase", "x", "--state-dir", t.TempDir()}, exitUsage, nil, "planrun fleet: fleet pase: unknown; did you mean fleet pause?\n"},
		{"an argument too many", []string{"version", "extra"}, exitUsage, nil, "planrun version: version takes no arguments\n"},
		{"global flags before the command", []string{"--state-dir", t.TempDir(), "-o", "json", "runs"}, exitOK, []string{"[]"}, ""},
	} {
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
			if stderr != tc.stderr {
				t.Errorf("stderr %q, want %q", stderr, tc.stderr)
			}
		})
	}
}

// TestHelpOfEveryCommand: every command of the table, the ones added later too, has its --help:
// its usage line and summary, listed in planrun help.
func TestHelpOfEveryCommand(t *testing.T) {
	_, usage, _ := runCLI(t, "help")
	for _, c := range commands {
		code, stdout, stderr := runCLI(t, c.name, "--help")
		want := strings.TrimSpace("Usage: planrun "+c.name+" "+c.usage) + "\n\n" + c.summary + "\n"
		if code != exitOK || !strings.HasPrefix(stdout, want) || stderr != "" {
			t.Errorf("%s --help: exit %d, stdout starts %q, want %q; stderr %q", c.name, code, stdout[:min(len(stdout), len(want))], want, stderr)
		}
		if !strings.Contains(usage, "\n  "+c.name+" ") || !strings.Contains(usage, "  "+c.summary+"\n") {
			t.Errorf("planrun help does not list %s:\n%s", c.name, usage)
		}
	}
}

// TestFlagsKeepTheirDefaults: the commands' flags are parsed into one app, so two commands
// binding the same field with different defaults would give one of them the other's default.
func TestFlagsKeepTheirDefaults(t *testing.T) {
	root := newRootCommand(&app{stdout: io.Discard, stderr: io.Discard})
	for _, cmd := range append(root.Commands(), root) {
		cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if got := f.Value.String(); got != f.DefValue {
				t.Errorf("planrun %s --%s: default %q, but its variable holds %q: another flag sets it", cmd.Name(), f.Name, f.DefValue, got)
			}
		})
	}
}
