package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const (
	busyboxPath = "/bin/busybox"
	// busyboxRef is the name tests use (planrun's internal/images.BusyboxImage). It stays put when
	// Debian ships another busybox; the label org.opencontainers.image.version says which is inside.
	busyboxRef  = "planrun.local/busybox:1.35"
	installHint = "install Debian's busybox-static (hack/install-node-deps.sh)"
)

// defaultPath is the PATH of the busybox image: where --list-full puts the applets.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// buildBusybox makes a one-layer image of /bin/busybox with a symlink for every applet it lists,
// /tmp (1777), /root, and /etc/passwd and /etc/group naming root and nobody, so that ls -l,
// id and runAsUser: 65534 work. The cache key is this program plus the busybox binary.
func buildBusybox(ctx context.Context, j *job, out string) error {
	bin, err := os.ReadFile(busyboxPath)
	if errors.Is(err, fs.ErrNotExist) {
		return errorf("busybox", "%s not found: %s", busyboxPath, installHint)
	}
	if err != nil {
		return errorf("busybox", "%v", err)
	}
	if err := checkStatic(bin); err != nil {
		return errorf("busybox", "%s %v: %s", busyboxPath, err, installHint)
	}
	sum := sha256.Sum256(bin)
	key := cacheKey(j.self, hex.EncodeToString(sum[:]))
	ref, err := name.NewTag(busyboxRef)
	if err != nil {
		return errorf("busybox", "%v", err)
	}
	if upToDate(out, ref, key) {
		logf("busybox: inputs unchanged, keeping %s", out)
		return nil
	}

	applets, version, err := busyboxApplets(ctx)
	if err != nil {
		return errorf("busybox", "%v", err)
	}
	t := tree{}
	t.file("bin/busybox", 0o755, bin)
	for _, a := range applets {
		if a != "bin/busybox" {
			t.symlink(a, "/bin/busybox") // absolute: right from any folder
		}
	}
	t.dir("tmp", 0o1777, 0, 0)
	t.dir("root", 0o700, 0, 0)
	t.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	t.file("etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\n"))
	l, err := t.layer()
	if err != nil {
		return errorf("busybox", "%v", err)
	}
	img, err := newImage(l, "hack/images: "+busyboxPath+" with its applets", v1.Config{
		Cmd: []string{"sh"},
		Env: []string{defaultPath},
		Labels: map[string]string{
			inputsLabel:                        key,
			"org.opencontainers.image.version": version,
		},
	})
	if err != nil {
		return errorf("busybox", "%v", err)
	}
	if err := writeImage(out, img, ref); err != nil {
		return errorf("busybox", "writing %s: %v", out, err)
	}
	return nil
}

// checkStatic fails unless bin is an ELF executable without a program interpreter: the image has
// no libc, so Debian's dynamically linked "busybox" package would not start in it.
func checkStatic(bin []byte) error {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return errors.New("is not an ELF executable")
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("is dynamically linked (Debian's busybox, not busybox-static)")
		}
	}
	return nil
}

// busyboxApplets asks the host's busybox for its applets, as paths without the leading slash
// ("bin/sh", "usr/bin/awk"), and for its version ("v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1)").
func busyboxApplets(ctx context.Context) (applets []string, version string, err error) {
	out, err := exec.CommandContext(ctx, busyboxPath, "--list-full").Output()
	if err != nil {
		return nil, "", errors.New(busyboxPath + " --list-full: " + err.Error())
	}
	for _, line := range strings.Split(string(out), "\n") {
		if a := strings.Trim(strings.TrimSpace(line), "/"); a != "" && !strings.Contains(a, "..") {
			applets = append(applets, a)
		}
	}
	if len(applets) == 0 {
		return nil, "", errors.New(busyboxPath + " --list-full listed no applets")
	}
	// The first line of the help: "BusyBox v1.35.0 (Debian ...) multi-call binary." Its exit
	// status differs between builds, so only the text counts.
	help, _ := exec.CommandContext(ctx, busyboxPath, "--help").Output()
	first, _, _ := strings.Cut(string(help), "\n")
	version = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(first), "BusyBox "), " multi-call binary.")
	return applets, version, nil
}
