package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
)

// planrunBin is the planrun binary built once for the tests that run it as a process.
var planrunBin string

func TestMain(m *testing.M) { plantest.MainWithPlanrun(m, ".", &planrunBin) }

// startRun starts planrun with -o json and kills it at kp (if set). It returns the exit status.
func startRun(t *testing.T, dir string, kp *plantest.KillPoint, args ...string) (exitCode int, killed bool) {
	return signalRun(t, dir, kp, syscall.SIGKILL, args...)
}

// signalRun is startRun with another signal than SIGKILL.
func signalRun(t *testing.T, dir string, kp *plantest.KillPoint, sig syscall.Signal, args ...string) (exitCode int, killed bool) {
	t.Helper()
	cmd := exec.Command(planrunBin, append(args, "-o", "json", "--state-dir", filepath.Join(dir, "runs"))...)
	cmd.Dir = dir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e engine.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("planrun -o json printed a line that is not an event: %q", sc.Text())
		}
		if kp != nil && !killed && kp.Matches(e) {
			time.Sleep(kp.Delay)
			_ = cmd.Process.Signal(sig)
			killed = true
		}
	}
	err = cmd.Wait()
	if killed && sig == syscall.SIGKILL {
		return -1, true
	}
	if ee, ok := err.(*exec.ExitError); ok {
		// Shown only if the test fails: what planrun said when it exited so.
		t.Logf("planrun %s exited %d: %s", strings.Join(args, " "), ee.ExitCode(), stderr.String())
		return ee.ExitCode(), false
	} else if err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		t.Logf("stderr: %s", stderr.String())
	}
	return 0, false
}

// endState reads what the plan left in out, checking that every file agrees on the nonce and
// replacing it, so that runs with different nonces compare equal.
func endState(t *testing.T, out string) map[string]string {
	t.Helper()
	state := map[string]string{}
	nonce := ""
	err := filepath.Walk(out, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(out, path)
		state[rel] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	prepared := strings.TrimSpace(state["prepared"])
	nonce = prepared
	if nonce == "" {
		t.Fatalf("no nonce in %v", state)
	}
	for k, v := range state {
		if strings.Contains(k, ".tmp") {
			t.Errorf("leftover temporary file %s", k)
		}
		if k == "summary" && !strings.Contains(v, nonce) {
			t.Errorf("summary was written with another nonce than prepare: %q vs %q (an output was recomputed)", v, nonce)
		}
		state[k] = strings.ReplaceAll(v, nonce, "NONCE")
	}
	return state
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func copyPlan(t *testing.T, dir string) string {
	t.Helper()
	src, err := os.ReadFile("testdata/crash.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "crash.yaml")
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCrashAndResume kills planrun with SIGKILL at every step boundary and in the middle of the
// long step, resumes until the run finishes, and compares the end state with an uninterrupted run.
func TestCrashAndResume(t *testing.T) {
	ref := t.TempDir()
	plan := copyPlan(t, ref)
	if code, _ := startRun(t, ref, nil, "apply", plan, "--set", "out="+filepath.Join(ref, "out"), "--run-id", "ref"); code != 0 {
		t.Fatalf("uninterrupted run exited %d", code)
	}
	want := endState(t, filepath.Join(ref, "out"))
	if len(want) != 23 {
		t.Fatalf("uninterrupted run left %d files: %v", len(want), keys(want))
	}

	var points []plantest.KillPoint
	for _, s := range []string{"nonce", "prepare", "pre-backup", "copy", "summarize", "check"} {
		points = append(points,
			plantest.KillPoint{Event: engine.EventStepStarted, Step: s},
			plantest.KillPoint{Event: engine.EventStepSucceeded, Step: s})
	}
	for _, d := range []time.Duration{100 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond} {
		points = append(points, plantest.KillPoint{Event: engine.EventStepStarted, Step: "copy", Delay: d})
	}
	for _, kp := range points {
		kp := kp
		t.Run(kp.String(), func(t *testing.T) {
			dir := t.TempDir()
			plan := copyPlan(t, dir)
			out := filepath.Join(dir, "out")
			code, killed := startRun(t, dir, &kp, "apply", plan, "--set", "out="+out, "--run-id", "r")
			if !killed {
				t.Fatalf("the run ended (exit %d) before the kill point", code)
			}
			// The run died holding its lock: the kernel dropped the flock, the record remains.
			code, _ = startRun(t, dir, nil, "resume", "r")
			if code != exitLocked {
				t.Fatalf("resume after SIGKILL exited %d, want %d (stale lock reported)", code, exitLocked)
			}
			code, _ = startRun(t, dir, nil, "resume", "r", "--break-lock")
			if code != 0 {
				t.Fatalf("resume exited %d", code)
			}
			got := endState(t, out)
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("end state differs from an uninterrupted run\n got %v\nwant %v", got, want)
			}
			j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(t.Context(), "r")
			if err != nil {
				t.Fatal(err)
			}
			if j.Status != engine.RunSucceeded {
				t.Fatalf("run status %s", j.Status)
			}
		})
	}
}

// TestSignalStopsAtSafePoint sends SIGINT and SIGTERM in the middle of the long step: planrun
// writes its checkpoint, exits 130 and releases its lock, so resume needs no --break-lock.
func TestSignalStopsAtSafePoint(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			plan := copyPlan(t, dir)
			out := filepath.Join(dir, "out")
			kp := plantest.KillPoint{Event: engine.EventStepStarted, Step: "copy", Delay: 300 * time.Millisecond}
			code, _ := signalRun(t, dir, &kp, sig, "apply", plan, "--set", "out="+out, "--run-id", "r")
			if code != exitInterrupted {
				t.Fatalf("exit code %d, want %d", code, exitInterrupted)
			}
			store := engine.NewDirStore(filepath.Join(dir, "runs"))
			j, err := store.Load(t.Context(), "r")
			if err != nil {
				t.Fatal(err)
			}
			if j.Status != engine.RunInterrupted || j.Step("copy").Status != engine.StepRunning {
				t.Fatalf("run %s, copy %s", j.Status, j.Step("copy").Status)
			}
			if code, _ := startRun(t, dir, nil, "resume"); code != 0 {
				t.Fatalf("resume exited %d", code)
			}
			if got := endState(t, out); len(got) != 23 {
				t.Fatalf("end state has %d files", len(got))
			}
		})
	}
}
