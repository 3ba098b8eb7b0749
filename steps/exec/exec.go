// Package exec implements the exec step: run a command, keep its output, read its outputs.
package exec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/lastwords"
)

func init() {
	engine.Register(engine.StepType{
		Name: "exec",
		Doc:  "Run a command; a JSON object on the last line of its stdout becomes the step's outputs.",
		New:  func() engine.Action { return new(Exec) },
	})
}

// exTempFail is sysexits' EX_TEMPFAIL: a command exiting with it asks to be retried.
const exTempFail = 75

// Exec runs a command.
type Exec struct {
	Command []string          `yaml:"command" plan:"required" doc:"Program and arguments, such as [./notify.sh, starting]."`
	Env     map[string]string `yaml:"env" doc:"Extra environment variables."`
	Dir     string            `yaml:"dir" doc:"Working directory (default: the current one)."`
	Stdin   string            `yaml:"stdin" doc:"Text written to the command's stdin."`
	Timeout engine.Duration   `yaml:"timeout" doc:"Kill the command after this long."`
	// DryRun marks a command that changes nothing, so it runs in dry runs too.
	DryRun bool `yaml:"dryRun" doc:"Run in dry runs too (the command only reads); it sees PLANRUN_DRY_RUN=1."`
}

var (
	_ engine.Action    = (*Exec)(nil)
	_ engine.Validator = (*Exec)(nil)
	_ engine.Describer = (*Exec)(nil)
)

// Validate implements engine.Validator.
func (e *Exec) Validate() error {
	if len(e.Command) == 0 || e.Command[0] == "" {
		return errors.New("command: must name a program")
	}
	return nil
}

// Describe implements engine.Describer.
func (e *Exec) Describe() string { return "run " + strings.Join(e.Command, " ") }

// gracePeriod is how long a command has to exit after SIGTERM before it is killed.
const gracePeriod = 10 * time.Second

// Run implements engine.Action.
func (e *Exec) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	if rc.DryRun && !e.DryRun {
		rc.Logger.Info("dry run: not running", "command", e.Command)
		return engine.Outputs{"dryRun": true, "command": e.Command}, nil
	}
	if e.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(e.Timeout))
		defer cancel()
	}
	if err := checkDir(e.Dir); err != nil {
		return nil, err
	}
	dir, err := rc.ArtifactDir()
	if err != nil {
		return nil, err
	}
	stdout, stderr, err := openLogs(dir, rc.Attempt)
	if err != nil {
		return nil, err
	}
	defer stdout.Close()
	defer stderr.Close()

	cmd := osexec.CommandContext(ctx, e.Command[0], e.Command[1:]...)
	cmd.Dir = e.Dir
	cmd.Env = append(os.Environ(),
		"PLANRUN_RUN_ID="+rc.RunID,
		"PLANRUN_STEP_ID="+rc.StepID,
		"PLANRUN_ATTEMPT="+strconv.Itoa(rc.Attempt),
		"PLANRUN_DRY_RUN="+strconv.FormatBool(rc.DryRun),
		"PLANRUN_ARTIFACT_DIR="+dir,
	)
	for k, v := range e.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if e.Stdin != "" {
		cmd.Stdin = strings.NewReader(e.Stdin)
	}
	out := &tail{max: maxOutputsLine}
	errTail := &tail{max: 4 << 10}
	cmd.Stdout = io.MultiWriter(stdout, out)
	cmd.Stderr = io.MultiWriter(stderr, errTail)
	// The command and everything it starts form one process group, so that stopping the step
	// stops a shell script's children too; SIGTERM first, SIGKILL after the grace period.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	dieWithParent(cmd.SysProcAttr)
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = gracePeriod

	err = cmd.Run()
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // leftovers of the group, if any
	}
	if err != nil {
		return nil, e.commandError(ctx, err, errTail.String())
	}
	if out.cutLine() {
		return nil, fmt.Errorf("the last line of stdout is longer than %d KiB, the most read for outputs; write large data to a file in $PLANRUN_ARTIFACT_DIR and its name to stdout", maxOutputsLine>>10)
	}
	return parseOutputs(out.Bytes())
}

// maxOutputsLine is the longest last line of stdout read for outputs.
const maxOutputsLine = 64 << 10

// checkDir names a working directory that is missing: exec would otherwise report the program
// as not found ("fork/exec ./x: no such file or directory").
func checkDir(dir string) error {
	if dir == "" {
		return nil
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("dir %q does not exist", dir)
	case err != nil:
		return fmt.Errorf("dir %q: %w", dir, errors.Unwrap(err))
	case !fi.IsDir():
		return fmt.Errorf("dir %q is not a directory", dir)
	}
	return nil
}

func (e *Exec) commandError(ctx context.Context, err error, stderr string) error {
	// The command's last words go into an error message, a journal and a terminal: control
	// bytes (colours, carriage returns, a terminal title) are written as escapes.
	last := lastwords.Line(stderr, maxErrorLine)
	if last != "" {
		last = ": " + last
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: stopped (%v)%s", e.Command[0], ctx.Err(), last)
	}
	var exitErr *osexec.ExitError
	if errors.As(err, &exitErr) {
		err := fmt.Errorf("%s exited with status %d%s", e.Command[0], exitErr.ExitCode(), last)
		if exitErr.ExitCode() == exTempFail {
			return engine.Transient(err)
		}
		return err
	}
	return fmt.Errorf("cannot run %s: %w", e.Command[0], errors.Unwrap(err))
}

// parseOutputs reads a JSON object from the last non-empty line of stdout.
func parseOutputs(stdout []byte) (engine.Outputs, error) {
	line := lastwords.LastLine(string(stdout))
	if !strings.HasPrefix(line, "{") {
		return engine.Outputs{}, nil
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(line), &out); err != nil {
		return nil, fmt.Errorf("last line of stdout looks like a JSON object but is not one: %v", err)
	}
	return out, nil
}

// openLogs opens the step's stdout and stderr logs for appending, with a header per attempt so
// that the logs of a retried or resumed step tell the attempts apart.
func openLogs(dir string, attempt int) (*os.File, *os.File, error) {
	header := fmt.Sprintf("--- attempt %d, %s ---\n", attempt, time.Now().UTC().Format(time.RFC3339))
	var files [2]*os.File
	for i, name := range []string{"stdout.log", "stderr.log"} {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			if i == 1 {
				files[0].Close()
			}
			return nil, nil, err
		}
		if _, err := f.WriteString(header); err != nil {
			f.Close()
			return nil, nil, err
		}
		files[i] = f
	}
	return files[0], files[1], nil
}

// maxErrorLine is the most of the last line of stderr an error message quotes.
const maxErrorLine = 512

// tail keeps the last max bytes written to it.
type tail struct {
	max     int
	buf     bytes.Buffer
	dropped bool // bytes were dropped from the front
}

// cutLine reports whether the last line is longer than the tail: its start was dropped.
func (t *tail) cutLine() bool {
	if !t.dropped {
		return false
	}
	b := bytes.TrimRight(t.buf.Bytes(), "\r\n\t ")
	return len(b) > 0 && bytes.IndexByte(b, '\n') < 0
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf.Write(p)
	if extra := t.buf.Len() - t.max; extra > 0 {
		t.buf.Next(extra)
		t.dropped = true
	}
	return len(p), nil
}

func (t *tail) Bytes() []byte  { return t.buf.Bytes() }
func (t *tail) String() string { return t.buf.String() }
