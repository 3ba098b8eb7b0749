package main

import (
	"fmt"
	"os"
	"syscall"
)

// stopWithParent asks Linux to send SIGTERM to this process when its parent dies, so that
// killing whatever started it (a Makefile's `go run`, a shell) cannot leave this process,
// kube-apiserver and etcd running. The signal comes once per exiting thread of the parent, so
// more than one may arrive.
func stopWithParent() error {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %w", errno)
	}
	// The parent may have died before the request: then we were already handed to init.
	if os.Getppid() == 1 {
		return syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}
	return nil
}
