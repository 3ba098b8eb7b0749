package images

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"planrun.dev/planrun/internal/modroot"
)

// Build builds the named images (all three when none is named) into CacheDir and returns each
// name's tarball path. hack/images keeps a busybox or pause tarball whose inputs did not change
// (then Build returns in about a second, once go run's build of that command is cached) and
// always rebuilds planrun's, which takes seconds when go build's cache is warm. A cold first run
// compiles the command and its dependencies: a few minutes on 2 cores. Its progress goes to
// stderr, like hack/build-control-plane.sh's in controlplane.FindBinaries.
func Build(ctx context.Context, names ...string) (map[string]string, error) {
	root, err := modroot.Find()
	if err != nil {
		return nil, fmt.Errorf("building images: %w", err)
	}
	dir, err := CacheDir()
	if err != nil {
		return nil, fmt.Errorf("building images: %w", err)
	}
	args := append([]string{"-C", filepath.Join(root, "hack", "images"), "run", ".", "-out", dir}, names...)
	cmd := exec.CommandContext(ctx, "go", args...)
	var stdout bytes.Buffer
	stderr := &tail{max: 4 << 10}
	cmd.Stdout = &stdout
	cmd.Stderr = io.MultiWriter(os.Stderr, stderr)
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("building images: go %s: %w%s", strings.Join(args, " "), err, stderr.summary())
	}

	// The command prints one path per image, DIR/NAME.tar.
	paths := map[string]string{}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if p := strings.TrimSpace(line); p != "" {
			paths[strings.TrimSuffix(filepath.Base(p), ".tar")] = p
		}
	}
	if len(names) == 0 {
		names = []string{Busybox, Pause, Planrun}
	}
	for _, n := range names {
		if paths[n] == "" {
			return nil, fmt.Errorf("building images: go %s printed no tarball for %s (stdout: %q)", strings.Join(args, " "), n, stdout.String())
		}
	}
	return paths, nil
}

// CacheDir is where Build (and make image) put the tarballs:
// ${XDG_CACHE_HOME:-$HOME/.cache}/planrun/images, next to the control plane binaries.
func CacheDir() (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "planrun", "images"), nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	max int
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

// summary is the last lines of stderr on one line, after ": ", without hack/images' progress
// ("images: ...") and the "exit status N" that go run adds (the error says it already): usually
// the one line hack/images failed with, or the compiler's last errors.
func (t *tail) summary() string {
	var lines []string
	for _, l := range strings.Split(string(t.buf), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "images: ") && !strings.HasPrefix(l, "exit status ") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return ": " + strings.Join(lines[max(0, len(lines)-5):], " | ")
}
