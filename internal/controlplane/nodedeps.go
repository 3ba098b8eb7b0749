package controlplane

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrNodePrerequisite means this machine lacks something a node needs; the message names it and
// how to install it.
var ErrNodePrerequisite = errors.New("node prerequisite missing")

// installHint is where every package a node needs is installed from, idempotently.
const installHint = "run hack/install-node-deps.sh (or make node-deps)"

// checkNodePrerequisites fails with one line naming the first missing piece, before any process
// starts: a node that cannot start must not cost a start time-out to find out why.
func checkNodePrerequisites(binaryDir string) error {
	missing := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrNodePrerequisite, fmt.Sprintf(format, args...))
	}
	if os.Geteuid() != 0 {
		return missing("a node needs root (kubelet, containerd and runc manage cgroups, mounts and network namespaces)")
	}
	for _, c := range []struct{ cmd, pkg string }{
		{"containerd", "containerd"}, {"ctr", "containerd"}, {"runc", "runc"}, {"ip", "iproute2"},
	} {
		if _, err := exec.LookPath(c.cmd); err != nil {
			return missing("%s not found in PATH: install Debian's %s (%s)", c.cmd, c.pkg, installHint)
		}
	}
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, plugin)); err != nil {
			return missing("CNI plugin %s not found in %s: install Debian's containernetworking-plugins (%s)",
				plugin, cniBinDir, installHint)
		}
	}
	kubelet := filepath.Join(binaryDir, "kubelet")
	if _, err := os.Stat(kubelet); err != nil {
		return missing("%s not found: build it with hack/build-control-plane.sh kubelet", kubelet)
	}
	filesystems, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		return missing("reading /proc/filesystems: %v", err)
	}
	if !strings.Contains(string(filesystems), "\toverlay\n") {
		return missing("the kernel has no overlay filesystem, which containerd's snapshotter needs (try modprobe overlay)")
	}
	hierarchies, err := cgroupHierarchies()
	if err != nil || len(hierarchies) == 0 {
		return missing("no cgroup filesystem is mounted (%v)", err)
	}
	return nil
}
