package main

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

// Helpers of the tests that run the planrun binary and kill it (crash_test.go has startRun and
// killPoint).

// runPlanrun runs planrun with -o json in dir, SIGKILLs it at kp (if set), and returns its
// events and stderr as well as its exit status, for the messages of failing tests.
func runPlanrun(t *testing.T, dir string, kp *killPoint, args ...string) planrunResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, planrunBin, append(args, "-o", "json", "--state-dir", filepath.Join(dir, "runs"))...)
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
	var r planrunResult
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e engine.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Errorf("planrun -o json printed a line that is not an event: %q", sc.Text())
			continue
		}
		r.events = append(r.events, e)
		if kp != nil && !r.killed && kp.matches(e) {
			time.Sleep(kp.delay)
			if err := cmd.Process.Signal(syscall.SIGKILL); err == nil {
				r.killed = true
			}
		}
	}
	err = cmd.Wait()
	r.stderr = stderr.String()
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL && r.killed {
			r.code = -1
		} else {
			r.killed = false // it ended on its own before the signal landed
		}
	} else if err != nil {
		t.Fatal(err)
	} else {
		r.killed = false
	}
	if ctx.Err() != nil {
		t.Fatalf("planrun %s did not finish within 10 minutes\n%s", strings.Join(args, " "), r)
	}
	return r
}

// planrunResult is what a planrun process did.
type planrunResult struct {
	code   int
	killed bool
	events []engine.Event
	stderr string
}

// String shows the events that tell why a run failed, and stderr.
func (r planrunResult) String() string {
	var b strings.Builder
	for _, e := range r.events {
		if e.Error != "" || e.Type == engine.EventRunFinished {
			fmt.Fprintf(&b, "event %s %s %s: %s\n", e.Type, e.StepID, e.Status, e.Error)
		}
	}
	fmt.Fprintf(&b, "stderr: %s", r.stderr)
	return b.String()
}

func writePlan(t *testing.T, dir, name, src string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func outputInt(t *testing.T, out engine.Outputs, key string) int64 {
	t.Helper()
	switch v := out[key].(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	case int:
		return int64(v)
	case json.Number:
		n, err := v.Int64()
		if err == nil {
			return n
		}
	}
	t.Fatalf("outputs.%s = %#v, want a number (outputs %v)", key, out[key], out)
	return 0
}
