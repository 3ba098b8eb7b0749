package main

import (
	"os"
	"os/exec"
	"path/filepath"
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

// bashCompletionShims stand in for the bash-completion package when it is not installed: the
// script of planrun completion bash calls its _get_comp_words_by_ref and _filedir. They are the
// plain cases only (no quoting, no word breaks), which is what these tests type.
const bashCompletionShims = `
_get_comp_words_by_ref() {
	cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cword=$COMP_CWORD
	words=("${COMP_WORDS[@]}")
}
_filedir() {
	local IFS=$'\n' exts=${1%|}
	COMPREPLY+=($(compgen -d -- "$cur"))
	COMPREPLY+=($(compgen -f -X "!*.@($exts)" -- "$cur"))
}
`

// TestBashCompletion sources planrun completion bash into a real bash and completes command
// lines as bash does on a TAB: COMP_WORDS and the rest set, the function the script registered
// for planrun called, COMPREPLY read. planrun is the binary, found on the PATH.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(planrunBin, filepath.Join(bin, "planrun")); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(filepath.Join(work, "plans"), 0o755); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "runs")
	plan := writePlan(t, work, "plan.yaml", "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: tiny}\nsteps:\n  - {id: check, type: assert, with: {that: 'true'}}\n  - {id: confirm, type: assert, with: {that: 'true'}}\n")
	writePlan(t, work, "other.yml", "")
	writePlan(t, work, "notes.txt", "")
	for _, id := range []string{"first-run", "second-run"} {
		if code, _, stderr := runCLI(t, "apply", plan, "--run-id", id, "--state-dir", state); code != exitOK {
			t.Fatalf("apply: exit %d: %s", code, stderr)
		}
	}
	_, script, _ := runCLI(t, "completion", "bash")
	scriptFile := filepath.Join(dir, "planrun.bash")
	if err := os.WriteFile(scriptFile, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	// The words of the command line are the arguments of the bash script: the last one is the
	// word being completed ("" after a space).
	const driver = `
shopt -s extglob
if [[ -r /usr/share/bash-completion/bash_completion ]]; then
	source /usr/share/bash-completion/bash_completion
else
	eval "$PLANRUN_TEST_SHIMS"
fi
source "$PLANRUN_TEST_SCRIPT" || exit 1
COMP_WORDS=("$@")
COMP_CWORD=$(($# - 1))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
COMP_TYPE=9
fn=$(complete -p planrun | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
"$fn" planrun "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}" 2>/dev/null
printf '%s\n' "${COMPREPLY[@]}"
`
	complete := func(t *testing.T, words ...string) []string {
		t.Helper()
		cmd := exec.Command(bash, append([]string{"--norc", "--noprofile", "-c", driver, "bash"}, words...)...)
		cmd.Dir = work
		cmd.Env = append(os.Environ(),
			"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
			"PLANRUN_TEST_SCRIPT="+scriptFile,
			"PLANRUN_TEST_SHIMS="+bashCompletionShims,
			"PLANRUN_STATE_DIR=", "PLANRUN_STATE=",
			"COLUMNS=120",
		)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("bash: %v\n%s", err, out)
		}
		return strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	}
	for _, tc := range []struct {
		name  string
		words []string
		want  []string // the first word of each line of COMPREPLY, sorted
		desc  string   // in every line, when set
	}{
		{"commands", []string{"planrun", "ap"}, []string{"apply"}, ""},
		{"commands by prefix", []string{"planrun", "r"}, []string{"rbac", "resume", "rollback", "runner", "runs"}, ""},
		{"run ids", []string{"planrun", "status", "--state-dir", state, ""}, []string{"first-run", "second-run"}, "(Succeeded, plan tiny)"},
		{"run ids, --state-dir before the command", []string{"planrun", "--state-dir", state, "rollback", ""}, []string{"first-run", "second-run"}, ""},
		{"a run id by prefix", []string{"planrun", "resume", "--state-dir", state, "sec"}, []string{"second-run"}, ""},
		{"run ids of logs", []string{"planrun", "logs", "--state-dir", state, ""}, []string{"first-run", "second-run"}, ""},
		{"step ids", []string{"planrun", "logs", "first-run", "--state-dir", state, ""}, []string{"check", "confirm"}, "(Succeeded)"},
		{"step ids by prefix", []string{"planrun", "logs", "--state-dir", state, "first-run", "con"}, []string{"confirm"}, ""},
		{"nothing after the step", []string{"planrun", "logs", "--state-dir", state, "first-run", "check", ""}, []string{""}, ""},
		{"a state folder that is not one", []string{"planrun", "status", "--state-dir", plan, ""}, []string{""}, ""},
		{"plan files", []string{"planrun", "apply", ""}, []string{"other.yml", "plan.yaml", "plans"}, ""},
		{"plan files of validate", []string{"planrun", "validate", "plan.yaml", "o"}, []string{"other.yml"}, ""},
		{"fleet verbs", []string{"planrun", "fleet", "p"}, []string{"pause"}, ""},
		{"shells", []string{"planrun", "completion", ""}, []string{"bash", "fish", "powershell", "zsh"}, ""},
		{"output formats", []string{"planrun", "runs", "-o", ""}, []string{"json", "text"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := complete(t, tc.words...)
			var got []string
			for _, l := range lines {
				first, _, _ := strings.Cut(l, " ")
				got = append(got, strings.TrimSuffix(first, "/"))
				if tc.desc != "" && !strings.Contains(l, tc.desc) {
					t.Errorf("%q lacks its description %q", l, tc.desc)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("planrun %s<TAB>: %q, want %q", strings.Join(tc.words[1:], " "), lines, tc.want)
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
