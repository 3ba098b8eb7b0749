// Package childproc runs the long-lived programs that tests and local clusters start (versitygw
// for the S3 tests; kube-controller-manager, kube-scheduler, containerd and the kubelet of a
// local cluster) as children that cannot outlive the process that started them, with their
// output in a log file and its end quoted in errors.
package childproc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Process is one run of a program started by Start.
type Process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	tail    *Tail         // this run's output only, for its errors
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
}

// Start starts the program at path (looked up in PATH when it has no slash) with args. name is
// how messages call it. env is its whole environment; nil inherits this process's. Its output is
// appended to logPath (whose folder is created if needed), kept in a tail for Failed, and copied
// to extra when not nil.
func Start(name, path string, args, env []string, logPath string, extra io.Writer) (*Process, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{name: name, logPath: logPath, tail: &Tail{}, done: make(chan struct{})}
	out := io.MultiWriter(log, p.tail)
	if extra != nil {
		out = io.MultiWriter(out, extra)
	}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: signals sent to the starter's group (a Ctrl-C in the terminal)
		// do not reach it, so that the starter's handler can stop its children in order (a
		// kubelet before its containerd) instead of having them all killed at once.
		Setpgid: true,
		// If the starter dies without cleaning up (SIGKILL, a panic in another goroutine, a
		// Ctrl-C), the kernel kills the child rather than leaving it running. What the child had
		// started itself is not killed: the control plane's next node on the same slot sweeps
		// whatever a component had started (see controlplane's nodeSlot.sweep).
		Pdeathsig: syscall.SIGKILL,
	}
	if err := p.cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting %s (%s): %w", name, path, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

// Name is how messages call the process.
func (p *Process) Name() string { return p.name }

// Output is the end of this run's output (at most TailSize bytes).
func (p *Process) Output() string { return p.tail.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has ended, with how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// Failed wraps err with how the process ended, if it has, where its log is, and the end of this
// run's output.
func (p *Process) Failed(err error) error {
	if ended, waitErr := p.Exited(); ended {
		err = fmt.Errorf("%w (%s exited: %v)", err, p.name, waitErr)
	}
	return WithTail(fmt.Errorf("%w; log: %s", err, p.logPath), p.name, p.tail)
}

// Stop asks the process to end (SIGTERM), kills it after timeout, and waits for it. It is safe
// to call more than once and after the process has exited by itself.
func (p *Process) Stop(timeout time.Duration) error {
	if ended, _ := p.Exited(); ended {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s after %s: %w", p.name, timeout, err)
	}
	<-p.done
	return nil
}

// Kill ends the process at once (SIGKILL: no chance to finish a request or flush anything) and
// waits for it.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill() // fails only when it has already exited, which is the goal
	<-p.done
}
