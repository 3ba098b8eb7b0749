package plantest

// Running the planrun binary as a process, for the end-to-end tests of cmd/planrun and of the
// shipped plans: built once in TestMain, run with -o json (its events read as they come), and
// SIGKILLed at a chosen event.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
)

// MainWithPlanrun is a TestMain that builds the planrun command from pkg (a package path as go
// build takes it) into a temporary folder, sets *bin to the binary's path, runs the tests,
// removes the binary and exits. A failed build exits at once.
func MainWithPlanrun(m *testing.M, pkg string, bin *string) {
	dir, err := os.MkdirTemp("", "planrun-bin-")
	if err != nil {
		panic(err)
	}
	*bin = filepath.Join(dir, "planrun")
	if out, err := exec.Command("go", "build", "-o", *bin, pkg).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building %s: %v\n%s", pkg, err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// KillPoint says when to SIGKILL a run: at the first event of a type for a step (with
// MinDone > 0, the first whose Progress.Done >= MinDone; with Until set, the first such event at
// which Until returns true), after Delay.
type KillPoint struct {
	Event   engine.EventType
	Step    string
	MinDone int64
	Delay   time.Duration
	// Until, if set, is asked at every event that matches otherwise, e.g. to wait until the
	// run's journal shows a checkpoint; UntilDoc says what it waits for.
	Until    func() bool
	UntilDoc string
}

// Matches reports whether e is the kill point's event.
func (k KillPoint) Matches(e engine.Event) bool {
	if e.Type != k.Event || e.StepID != k.Step {
		return false
	}
	if k.MinDone > 0 && (e.Progress == nil || e.Progress.Done < k.MinDone) {
		return false
	}
	return k.Until == nil || k.Until()
}

// String is event/step[@minDone][(untilDoc)][+delay], e.g. for subtest names.
func (k KillPoint) String() string {
	s := fmt.Sprintf("%s/%s", k.Event, k.Step)
	if k.MinDone > 0 {
		s += fmt.Sprintf("@%d", k.MinDone)
	}
	if k.Until != nil {
		s += fmt.Sprintf("(%s)", k.UntilDoc)
	}
	if k.Delay > 0 {
		s += fmt.Sprintf("+%s", k.Delay)
	}
	return s
}

// RunOptions for RunBinary.
type RunOptions struct {
	Kill    *KillPoint         // SIGKILL the process there, if set
	Plain   bool               // without -o json: stdout is not read as events
	OnEvent func(engine.Event) // called with every event as it comes, if set
}

// Result is what a planrun process did.
type Result struct {
	Code   int  // exit status; -1 when killed
	Killed bool // SIGKILLed at the kill point (false if it ended on its own before the signal landed)
	Events []engine.Event
	Stdout string
	Stderr string
}

// String shows the events that tell why a run failed (stdout when there are none), and stderr,
// for the messages of failing tests.
func (r Result) String() string {
	var b strings.Builder
	for _, e := range r.Events {
		if e.Error != "" || e.Type == engine.EventRunFinished {
			fmt.Fprintf(&b, "event %s %s %s: %s\n", e.Type, e.StepID, e.Status, e.Error)
		}
	}
	if len(r.Events) == 0 {
		b.WriteString("stdout: " + r.Stdout + "\n")
	}
	return b.String() + "stderr: " + r.Stderr
}

// RunBinary runs the planrun binary bin in dir with its state in dir/runs and the arguments
// args (and -o json unless opts.Plain), and fails the test if it does not end within 10 minutes.
func RunBinary(t testing.TB, bin, dir string, opts RunOptions, args ...string) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	full := append(append([]string(nil), args...), "--state-dir", filepath.Join(dir, "runs"))
	if !opts.Plain {
		full = append(full, "-o", "json")
	}
	cmd := exec.CommandContext(ctx, bin, full...)
	cmd.Dir = dir
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr, out strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var r Result
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if opts.Plain {
			continue
		}
		var e engine.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Errorf("planrun -o json printed a line that is not an event: %q", sc.Text())
			continue
		}
		r.Events = append(r.Events, e)
		if opts.OnEvent != nil {
			opts.OnEvent(e)
		}
		if k := opts.Kill; k != nil && !r.Killed && k.Matches(e) {
			time.Sleep(k.Delay)
			if cmd.Process.Signal(syscall.SIGKILL) == nil {
				r.Killed = true
			}
		}
	}
	err = cmd.Wait()
	r.Stdout, r.Stderr = out.String(), stderr.String()
	if ee, ok := err.(*exec.ExitError); ok {
		r.Code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL && r.Killed {
			r.Code = -1
		} else {
			r.Killed = false // it ended on its own before the signal landed
		}
	} else if err != nil {
		t.Fatal(err)
	} else {
		r.Killed = false
	}
	if ctx.Err() != nil {
		t.Fatalf("planrun %s did not finish within 10 minutes\n%s", strings.Join(args, " "), r)
	}
	return r
}
