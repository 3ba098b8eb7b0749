package kubetest

import (
	"context"
	"os"
	"path/filepath"

	"planrun.dev/planrun/internal/controlplane"
)

// Kubectl is the path of the kubectl built with the control plane binaries, or "" when there is
// none. Benchmarks measure kubectl against planrun on the same API server.
func Kubectl() string {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		var err error
		if dir, err = controlplane.FindBinaries(context.Background()); err != nil {
			return ""
		}
	}
	p := filepath.Join(dir, "kubectl")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}
