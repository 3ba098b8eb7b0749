package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"planrun.dev/planrun/internal/modroot"
)

// assetsEnv is the variable envtest users already know for pointing at prebuilt binaries.
const assetsEnv = "KUBEBUILDER_ASSETS"

// buildScript builds kube-apiserver and etcd from Go modules (nothing prebuilt can be downloaded
// here) and prints the folder holding them; relative to the module root.
const buildScript = "hack/build-control-plane.sh"

// FindBinaries returns the folder holding kube-apiserver and etcd: $KUBEBUILDER_ASSETS when set,
// otherwise the folder printed by hack/build-control-plane.sh, found by walking up from the
// working directory to go.mod so that tests of any package can call it. The script returns at
// once when its cache is warm; a cold cache takes several minutes, with progress on stderr.
func FindBinaries(ctx context.Context) (string, error) {
	return findBinaries(ctx, defaultBinaries...)
}

// defaultBinaries are what every control plane runs; a complete cluster also needs
// completeBinaries.
var (
	defaultBinaries  = []string{"kube-apiserver", "etcd"}
	completeBinaries = []string{"kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kubelet"}
)

// findBinaries is FindBinaries for the named binaries, which the build script builds if missing.
func findBinaries(ctx context.Context, names ...string) (string, error) {
	if dir := os.Getenv(assetsEnv); dir != "" {
		// An explicit setting is never second-guessed by falling back to a build.
		if err := checkBinaries(dir, names); err != nil {
			return "", fmt.Errorf("$%s=%s: %w", assetsEnv, dir, err)
		}
		return dir, nil
	}

	root, err := modroot.Find()
	if err != nil {
		return "", fmt.Errorf("finding kube-apiserver and etcd: %s is unset and %w", assetsEnv, err)
	}
	script := filepath.Join(root, buildScript)
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("finding kube-apiserver and etcd: %s is unset and %w", assetsEnv, err)
	}

	cmd := exec.CommandContext(ctx, "bash", append([]string{script}, names...)...)
	cmd.Dir = root
	cmd.Stderr = os.Stderr // a cold build runs for minutes; its progress must be visible
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building kube-apiserver and etcd with %s (set %s to use prebuilt ones): %w",
			script, assetsEnv, err)
	}
	dir := lastLine(out)
	if err := checkBinaries(dir, names); err != nil {
		return "", fmt.Errorf("folder %q printed by %s: %w", dir, script, err)
	}
	return dir, nil
}

// checkBinaries fails unless dir holds the named executable files, so that a wrong folder is
// reported by name instead of as a process that "failed to start".
func checkBinaries(dir string, names []string) error {
	var errs []error
	for _, name := range names {
		path := filepath.Join(dir, name)
		info, err := os.Stat(path)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%w (build it with %s %s)", err, buildScript, name))
		case info.IsDir() || info.Mode().Perm()&0o111 == 0:
			errs = append(errs, fmt.Errorf("%s is not an executable file", path))
		}
	}
	return errors.Join(errs...)
}

// lastLine returns the last non-empty line of out, trimmed.
func lastLine(out []byte) string {
	lines := bytes.Split(bytes.TrimSpace(out), []byte("\n"))
	return strings.TrimSpace(string(lines[len(lines)-1]))
}
