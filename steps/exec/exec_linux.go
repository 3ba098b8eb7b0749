package exec

import "syscall"

// dieWithParent has the kernel kill the command if planrun itself is killed (SIGKILL, OOM):
// otherwise an orphaned command would go on working while `planrun resume` runs the step again.
func dieWithParent(attr *syscall.SysProcAttr) { attr.Pdeathsig = syscall.SIGKILL }
