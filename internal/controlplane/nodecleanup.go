package controlplane

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cleanupNode removes everything a node may have left, whether it stopped in order or was
// killed: processes in its cgroups, containerd shims serving its socket, mounts under its folder
// (overlay roots, network namespaces, kubelet volumes), its bridge, its cgroups and its folder.
// Each part is done even when another fails; missing parts are not errors.
func cleanupNode(rec slotRecord) error {
	var errs []error
	if rec.CgroupRoot != "" {
		errs = append(errs, killCgroupProcesses(rec.CgroupRoot))
	}
	if rec.Socket != "" {
		errs = append(errs, killShims(rec.Socket))
	}
	if rec.Dir != "" {
		errs = append(errs, unmountUnder(rec.Dir))
		errs = append(errs, removeLogLinks(rec.Dir))
	}
	if rec.Bridge != "" {
		errs = append(errs, deleteLink(rec.Bridge))
	}
	if rec.Network != "" {
		errs = append(errs, removeCNIResults(rec.Network))
	}
	if rec.CgroupRoot != "" {
		errs = append(errs, removeCgroups(rec.CgroupRoot))
	}
	if rec.Dir != "" {
		if err := os.RemoveAll(rec.Dir); err != nil {
			errs = append(errs, fmt.Errorf("removing node folder: %w", err))
		}
	}
	return errors.Join(errs...)
}

// cgroupHierarchies returns the mount points of the cgroup v1 hierarchies (and of a cgroup2
// mount), where a node's cgroup folder may exist.
func cgroupHierarchies() ([]string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && (fields[2] == "cgroup" || fields[2] == "cgroup2") {
			dirs = append(dirs, fields[1])
		}
	}
	return dirs, sc.Err()
}

// killCgroupProcesses SIGKILLs every process in root's cgroup tree, in every hierarchy, until
// none is left (a process may fork while the list is read).
func killCgroupProcesses(root string) error {
	hierarchies, err := cgroupHierarchies()
	if err != nil {
		return fmt.Errorf("listing cgroups: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := 0
		for _, h := range hierarchies {
			_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d os.DirEntry, err error) error {
				if err != nil || !d.IsDir() {
					return nil
				}
				b, _ := os.ReadFile(filepath.Join(path, "cgroup.procs"))
				for _, field := range strings.Fields(string(b)) {
					if pid, err := strconv.Atoi(field); err == nil && pid > 1 && pid != os.Getpid() {
						found++
						_ = syscall.Kill(pid, syscall.SIGKILL)
					}
				}
				return nil
			})
		}
		if found == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still in cgroup %s after SIGKILL", root)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// killShims SIGKILLs the containerd shims started for the containerd at socket. Shims detach
// from containerd on purpose (containers survive a containerd restart), so stopping containerd
// leaves them; they name containerd's socket on their command line.
func killShims(socket string) error {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(cmdline, "\x00"), []byte{0})
		if len(args) == 0 || !strings.HasPrefix(filepath.Base(string(args[0])), "containerd-shim") {
			continue
		}
		for i := 0; i+1 < len(args); i++ {
			if string(args[i]) == "-address" && string(args[i+1]) == socket {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return nil
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var targets []string
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		target := unescapeMountPath(fields[4])
		if target == dir || strings.HasPrefix(target, dir+"/") {
			targets = append(targets, target)
		}
	}
	sort.Slice(targets, func(i, j int) bool { return len(targets[i]) > len(targets[j]) })
	var errs []error
	for _, t := range targets {
		if err := syscall.Unmount(t, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", t, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space and so on).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// containerLogLinks is where the kubelet links every container's log, whatever its pod log folder.
const containerLogLinks = "/var/log/containers"

// removeLogLinks removes the links in containerLogLinks into dir. The kubelet removes a link with
// its container; pods removed through the CRI after the kubelet stopped leave theirs.
func removeLogLinks(dir string) error {
	entries, err := os.ReadDir(containerLogLinks)
	if err != nil {
		return nil // no container ever ran on this machine
	}
	for _, e := range entries {
		link := filepath.Join(containerLogLinks, e.Name())
		if target, err := os.Readlink(link); err == nil && strings.HasPrefix(target, dir+"/") {
			if err := os.Remove(link); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	return nil
}

// cniResults is where the CNI library caches each attachment's result, named
// NETWORK-CONTAINERID-IFNAME; a pod removed in order takes its file with it, a killed node's stay.
const cniResults = "/var/lib/cni/results"

// removeCNIResults removes the cached results of network.
func removeCNIResults(network string) error {
	matches, err := filepath.Glob(filepath.Join(cniResults, network+"-*"))
	if err != nil {
		return err
	}
	for _, m := range matches {
		if err := os.Remove(m); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// deleteLink deletes a network interface if it exists.
func deleteLink(name string) error {
	if _, err := os.Stat(filepath.Join("/sys/class/net", name)); err != nil {
		return nil
	}
	if out, err := exec.Command("ip", "link", "delete", name).CombinedOutput(); err != nil {
		return fmt.Errorf("deleting bridge %s: %v: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

// removeCgroups removes root's cgroup tree in every hierarchy, deepest first (a cgroup folder
// can only be removed once empty of processes and children).
func removeCgroups(root string) error {
	hierarchies, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hierarchies {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dirs[i], err))
			}
		}
		// createCgroups made the folders above root too in hierarchies where this process sits
		// higher up; the empty ones go. A folder still in use refuses, which is what is wanted.
		for dir := filepath.Dir(root); dir != "/" && dir != "."; dir = filepath.Dir(dir) {
			if syscall.Rmdir(filepath.Join(h, dir)) != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}
