package s3test

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// process is one run of versitygw. A restarted server is a new process on the same port and
// folders; all runs write to the server's one log file.
type process struct {
	logPath string
	cmd     *exec.Cmd
	tail    *tail         // this run's output only, for its start errors
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
}

// startProcess starts bin with args and env (nothing else of the test's environment), its
// output appended to logPath after a line that says which run follows.
func startProcess(bin string, args, env []string, logPath string) (*process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("starting versitygw: %w", err)
	}
	fmt.Fprintf(log, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	p := &process{logPath: logPath, tail: &tail{}, done: make(chan struct{})}
	out := io.MultiWriter(log, p.tail)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group, as the control plane's processes: signals sent to the test's
		// group (a Ctrl-C) do not reach it; a test that dies of one takes it along (below).
		Setpgid: true,
		// If the test process dies without cleaning up (SIGKILL, a panic in another
		// goroutine, a Ctrl-C), the kernel kills the server rather than leaving it running.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := p.cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting versitygw (%s): %w", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended, with how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// failed wraps err with how the process ended, if it has, where its log is, and the end of
// this run's output.
func (p *process) failed(err error) error {
	if ended, waitErr := p.exited(); ended {
		err = fmt.Errorf("%w (versitygw exited: %v)", err, waitErr)
	}
	return withTail(fmt.Errorf("%w; log: %s", err, p.logPath), p.tail.String())
}

// stop asks the process to end (SIGTERM), kills it after timeout, and waits for it. It is safe
// to call more than once and after the process has exited by itself.
func (p *process) stop(timeout time.Duration) error {
	if ended, _ := p.exited(); ended {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping versitygw: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	p.kill()
	return nil
}

// kill ends the process at once (SIGKILL: no chance to finish a request or flush anything) and
// waits for it.
func (p *process) kill() {
	_ = p.cmd.Process.Kill() // fails only when it has already exited, which is the goal
	<-p.done
}
