package kubebackup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/storage"
)

// MarkerFile marks a location as a planrun backup from the moment a backup starts writing into
// it, so that a backup interrupted before its manifest was written is recognised and replaced.
const MarkerFile = ".planrun-backup"

// checkLocation applies the rules of to: to a folder or a bucket prefix: absent or empty, or a
// previous planrun backup (complete: manifest.json, or interrupted: the marker), or anything
// else only with overwrite. It only reads, so a dry run checks the real location with it.
func checkLocation(ctx context.Context, loc storage.Location, overwrite bool) error {
	root, err := loc.Stat(ctx, "")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("to: %w", err)
	case !root.Dir:
		return fmt.Errorf("to: %s is a file, want a folder or a bucket prefix", loc)
	}
	empty, err := isEmpty(ctx, loc)
	if err != nil || empty || overwrite {
		return err
	}
	for _, name := range []string{archive.ManifestFile, MarkerFile} {
		_, err := loc.Stat(ctx, name)
		if err == nil {
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("to: %w", err)
		}
	}
	return fmt.Errorf("to: %s is not empty and is not a planrun backup folder (set overwrite: true to write into it anyway)", loc)
}

var errNotEmpty = errors.New("not empty")

// isEmpty reports whether the location holds nothing, listing at most one entry.
func isEmpty(ctx context.Context, loc storage.Location) (bool, error) {
	err := loc.Walk(ctx, "", func(storage.Entry) error { return errNotEmpty })
	switch {
	case errors.Is(err, errNotEmpty):
		return false, nil
	case errors.Is(err, fs.ErrNotExist):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("to: %w", err)
	}
	return true, nil
}

// prepareLocation makes a checked location ready for a new backup: the manifest goes first (from
// then on the location holds an incomplete backup), the marker is written, and resources/ is
// cleared, except the files that keep lists (path → size): those of the lists a resumed backup
// finished before, which it does not list again. It returns the paths of keep that are really
// there with their size; anything else under resources/ is removed.
func prepareLocation(ctx context.Context, loc storage.Location, keep map[string]int64) (map[string]bool, error) {
	if err := loc.MkdirAll(ctx, "", 0o755); err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	if err := loc.Remove(ctx, archive.ManifestFile); err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	if err := storage.WriteFile(ctx, loc, MarkerFile, []byte("planrun backup folder: manifest.json is written last\n"), 0o644); err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	if len(keep) == 0 {
		if err := loc.RemoveAll(ctx, archive.ResourcesDir); err != nil {
			return nil, fmt.Errorf("to: %w", err)
		}
		return nil, nil
	}
	present := map[string]bool{}
	var stale []string
	err := loc.Walk(ctx, archive.ResourcesDir, func(e storage.Entry) error {
		if e.Dir {
			return nil
		}
		if size, ok := keep[e.Path]; ok && size == e.Size {
			present[e.Path] = true
		} else {
			stale = append(stale, e.Path)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("to: %w", err)
	}
	for _, p := range stale {
		if err := loc.Remove(ctx, p); err != nil {
			return nil, fmt.Errorf("to: %w", err)
		}
	}
	return present, nil
}
