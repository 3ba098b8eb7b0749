package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"planrun.dev/planrun/console"
	"planrun.dev/planrun/engine"
)

// launchWait is how long the console waits for a runner it started to take the run: a runner
// that fails earlier (the plan file changed, a lock) is reported on the page.
const launchWait = 20 * time.Second

// processLauncher starts `planrun resume|rollback RUN` as a process of its own session: it goes
// on when the console stops, and a Ctrl-C in the console's terminal does not reach it.
type processLauncher struct {
	exe    string
	args   []string // where runs are kept, as the console sees them
	store  engine.Store
	logger *slog.Logger
}

var _ console.Launcher = (*processLauncher)(nil)

// Launch implements console.Launcher.
func (l *processLauncher) Launch(ctx context.Context, req console.LaunchRequest) error {
	action, runID := req.Action, req.RunID
	if action != engine.ActionResume && action != engine.ActionRollback {
		return fmt.Errorf("%s: not an action a runner is started for", action)
	}
	out, err := os.CreateTemp("", "planrun-ui-"+action+"-*.log")
	if err != nil {
		return err
	}
	args := append([]string{action}, l.args...)
	if req.BreakStaleLock {
		args = append(args, "--break-lock")
	}
	// After "--": a run id is never read as a flag.
	cmd := exec.Command(l.exe, append(args, "--", runID)...)
	cmd.Env = append(os.Environ(), "PLANRUN_ACTOR="+req.By)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		os.Remove(out.Name())
		return err
	}
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		exited <- err
		out.Close()
		if err == nil {
			os.Remove(out.Name())
		} else {
			l.logger.Warn("a runner the console started ended badly", "action", action, "run", runID, "err", err, "output", out.Name())
		}
	}()
	deadline := time.NewTimer(launchWait)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			exited <- err // for nobody; keeps the channel's one value
			if err == nil {
				return nil // it ran to its end already
			}
			return fmt.Errorf("%w: %s", errLaunch, lastLine(out.Name()))
		case <-deadline.C:
			return nil // it is still starting (waiting for a cluster); the page shows the run
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if ls, err := l.store.LockState(ctx, runID); err == nil && ls.Status == engine.LockHeld && ls.Holder.PID == cmd.Process.Pid {
				return nil
			}
		}
	}
}

// lastLine is the last line a runner wrote: its one-line error.
func lastLine(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(string(bytes.TrimSpace(data)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
