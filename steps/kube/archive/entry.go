package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"planrun.dev/planrun/internal/safepath"
	"planrun.dev/planrun/steps/storage"
)

// ErrNotRegular is matched (errors.Is) by the error for an entry of a backup folder that is a
// symlink, a folder, a device or a pipe where a file is expected: a reader follows no link out of
// the backup and never blocks on a FIFO.
var ErrNotRegular = errors.New("not a regular file")

// openFile opens the file at rel (ManifestFile, or a path read from a manifest and checked by
// checkEntry) in the backup at loc. This is the only way this package reads a backup. A local
// folder is read through openEntry, which follows no symlink and reads no special file; an object
// store has neither, and its keys are rel under the location's prefix.
func openFile(ctx context.Context, loc storage.Location, rel string) (io.ReadCloser, error) {
	if lf, ok := loc.(storage.LocalFile); ok {
		return openEntry(lf.LocalPath(""), rel)
	}
	if err := safepath.Rel("backup entry", rel); err != nil {
		return nil, err
	}
	return loc.Open(ctx, rel)
}

// openEntry opens the file at rel, a slash-separated path read from a manifest, inside the
// backup folder dir. rel must pass safepath.Rel, and neither it nor any folder on the way may be
// a symlink; the file must be a regular file. This is the only way this package opens what a
// manifest names.
func openEntry(dir, rel string) (*os.File, error) {
	path, err := safepath.JoinRel(dir, "backup entry", rel)
	if err != nil {
		return nil, err
	}
	elems := strings.Split(rel, "/")
	at := dir
	for i, e := range elems {
		at = filepath.Join(at, e)
		fi, err := os.Lstat(at)
		if err != nil {
			return nil, err
		}
		last := i == len(elems)-1
		if !last && !fi.IsDir() || last && !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: %w (%s)", strings.Join(elems[:i+1], "/"), ErrNotRegular, fi.Mode().Type())
		}
	}
	f, err := os.OpenFile(path, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return nil, err
	}
	// Checked again on the open file: the entry may have been swapped since the Lstat.
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s: %w", rel, ErrNotRegular)
		}
		return nil, err
	}
	return f, nil
}
