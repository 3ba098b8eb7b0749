package main

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/mod/modfile"
)

// findModule returns the nearest folder at or above start whose go.mod declares module path:
// the same walk as planrun's internal/controlplane, made strict about which go.mod it stops at
// because this module's own go.mod sits below planrun's.
func findModule(start, path string) (string, error) {
	for dir := start; ; dir = filepath.Dir(dir) {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modfile.ModulePath(data) == path {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod of module %s in %s or any folder above it", path, start)
		}
	}
}
