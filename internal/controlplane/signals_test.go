package controlplane

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// interruptedChildEnv makes TestInterruptStopsClusters' child run a cluster until interrupted.
const interruptedChildEnv = "PLANRUN_TEST_INTERRUPTED_CHILD"

// TestInterruptStopsClusters runs a test binary that starts a cluster with a node, sends it
// SIGINT once the node is Ready, and checks that the binary died of the signal after stopping
// everything: no process of the cluster left, nothing mounted, the bridge and the slot freed.
func TestInterruptStopsClusters(t *testing.T) {
	if os.Getenv(interruptedChildEnv) == "1" {
		cp := StartForTest(t, WithNode())
		fmt.Printf("READY %s %s\n", cp.node.paths.dir, cp.dir)
		time.Sleep(10 * time.Minute) // until the parent interrupts
		return
	}
	skipIfAsked(t)
	if os.Geteuid() != 0 {
		t.Skip("nodes need root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestInterruptStopsClusters$", "-test.v")
	cmd.Env = append(os.Environ(), interruptedChildEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var nodeDir, cpDir string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 3 && f[0] == "READY" {
			nodeDir, cpDir = f[1], f[2]
			break
		}
	}
	if nodeDir == "" {
		cmd.Wait()
		t.Fatalf("the child never reported a Ready cluster; stderr:\n%s", stderr.String())
	}
	go func() {
		for sc.Scan() { // keep the pipe drained
		}
	}()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("the interrupted test binary did not exit")
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGINT {
		t.Errorf("child ended with %v, want death by SIGINT", err)
	}
	for _, dir := range []string{nodeDir, cpDir} {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("%s is left", dir)
		}
		if leftovers := processesMentioning(dir); len(leftovers) > 0 {
			t.Errorf("processes of the cluster still run: %v", leftovers)
		}
		if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), dir) {
			t.Errorf("mounts under %s are left", dir)
		}
	}
}

// processesMentioning lists the command lines that contain s.
func processesMentioning(s string) []string {
	var found []string
	matches, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err == nil && strings.Contains(string(b), s) {
			found = append(found, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return found
}
