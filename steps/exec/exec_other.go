//go:build !linux

package exec

import "syscall"

// dieWithParent is Linux only; elsewhere an orphaned command finishes on its own.
func dieWithParent(*syscall.SysProcAttr) {}
