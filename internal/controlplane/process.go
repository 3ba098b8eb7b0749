package controlplane

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

// process is one long-running program of a complete cluster (kube-controller-manager,
// kube-scheduler, containerd, kubelet). envtest runs only kube-apiserver and etcd, and keeps no
// log; these programs fail in ways worth reading afterwards, so their output goes to a log file
// in the cluster's folder as well as to a tail quoted in errors.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	tail    *tail
	log     *os.File
	done    chan struct{} // closed when the process has exited
	waitErr error         // set before done is closed
}

// startProcess starts path with args, its output in logPath (and in extra when not nil).
func startProcess(name, logPath string, extra io.Writer, path string, args ...string) (*process, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o700); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, tail: &tail{}, log: log, done: make(chan struct{})}
	out := io.MultiWriter(log, p.tail)
	if extra != nil {
		out = io.MultiWriter(out, extra)
	}
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a Ctrl-C in the terminal reaches the test, whose handler stops
		// the cluster in order (kubelet before containerd), instead of killing all at once.
		Setpgid: true,
		// If the test process dies without cleaning up (SIGKILL, a panic in another goroutine),
		// the kernel kills the component rather than leaving it running; the next node started
		// on the same slot sweeps whatever the component had started (see sweepSlot).
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

// exited reports whether the process has ended, with how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// failed wraps err with where to read more: the log file and its last lines.
func (p *process) failed(err error) error {
	if ended, waitErr := p.exited(); ended {
		err = fmt.Errorf("%w (%s exited: %v)", err, p.name, waitErr)
	}
	return withTail(fmt.Errorf("%w; log: %s", err, p.logPath), p.name, p.tail)
}

// stop asks the process to end (SIGTERM) and kills it after timeout. It is safe to call more
// than once and after the process has exited by itself.
func (p *process) stop(timeout time.Duration) error {
	if ended, _ := p.exited(); ended {
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
