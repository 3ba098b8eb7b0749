package childproc

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitTimeout bounds the waits for a process to print or to end; the processes here do either
// within milliseconds, and a wait that runs out is a failure, not a measurement.
const waitTimeout = 30 * time.Second

func TestProcess(t *testing.T) {
	stop := func(timeout time.Duration) func(*Process) error {
		return func(p *Process) error { return p.Stop(timeout) }
	}
	kill := func(p *Process) error { p.Kill(); return nil }
	for _, tc := range []struct {
		name       string
		script     string
		end        func(*Process) error // what makes it end once it printed; nil: it ends by itself
		wantStatus string               // how it ended, as Wait says
		wantOutput string
	}{
		{"exits by itself", `echo hi; echo oops >&2; exit 3`, nil, "exit status 3", "hi\noops\n"},
		{"stopped with SIGTERM", `echo ready; exec sleep 60`, stop(waitTimeout), "signal: terminated", "ready\n"},
		// An ignored signal stays ignored across exec: sleep ignores SIGTERM.
		{"killed after the timeout when it ignores SIGTERM", `trap '' TERM; echo ready; exec sleep 60`, stop(100 * time.Millisecond), "signal: killed", "ready\n"},
		{"killed", `trap '' TERM; echo ready; exec sleep 60`, kill, "signal: killed", "ready\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logPath := filepath.Join(t.TempDir(), "logs", "sh.log") // its folder is created
			var extra Tail
			p, err := Start("sh", "sh", []string{"-c", tc.script}, nil, logPath, &extra)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(p.Kill)
			if pgid, err := syscall.Getpgid(p.cmd.Process.Pid); err != nil || pgid != p.cmd.Process.Pid {
				t.Errorf("process group %d (%v), want its own, %d", pgid, err, p.cmd.Process.Pid)
			}
			if tc.end != nil {
				waitOutput(t, p, tc.wantOutput)
				if ended, err := p.Exited(); ended {
					t.Fatalf("exited before being told to: %v", err)
				}
				if err := tc.end(p); err != nil {
					t.Errorf("ending it: %v", err)
				}
			}
			select {
			case <-p.Done():
			case <-time.After(waitTimeout):
				t.Fatalf("still running after %s", waitTimeout)
			}

			ended, waitErr := p.Exited()
			if !ended || waitErr == nil || waitErr.Error() != tc.wantStatus {
				t.Errorf("Exited() = %v, %v; want true, %s", ended, waitErr, tc.wantStatus)
			}
			if got := p.Output(); got != tc.wantOutput {
				t.Errorf("Output() = %q, want %q", got, tc.wantOutput)
			}
			if got := extra.String(); got != tc.wantOutput {
				t.Errorf("extra got %q, want %q", got, tc.wantOutput)
			}
			if got, err := os.ReadFile(logPath); err != nil || string(got) != tc.wantOutput {
				t.Errorf("log %s holds %q (%v), want %q", logPath, got, err, tc.wantOutput)
			}
			boom := errors.New("boom")
			failed := p.Failed(boom)
			want := fmt.Sprintf("boom (sh exited: %s); log: %s\n--- last output of sh ---\n%s", tc.wantStatus, logPath, tc.wantOutput)
			if failed.Error() != want {
				t.Errorf("Failed(boom) = %q, want %q", failed, want)
			}
			if !errors.Is(failed, boom) {
				t.Errorf("Failed(boom) does not match boom with errors.Is")
			}
			// Stopping or killing an ended process is harmless.
			if err := p.Stop(time.Millisecond); err != nil {
				t.Errorf("Stop after the end: %v", err)
			}
			p.Kill()
		})
	}
}

// A running process's Failed says where its log is and what it printed, but not how it ended.
func TestFailedWhileRunning(t *testing.T) {
	logPath := filepath.Join(t.TempDir(), "sh.log")
	p, err := Start("sh", "sh", []string{"-c", `echo starting; exec sleep 60`}, nil, logPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	waitOutput(t, p, "starting\n")
	want := fmt.Sprintf("no answer; log: %s\n--- last output of sh ---\nstarting\n", logPath)
	if got := p.Failed(errors.New("no answer")).Error(); got != want {
		t.Errorf("Failed = %q, want %q", got, want)
	}
}

func TestEnvironment(t *testing.T) {
	t.Setenv("CHILDPROC_TEST", "inherited")
	t.Setenv("CHILDPROC_OTHER", "inherited too")
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"nil inherits", nil, "inherited|inherited too\n"},
		{"given is the whole environment", []string{"CHILDPROC_TEST=given"}, "given|unset\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Start("sh", "sh", []string{"-c", `echo "$CHILDPROC_TEST|${CHILDPROC_OTHER:-unset}"`}, tc.env, filepath.Join(t.TempDir(), "sh.log"), nil)
			if err != nil {
				t.Fatal(err)
			}
			<-p.Done()
			if got := p.Output(); got != tc.want {
				t.Errorf("output %q, want %q", got, tc.want)
			}
		})
	}
}

func TestStartFails(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, path, logPath string
		want                string
		is                  error
	}{
		{"missing program", filepath.Join(dir, "nope"), filepath.Join(dir, "nope.log"), "starting nope (" + filepath.Join(dir, "nope") + "): ", fs.ErrNotExist},
		{"log folder is a file", "sh", filepath.Join(dir, "nope.log", "x.log"), "starting nope: ", syscall.ENOTDIR},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Start("nope", tc.path, nil, nil, tc.logPath, nil)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || !errors.Is(err, tc.is) {
				t.Errorf("Start = %v, want %q… matching %v", err, tc.want, tc.is)
			}
		})
	}
}

// dieHelperEnv makes TestDiesWithStarter, in a child test process, start a child of its own,
// print its pid and wait to be killed.
const dieHelperEnv = "CHILDPROC_TEST_STARTER_DIR"

// A child does not outlive its starter, even one killed with SIGKILL, which runs no clean-up.
func TestDiesWithStarter(t *testing.T) {
	if dir := os.Getenv(dieHelperEnv); dir != "" {
		p, err := Start("sleep", "sleep", []string{"60"}, nil, filepath.Join(dir, "sleep.log"), nil)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println(p.cmd.Process.Pid)
		select {}
	}
	starter := exec.Command(os.Args[0], "-test.run=^TestDiesWithStarter$")
	starter.Env = append(os.Environ(), dieHelperEnv+"="+t.TempDir())
	starter.Stderr = os.Stderr
	out, err := starter.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := starter.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, convErr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || convErr != nil {
		starter.Process.Kill()
		starter.Wait()
		t.Fatalf("the starter printed %q (%v), not its child's pid", line, err)
	}
	if !running(pid) {
		t.Fatalf("the child %d is not running before its starter is killed", pid)
	}
	starter.Process.Kill()
	starter.Wait()
	for deadline := time.Now().Add(waitTimeout); running(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the child %d still runs %s after its starter was killed", pid, waitTimeout)
		}
	}
}

// running reports whether pid is a live process (not gone, not a zombie waiting to be reaped
// by whoever inherited it).
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses, the state follows the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// waitOutput waits until p has printed want.
func waitOutput(t *testing.T, p *Process, want string) {
	t.Helper()
	for deadline := time.Now().Add(waitTimeout); p.Output() != want; time.Sleep(5 * time.Millisecond) {
		if ended, err := p.Exited(); ended {
			t.Fatalf("exited (%v) before printing %q; printed %q", err, want, p.Output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("printed %q after %s, want %q", p.Output(), waitTimeout, want)
		}
	}
}
