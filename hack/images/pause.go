package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// pauseRef is the sandbox image a test node's containerd is configured with
// (sandbox_image in its CRI config; planrun's internal/images.PauseImage).
const pauseRef = "planrun.local/pause:3.10"

// buildPause makes the pod sandbox image: the static Go program in pause/, alone at /pause.
//
// Why a program and not busybox's `sleep` as entrypoint: containerd 1.6's CRI stops a sandbox
// with SIGKILL (pkg/cri/server/sandbox_stop.go, stopSandboxContainer), so sleep would do for
// kubelet; but as pid 1 sleep ignores SIGTERM and SIGINT (the kernel drops signals pid 1 has no
// handler for), so `ctr task kill` and anything else that asks politely would leave it running,
// and sleep does not reap the zombies of a pod with shareProcessNamespace. The program does both
// in a few lines and keeps this image free of busybox, like registry.k8s.io/pause.
//
// The program is built on every run (go build's cache makes that a fraction of a second when
// nothing changed); the cache key is this program's source plus the pause binary.
func buildPause(ctx context.Context, j *job, out string) error {
	bin, err := goBuildPause(ctx, j.imagesDir)
	if err != nil {
		return errorf("pause", "%v", err)
	}
	sum := sha256.Sum256(bin)
	key := cacheKey(j.self, hex.EncodeToString(sum[:]))
	ref, err := name.NewTag(pauseRef)
	if err != nil {
		return errorf("pause", "%v", err)
	}
	if upToDate(out, ref, key) {
		logf("pause: inputs unchanged, keeping %s", out)
		return nil
	}
	t := tree{}
	t.file("pause", 0o755, bin)
	l, err := t.layer()
	if err != nil {
		return errorf("pause", "%v", err)
	}
	img, err := newImage(l, "hack/images: go build ./pause", v1.Config{
		Entrypoint: []string{"/pause"},
		// Like registry.k8s.io/pause: the sandbox needs no privilege of its own.
		User:   "65535:65535",
		Labels: map[string]string{inputsLabel: key},
	})
	if err != nil {
		return errorf("pause", "%v", err)
	}
	if err := writeImage(out, img, ref); err != nil {
		return errorf("pause", "writing %s: %v", out, err)
	}
	return nil
}

// goBuildPause builds pause/ statically for linux on this machine's architecture and returns
// the binary. -trimpath and an empty build id make the bytes depend only on the source and the
// Go toolchain, not on where the checkout is, so the cache key holds across checkouts.
func goBuildPause(ctx context.Context, imagesDir string) ([]byte, error) {
	tmp, err := os.MkdirTemp("", "planrun-pause-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "pause")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", bin, "./pause")
	cmd.Dir = imagesDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, &cmdError{cmd: "go build ./pause", err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	return os.ReadFile(bin)
}

// cmdError is a failed command with the end of what it wrote on stderr, on one line.
type cmdError struct {
	cmd    string
	err    error
	stderr string
}

func (e *cmdError) Error() string {
	msg := e.cmd + ": " + e.err.Error()
	if e.stderr != "" {
		s := strings.Join(strings.Fields(e.stderr), " ")
		if len(s) > 400 {
			s = "..." + s[len(s)-400:]
		}
		msg += ": " + s
	}
	return msg
}
