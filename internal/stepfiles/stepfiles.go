// Package stepfiles reads the files of a step's folder (logs, command output) safely: the folder
// is written by commands the plan runs, which may still be running and may leave links or FIFOs.
// planrun logs prints them, --artifacts uploads them, the console shows them.
package stepfiles

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// List returns the regular files of a step's folder, by name; files still being written for a
// rename (*.tmp) are left out.
func List(dir string) ([]string, error) {
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || strings.HasSuffix(p, ".tmp") {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		names = append(names, rel)
		return err
	})
	sort.Strings(names)
	return names, err
}

// Open opens a file of a step's folder inside the folder only, never through a link and
// without blocking on a FIFO: the folder is written by commands the plan runs, which may still be
// running.
func Open(root *os.Root, name string) (*os.File, os.FileInfo, error) {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("%s: not a regular file", name)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, st, nil
}

// Each calls fn with each regular file of a step's folder, opened; several says whether
// the folder holds more than one. A file gone since the folder was listed is skipped.
func Each(dir string, fn func(name string, f *os.File, st os.FileInfo, several bool) error) error {
	names, err := List(dir)
	if err != nil || len(names) == 0 {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for _, name := range names {
		f, st, err := Open(root, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		err = fn(name, f, st, len(names) > 1)
		f.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// ErrNotListed is returned by OpenListed for a name that is not one of the folder's files.
var ErrNotListed = errors.New("not a file of the step")

// OpenListed opens one file of a step's folder by the name List gives it; any other name (a
// path out of the folder, a link, a file being written) is refused.
func OpenListed(dir, name string) (*os.File, os.FileInfo, error) {
	names, err := List(dir)
	if err != nil {
		return nil, nil, err
	}
	i := sort.SearchStrings(names, name)
	if i == len(names) || names[i] != name {
		return nil, nil, fmt.Errorf("%q: %w", name, ErrNotListed)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	return Open(root, name)
}
