package exec_test

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
	_ "planrun.dev/planrun/steps"
)

// runPlan applies a one-step plan and returns the journal, the error and the run folder.
func runPlan(t *testing.T, with string, dryRun bool) (*engine.Journal, error, string) {
	t.Helper()
	dir := t.TempDir()
	plan := filepath.Join(dir, "plan.yaml")
	src := "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: x}\nparams:\n  word: {default: hi}\nsteps:\n  - id: cmd\n    type: exec\n    with: " + with + "\n"
	if err := os.WriteFile(plan, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := engine.Load(plan, engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	store := engine.NewDirStore(filepath.Join(dir, "runs"))
	r := &engine.Runner{Store: store, NoRollback: true}
	j, err := r.Apply(context.Background(), p, engine.ApplyOptions{RunID: "r", DryRun: dryRun})
	return j, err, filepath.Join(store.Root, "r")
}

func TestExec(t *testing.T) {
	work := t.TempDir()
	cases := []struct {
		name    string
		with    string
		outputs map[string]any
		err     string
		stdout  string
		stderr  string
	}{
		{name: "outputs from the last line", with: `{command: [sh, -c, 'echo starting; echo "{\"a\": 1, \"b\": [\"x\"]}"']}`,
			outputs: map[string]any{"a": 1, "b": []any{"x"}}, stdout: "starting"},
		{name: "no JSON means no outputs", with: `{command: [echo, plain text]}`, outputs: map[string]any{}, stdout: "plain text"},
		{name: "args keep spaces and templates", with: `{command: [sh, -c, 'printf "{\"arg\": \"%s\"}\n" "$0"', "${{ params.word }} there"]}`,
			outputs: map[string]any{"arg": "hi there"}},
		{name: "env", with: `{command: [sh, -c, 'echo "{\"v\": \"$V\", \"step\": \"$PLANRUN_STEP_ID\"}"'], env: {V: "from env"}}`,
			outputs: map[string]any{"v": "from env", "step": "cmd"}},
		{name: "working dir", with: `{command: [sh, -c, 'echo "{\"pwd\": \"$(pwd)\"}"'], dir: "` + work + `"}`,
			outputs: map[string]any{"pwd": work}},
		{name: "stdin", with: `{command: [cat], stdin: '{"in": true}'}`, outputs: map[string]any{"in": true}},
		{name: "exit status and stderr in the error", with: `{command: [sh, -c, 'echo doomed >&2; exit 3']}`,
			err: "sh exited with status 3: doomed", stderr: "doomed"},
		{name: "timeout", with: `{command: [sleep, "30"], timeout: 100ms}`, err: "sleep: stopped (context deadline exceeded)"},
		{name: "missing program", with: `{command: [/nonexistent/tool]}`, err: "cannot run /nonexistent/tool"},
		{name: "broken JSON", with: `{command: [echo, '{"a": ']}`, err: "looks like a JSON object but is not one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j, err, runDir := runPlan(t, tc.with, false)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if tc.outputs != nil {
				if got := map[string]any(j.Step("cmd").Outputs); !reflect.DeepEqual(got, tc.outputs) {
					t.Fatalf("outputs %#v, want %#v", got, tc.outputs)
				}
			}
			for name, want := range map[string]string{"stdout.log": tc.stdout, "stderr.log": tc.stderr} {
				b, err := os.ReadFile(filepath.Join(runDir, "steps", "cmd", name))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if !strings.Contains(string(b), "--- attempt 1") || !strings.Contains(string(b), want) {
					t.Errorf("%s = %q, want it to hold %q", name, b, want)
				}
			}
		})
	}
}

func TestExecTempFailIsRetried(t *testing.T) {
	dir := t.TempDir()
	counter := filepath.Join(dir, "n")
	// Exit 75 (EX_TEMPFAIL) the first time, succeed the second.
	j, err, _ := runPlan(t, `{command: [sh, -c, 'if [ -f "$0" ]; then echo "{\"ok\": true}"; else touch "$0"; exit 75; fi', "`+counter+`"]}
    retry: {attempts: 2, backoff: 1ms}`, false)
	if err != nil {
		t.Fatal(err)
	}
	if j.Step("cmd").Attempts != 2 {
		t.Fatalf("attempts %d", j.Step("cmd").Attempts)
	}
}

func TestExecDryRun(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "m")
	j, err, _ := runPlan(t, `{command: [touch, "`+marker+`"]}`, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a dry run ran the command")
	}
	if j.Step("cmd").Outputs["dryRun"] != true {
		t.Fatalf("outputs %v", j.Step("cmd").Outputs)
	}
}
