package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/progressfmt"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestCLIExitCodesAndMessages(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: b}\nsteps:\n  - {id: a, type: exec, with: {comand: [true]}}\n"), 0o644)
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: g}\nparams:\n  n: {type: int, required: true}\nsteps:\n  - {id: a, type: assert, with: {that: params.n == 2}}\n"), 0o644)
	state := filepath.Join(dir, "runs")

	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"unknown command", []string{"frobnicate"}, exitUsage, "", `unknown command "frobnicate"`},
		{"unknown flag", []string{"apply", "--frob"}, exitUsage, "", "unknown flag: --frob"},
		{"invalid plan", []string{"validate", bad}, exitUsage, "", bad + `:5:32: step "a": with: unknown field "comand"`},
		{"valid plan", []string{"validate", good}, exitOK, "good.yaml: ok (plan g v0, 1 steps", ""},
		{"missing required param", []string{"apply", good, "--state-dir", state}, exitUsage, "", `param "n" is required`},
		{"bad --set", []string{"apply", good, "--set", "n=two", "--state-dir", state}, exitUsage, "", `--set n=two: expected an integer`},
		{"failed run", []string{"apply", good, "--set", "n=3", "--state-dir", state, "--run-id", "fail"}, exitRunFailed, "failed and was rolled back", "assertion failed: params.n == 2"},
		{"good run", []string{"apply", good, "--set", "n=2", "--state-dir", state, "--run-id", "ok"}, exitOK, "run ok succeeded", ""},
		{"resume a finished run", []string{"resume", "ok", "--state-dir", state}, exitRunFailed, "", "already succeeded"},
		{"unknown run", []string{"status", "nope", "--state-dir", state}, exitRunFailed, "", "run not found: nope"},
		{"bad output format", []string{"runs", "-o", "xml", "--state-dir", state}, exitUsage, "", "unknown output format"},
		{"runs", []string{"runs", "--state-dir", state}, exitOK, "ok ", ""},
		{"-n without a namespace param", []string{"apply", good, "-n", "x", "--set", "n=2", "--state-dir", state}, exitUsage, "", `the plan has no param "namespace"`},
		{"status", []string{"status", "ok", "--state-dir", state}, exitOK, "Status:    Succeeded", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdout, stdout)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr)
			}
			if strings.Count(strings.TrimSpace(stderr), "\n") > 0 && tc.code != exitUsage {
				t.Errorf("error is not one line:\n%s", stderr)
			}
		})
	}

	code, stdout, _ := runCLI(t, "status", "ok", "-o", "json", "--state-dir", state)
	var j engine.Journal
	if code != 0 || json.Unmarshal([]byte(stdout), &j) != nil || j.Status != engine.RunSucceeded || j.Step("a").Status != engine.StepSucceeded {
		t.Fatalf("status -o json: %d %s", code, stdout)
	}
}

func TestFormatProgress(t *testing.T) {
	cases := []struct {
		p       engine.Progress
		elapsed time.Duration
		done    int64
		bytes   int64
		want    string
	}{
		{engine.Progress{Done: 5000, Total: 10000, Bytes: 5 << 20, Unit: "objects"}, 5 * time.Second, 5000, 5 << 20,
			"  restore [############------------] 5000/10000 objects (50%) 5.0 MiB 1000/s ETA 5s"},
		{engine.Progress{Done: 42, Unit: "keys"}, 0, 0, 0, "  restore 42 keys"},
		{engine.Progress{Done: 10, Total: 10}, 2 * time.Second, 10, 0, "  restore [########################] 10/10 items (100%) 5/s"},
		// Known bytes: the bar, the rate and the ETA follow them, not the file count.
		{engine.Progress{Done: 120, Total: 130, Bytes: 256 << 20, TotalBytes: 1 << 30, Unit: "files"}, 4 * time.Second, 120, 256 << 20,
			"  restore [######------------------] 256.0 MiB/1.0 GiB (25%) 120/130 files 64.0 MiB/s ETA 12s"},
		{engine.Progress{Done: 3, Bytes: 1 << 20, TotalBytes: 1 << 20, Unit: "files"}, 2 * time.Second, 3, 1 << 20,
			"  restore [########################] 1.0 MiB/1.0 MiB (100%) 3 files 512.0 KiB/s"},
	}
	for _, tc := range cases {
		if got := formatProgress("restore", progressfmt.Describe(&tc.p, tc.elapsed, tc.done, tc.bytes)); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
}

func TestLineRendererThrottlesProgressInPipes(t *testing.T) {
	var buf bytes.Buffer
	r := newRenderer(&buf, false)
	start := time.Now()
	for i := 0; i <= 1000; i++ {
		r.Observe(engine.Event{Type: engine.EventStepProgress, StepID: "copy", Time: start.Add(time.Duration(i) * 100 * time.Millisecond),
			Progress: &engine.Progress{Done: int64(i), Total: 1000}})
	}
	lines := strings.Count(buf.String(), "\n")
	// 100 s of progress at one line per 10 s, plus the final 100%.
	if lines < 10 || lines > 12 {
		t.Fatalf("%d progress lines for 100 s of progress:\n%s", lines, buf.String())
	}
	if strings.Contains(buf.String(), "\r") {
		t.Fatal("a pipe got a redrawn bar")
	}
}

func TestFormatEventSucceeded(t *testing.T) {
	cases := []struct {
		name    string
		outputs engine.Outputs
		want    string
	}{
		{"plain", engine.Outputs{"count": 3}, "✔ copy done in 2s"},
		{"summary", engine.Outputs{"summary": "1 volume: 13 MiB in 6 files; 3.0 MiB uploaded, 13 MiB written"},
			"✔ copy done in 2s: 1 volume: 13 MiB in 6 files; 3.0 MiB uploaded, 13 MiB written"},
		{"empty summary", engine.Outputs{"summary": ""}, "✔ copy done in 2s"},
		{"dry run", engine.Outputs{"dryRun": true, "summary": "x"}, "✔ copy dry run: not applied"},
	}
	for _, tc := range cases {
		e := engine.Event{Type: engine.EventStepSucceeded, StepID: "copy", Elapsed: engine.Duration(2 * time.Second), Outputs: tc.outputs}
		if got := formatEvent(e); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
