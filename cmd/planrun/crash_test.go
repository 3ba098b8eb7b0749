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
)

// planrunBin is the planrun binary built once for the tests that run it as a process.
var planrunBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "planrun-bin-")
	if err != nil {
		panic(err)
	}
	planrunBin = filepath.Join(dir, "planrun")
	if out, err := exec.Command("go", "build", "-o", planrunBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building planrun: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// killPoint says when to SIGKILL a run: at the first event of a type for a step (for
// step.progress with minDone > 0, the first whose Progress.Done >= minDone; with until set, the
// first such event at which until returns true), after a delay.
type killPoint struct {
	event   engine.EventType
	step    string
	delay   time.Duration
	minDone int64
	// until, if set, is asked at every event that matches otherwise, e.g. to wait until the
	// run's journal shows a checkpoint; untilDoc says what it waits for.
	until    func() bool
	untilDoc string
}

// matches reports whether e is the kill point's event.
func (k killPoint) matches(e engine.Event) bool {
	if e.Type != k.event || e.StepID != k.step {
		return false
	}
	if k.minDone > 0 && (e.Progress == nil || e.Progress.Done < k.minDone) {
		return false
	}
	return k.until == nil || k.until()
}

func (k killPoint) String() string {
	s := fmt.Sprintf("%s/%s", k.event, k.step)
	if k.minDone > 0 {
		s += fmt.Sprintf("@%d", k.minDone)
	}
	if k.until != nil {
		s += fmt.Sprintf("(%s)", k.untilDoc)
	}
	if k.delay > 0 {
		s += fmt.Sprintf("+%s", k.delay)
	}
	return s
}

// startRun starts planrun with -o json and kills it at kp (if set). It returns the exit status.
func startRun(t *testing.T, dir string, kp *killPoint, args ...string) (exitCode int, killed bool) {
	return signalRun(t, dir, kp, syscall.SIGKILL, args...)
}

// signalRun is startRun with another signal than SIGKILL.
func signalRun(t *testing.T, dir string, kp *killPoint, sig syscall.Signal, args ...string) (exitCode int, killed bool) {
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
		if kp != nil && !killed && kp.matches(e) {
			time.Sleep(kp.delay)
			_ = cmd.Process.Signal(sig)
			killed = true
		}
	}
	err = cmd.Wait()
	if killed && sig == syscall.SIGKILL {
		return -1, true
	}
	if ee, ok := err.(*exec.ExitError); ok {
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

func keys(m map[string]string) []string {
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

	var points []killPoint
	for _, s := range []string{"nonce", "prepare", "pre-backup", "copy", "summarize", "check"} {
		points = append(points,
			killPoint{event: engine.EventStepStarted, step: s},
			killPoint{event: engine.EventStepSucceeded, step: s})
	}
	for _, d := range []time.Duration{100 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond} {
		points = append(points, killPoint{event: engine.EventStepStarted, step: "copy", delay: d})
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
			kp := killPoint{event: engine.EventStepStarted, step: "copy", delay: 300 * time.Millisecond}
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
