package s3test

import (
	"fmt"
	"os"
	"strings"
	"time"

	"planrun.dev/planrun/internal/childproc"
)

// startProcess starts one run of versitygw: bin with args and env (nothing else of the test's
// environment). A restarted server is a new process on the same port and folders; all runs
// append their output to the server's one log file, each after a line that says which run
// follows.
func startProcess(bin string, args, env []string, logPath string) (*childproc.Process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("starting versitygw: %w", err)
	}
	fmt.Fprintf(log, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	if err := log.Close(); err != nil {
		return nil, fmt.Errorf("starting versitygw: %w", err)
	}
	return childproc.Start("versitygw", bin, args, env, logPath, nil)
}
