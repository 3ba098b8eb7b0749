// Package modroot finds the root of planrun's module, for the tests and helpers that run what the
// repository keeps under hack/ (the control plane build, the image build) from any package.
package modroot

import (
	"fmt"
	"os"
	"path/filepath"
)

// Find returns the nearest folder at or above the working directory holding go.mod. Tests run in
// their package's folder, so from any package of planrun this is the repository's root.
func Find() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("reading the working directory: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		if parent := filepath.Dir(dir); parent == dir {
			return "", fmt.Errorf("no go.mod in %s or any folder above it", wd)
		}
	}
}
