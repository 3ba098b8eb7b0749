package main

import (
	"bufio"
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
	"planrun.dev/planrun/internal/plantest"
)

const stateHeader = "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: s}\n"

// TestHostileRunIDs: a run id never names a folder outside the state folder, at any entry point;
// a bad id is a usage error (exit 2) that says what is wrong with it.
func TestHostileRunIDs(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "a", "runs")
	plan := writePlan(t, dir, "p.yaml", stateHeader+"steps:\n  - {id: a, type: assert, with: {that: 'true'}}\n")
	for _, id := range []string{"../../x", "../x", "/tmp/x", "a/b", ".", "..", "a\x00b", `a\b`} {
		for _, args := range [][]string{
			{"apply", plan, "--run-id", id},
			{"resume", id},
			{"rollback", id},
			{"status", id},
		} {
			t.Run(fmt.Sprintf("%s %q", args[0], id), func(t *testing.T) {
				code, stdout, stderr := runCLI(t, append(args, "--state-dir", state)...)
				if code != exitUsage || !strings.Contains(stderr, "planrun "+args[0]+": run id") {
					t.Fatalf("exit %d, want %d with the run id named\nstdout: %s\nstderr: %s", code, exitUsage, stdout, stderr)
				}
			})
		}
	}
	// Nothing was created next to the state folder or above it.
	for _, p := range []string{filepath.Join(dir, "x"), filepath.Join(dir, "a", "x"), "/tmp/x/journal.json"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s was created", p)
		}
	}
}

// TestRunTimeExpressionErrorsExit1: a when or ${{ }} that fails while the run evaluates it is a
// failed run (exit 1, planrun apply: prefix), not a plan that does not load (exit 2).
func TestRunTimeExpressionErrorsExit1(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "runs")
	list := "  - {id: l, type: exec, with: {command: [echo, '{\"l\": []}']}}\n"
	for _, tc := range []struct{ name, step, want string }{
		{"when", "  - {id: b, type: assert, when: 'steps.l.outputs.l[3] == 1', with: {that: 'true'}}\n", `step "b" failed: when: `},
		{"template", "  - {id: b, type: exec, with: {command: [echo, '${{ steps.l.outputs.l[3] }}']}}\n", `step "b" failed: `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := writePlan(t, dir, tc.name+".yaml", stateHeader+"steps:\n"+list+tc.step)
			code, stdout, stderr := runCLI(t, "apply", plan, "--state-dir", state, "--run-id", tc.name)
			if code != exitRunFailed || !strings.HasPrefix(stderr, "planrun apply: run "+tc.name+" failed and was rolled back: "+tc.want) {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, exitRunFailed, stdout, stderr)
			}
		})
	}
}

// TestSIGINTDuringValidate: validate stopped by SIGINT exits 130 and does not say "ok" for the
// files it had not finished. It validates one large plan many times; the signal is sent once the
// first file is reported, so the handler is in place and most files are still to come.
func TestSIGINTDuringValidate(t *testing.T) {
	dir := t.TempDir()
	var plan strings.Builder
	plan.WriteString(stateHeader + "steps:\n")
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(&plan, "  - {id: s%d, type: assert, with: {that: 'true'}}\n", i)
	}
	file := writePlan(t, dir, "big.yaml", plan.String())
	const files = 40
	args := []string{"validate"}
	for i := 0; i < files; i++ {
		args = append(args, file)
	}
	cmd := exec.Command(planrunBin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	watchdog := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	defer watchdog.Stop()
	sc := bufio.NewScanner(out)
	oks := 0
	for sc.Scan() {
		if strings.Contains(sc.Text(), ": ok (") {
			oks++
			if oks == 1 {
				if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != exitInterrupted || oks >= files {
		t.Fatalf("exit %d (%v), want %d; %d of %d files said ok\nstderr: %s", code, err, exitInterrupted, oks, files, stderr.String())
	}
}

// TestStatusAfterSIGKILL: a run whose runner was SIGKILLed is shown as Interrupted, its duration
// frozen at its last checkpoint, by status and runs; rollback says it was interrupted.
func TestStatusAfterSIGKILL(t *testing.T) {
	dir := t.TempDir()
	plan := copyPlan(t, dir)
	kp := plantest.KillPoint{Event: engine.EventStepStarted, Step: "copy", Delay: 200 * time.Millisecond}
	if r := runPlanrun(t, dir, &kp, "apply", plan, "--set", "out="+filepath.Join(dir, "out"), "--run-id", "r"); !r.Killed {
		t.Fatalf("the run was not killed:\n%s", r)
	}
	state := filepath.Join(dir, "runs")
	_, first, _ := runCLI(t, "status", "r", "--state-dir", state)
	time.Sleep(1100 * time.Millisecond)
	code, second, stderr := runCLI(t, "status", "r", "--state-dir", state)
	if code != 0 || !strings.Contains(second, "Status:    Interrupted") || !strings.Contains(second, "its runner is gone") || !strings.Contains(second, "--break-lock") {
		t.Fatalf("status after SIGKILL (exit %d):\n%s%s", code, second, stderr)
	}
	if first != second {
		t.Fatalf("status changed with time (durations not frozen):\n%s\n%s", first, second)
	}
	_, runs, _ := runCLI(t, "runs", "--state-dir", state)
	if !strings.Contains(runs, "Interrupted") {
		t.Fatalf("runs:\n%s", runs)
	}
	_, js, _ := runCLI(t, "status", "r", "-o", "json", "--state-dir", state)
	var j engine.Journal
	if err := json.Unmarshal([]byte(js), &j); err != nil || j.Status != engine.RunInterrupted {
		t.Fatalf("status -o json: %v\n%s", err, js)
	}
	code, stdout, stderr := runCLI(t, "rollback", "r", "--break-lock", "--state-dir", state)
	if code != 0 || !strings.Contains(stdout, "run r was interrupted and has been rolled back") {
		t.Fatalf("rollback (exit %d):\n%s%s", code, stdout, stderr)
	}
}

// writeFile writes data to path, creating its folder.
func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptAndForgedJournals: a journal that cannot be trusted is listed as Corrupt (never
// hidden) and refused by resume and rollback (exit 1, never rerun); foreign folders are skipped.
func TestCorruptAndForgedJournals(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "runs")
	// The marker path is absolute: exec runs in the test's working directory, not beside the plan.
	marker := filepath.Join(dir, "ran-a")
	plan := writePlan(t, dir, "p.yaml", stateHeader+"steps:\n  - {id: a, type: exec, with: {command: [touch, '"+marker+"']}}\n  - {id: b, type: assert, with: {that: 'false'}}\n")
	if code, _, stderr := runCLI(t, "apply", plan, "--no-rollback", "--run-id", "good", "--state-dir", state); code != exitRunFailed {
		t.Fatalf("apply: %d %s", code, stderr)
	}
	good, err := os.ReadFile(filepath.Join(state, "good", "journal.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(good, &doc); err != nil {
		t.Fatal(err)
	}
	forge := func(id string, edit func(map[string]any)) string {
		var d map[string]any
		b, _ := json.Marshal(doc)
		json.Unmarshal(b, &d)
		d["runID"] = id
		edit(d)
		out, _ := json.Marshal(d)
		return string(out)
	}
	src, _ := os.ReadFile(plan)
	for _, tc := range []struct{ id, journal, want string }{
		{"garbage", "{not json", "corrupt journal"},
		{"status", forge("status", func(d map[string]any) { d["status"] = "Bogus" }), `unknown run status "Bogus"`},
		{"runid", forge("elsewhere", func(map[string]any) {}), `it names run "elsewhere"`},
		{"stepstatus", forge("stepstatus", func(d map[string]any) { d["steps"].([]any)[0].(map[string]any)["status"] = "Done" }), `unknown status "Done"`},
		{"steps", forge("steps", func(d map[string]any) { d["steps"] = d["steps"].([]any)[1:] }), "records steps [b], but its plan"},
	} {
		writeFile(t, filepath.Join(state, tc.id, "journal.json"), tc.journal)
		writeFile(t, filepath.Join(state, tc.id, "plan.yaml"), string(src))
		for _, cmd := range []string{"resume", "rollback"} {
			t.Run(cmd+" "+tc.id, func(t *testing.T) {
				os.Remove(marker)
				code, stdout, stderr := runCLI(t, cmd, tc.id, "--plan", plan, "--state-dir", state)
				if code != exitRunFailed || !strings.Contains(stderr, "corrupt journal") || !strings.Contains(stderr, tc.want) {
					t.Fatalf("exit %d, want %d with %q\nstdout: %s\nstderr: %s", code, exitRunFailed, tc.want, stdout, stderr)
				}
				if _, err := os.Stat(marker); err == nil {
					t.Fatal("a step ran again")
				}
			})
		}
	}
	writeFile(t, filepath.Join(state, "newer", "journal.json"), forge("newer", func(d map[string]any) { d["version"] = 2 }))
	writeFile(t, filepath.Join(state, "foreign", "notes.txt"), "not a run")
	writeFile(t, filepath.Join(state, "stray-file"), "x")
	_, stdout, _ := runCLI(t, "runs", "--state-dir", state)
	for _, id := range []string{"garbage", "status", "runid", "stepstatus"} {
		if !strings.Contains(stdout, id+" ") || !strings.Contains(stdout, "Corrupt") {
			t.Errorf("runs does not list %s as corrupt:\n%s", id, stdout)
		}
	}
	if !strings.Contains(stdout, "Unreadable") || !strings.Contains(stdout, "unsupported journal version 2") {
		t.Errorf("runs does not list the journal of another version:\n%s", stdout)
	}
	if strings.Contains(stdout, "foreign") || strings.Contains(stdout, "stray") {
		t.Errorf("runs lists a folder that is not a run:\n%s", stdout)
	}
}

// TestLockStates: a lock recorded by another host is held by that host (cannot check), a
// garbled one is a stale lock that --break-lock takes over, in resume and in status alike.
func TestLockStates(t *testing.T) {
	host, _ := os.Hostname()
	for _, tc := range []struct {
		name, lock, resume, status string
	}{
		{"other host", `{"pid": 42, "host": "far-away", "started": "2026-01-01T00:00:00Z"}`, "held by far-away (cannot check", "held by far-away (cannot check)"},
		{"garbled", `{"pid": 4`, "has a stale lock from a runner whose holder record cannot be read", "Status:    Interrupted"},
		{"this host, gone", fmt.Sprintf(`{"pid": 999999, "host": %q, "started": "2026-01-01T00:00:00Z"}`, host), "pid 999999", "Status:    Interrupted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			state := filepath.Join(dir, "runs")
			plan := writePlan(t, dir, "p.yaml", stateHeader+"steps:\n  - {id: a, type: assert, with: {that: 'true'}}\n")
			if code, _, stderr := runCLI(t, "apply", plan, "--run-id", "r", "--state-dir", state); code != 0 {
				t.Fatalf("apply: %s", stderr)
			}
			// As a runner that died (or runs elsewhere) mid-run leaves it.
			jpath := filepath.Join(state, "r", "journal.json")
			b, _ := os.ReadFile(jpath)
			j, err := engine.DecodeJournal(b)
			if err != nil {
				t.Fatal(err)
			}
			j.Status, j.Finished, j.Step("a").Status = engine.RunRunning, nil, engine.StepPending
			b, _ = j.Encode()
			writeFile(t, jpath, string(b))
			writeFile(t, filepath.Join(state, "r", "lock"), tc.lock)

			code, stdout, stderr := runCLI(t, "status", "r", "--state-dir", state)
			if code != 0 || !strings.Contains(stdout, tc.status) {
				t.Errorf("status (exit %d) lacks %q:\n%s%s", code, tc.status, stdout, stderr)
			}
			code, _, stderr = runCLI(t, "resume", "r", "--state-dir", state)
			gone := strings.Contains(stderr, "that process is gone")
			if code != exitLocked || !strings.Contains(stderr, tc.resume) || gone != (tc.name != "other host") {
				t.Errorf("resume: exit %d, want %d with %q:\n%s", code, exitLocked, tc.resume, stderr)
			}
			if code, _, stderr := runCLI(t, "resume", "r", "--break-lock", "--state-dir", state); code != 0 {
				t.Errorf("resume --break-lock: exit %d:\n%s", code, stderr)
			}
		})
	}
}

// TestDryRunFailureSuggestsNoResume: a dry run keeps no journal, so nothing can be resumed.
func TestDryRunFailureSuggestsNoResume(t *testing.T) {
	dir := t.TempDir()
	plan := writePlan(t, dir, "p.yaml", stateHeader+"steps:\n  - {id: a, type: assert, with: {that: 'false'}}\n")
	code, stdout, _ := runCLI(t, "apply", plan, "--dry-run", "--state-dir", filepath.Join(dir, "runs"))
	if code != exitRunFailed || strings.Contains(stdout, "resume") || !strings.Contains(stdout, "dry run of s failed") {
		t.Fatalf("exit %d:\n%s", code, stdout)
	}
}

// TestJournalWriteFailureFailsTheRun: when the journal cannot be written (a file size limit
// stands in for a full disk), the run fails loudly: exit 1, the checkpoint named, one line.
func TestJournalWriteFailureFailsTheRun(t *testing.T) {
	dir := t.TempDir()
	out := `{"x": "` + strings.Repeat("a", 400) + `"}`
	plan := writePlan(t, dir, "p.yaml", stateHeader+"steps:\n"+
		"  - {id: a, type: exec, with: {command: [echo, '"+out+"']}}\n"+
		"  - {id: b, type: exec, with: {command: [echo, '"+out+"']}}\n")
	// ulimit -f counts 512-byte blocks: the plan and the first checkpoints fit, the later do not.
	cmd := exec.Command("sh", "-c", `ulimit -f 2 && exec "$0" "$@"`, planrunBin, "apply", plan, "--run-id", "r", "--state-dir", filepath.Join(dir, "runs"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.Run()
	msg := strings.TrimSpace(stderr.String())
	if code := cmd.ProcessState.ExitCode(); code != exitRunFailed || !strings.HasPrefix(msg, "planrun apply: ") || !strings.Contains(msg, "checkpoint of run r") || strings.Contains(msg, "\n") {
		t.Fatalf("exit %d, want %d with one line naming the checkpoint:\n%s", cmd.ProcessState.ExitCode(), exitRunFailed, msg)
	}
}
