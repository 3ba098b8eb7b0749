package kubebackup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"planrun.dev/planrun/internal/parallel"
	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/storage"
)

// MarkerFile marks a location as a planrun backup from the moment a backup starts writing into
// it, so that a backup interrupted before its manifest was written is recognised and replaced.
const MarkerFile = ".planrun-backup"

// checkLocation applies the rules of to: to a folder or a bucket prefix: absent or empty, or a
// previous planrun backup (complete: manifest.json, or interrupted: the marker), or anything
// else only with overwrite. It only reads, so a dry run checks the real location with it. It
// reports whether it saw the marker, which then need not be written again.
func checkLocation(ctx context.Context, loc storage.Location, overwrite bool) (marker bool, err error) {
	root, err := loc.Stat(ctx, "")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("to: %w", err)
	case !root.Dir:
		return false, fmt.Errorf("to: %s is a file, want a folder or a bucket prefix", loc)
	}
	empty, err := isEmpty(ctx, loc)
	if err != nil || empty || overwrite {
		return false, err
	}
	for _, name := range []string{MarkerFile, archive.ManifestFile} {
		_, err := loc.Stat(ctx, name)
		if err == nil {
			return name == MarkerFile, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("to: %w", err)
		}
	}
	return false, fmt.Errorf("to: %s is not empty and is not a planrun backup folder (set overwrite: true to write into it anyway)", loc)
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
// then on the location holds an incomplete backup) and the marker is written (unless checkLocation
// saw it). What resources/ holds is sorted: the files keep lists (path → size: those of the lists
// a resumed backup finished before and does not list again) that are there with that size are
// returned as present; every other file is a leftover of an earlier backup, removed once this one
// has written its files (removeLeftovers). A local folder without files to keep is simply
// cleared, folders included; in a bucket, deleting costs a request per object, and the files this
// backup writes again are overwritten in place instead.
func prepareLocation(ctx context.Context, loc storage.Location, keep map[string]int64, marker bool) (present map[string]bool, leftovers []string, err error) {
	if err := loc.MkdirAll(ctx, "", 0o755); err != nil {
		return nil, nil, fmt.Errorf("to: %w", err)
	}
	if err := loc.Remove(ctx, archive.ManifestFile); err != nil {
		return nil, nil, fmt.Errorf("to: %w", err)
	}
	if !marker {
		if err := storage.WriteFile(ctx, loc, MarkerFile, []byte("planrun backup folder: manifest.json is written last\n"), 0o644); err != nil {
			return nil, nil, fmt.Errorf("to: %w", err)
		}
	}
	if _, local := loc.(storage.LocalFile); local && len(keep) == 0 {
		if err := loc.RemoveAll(ctx, archive.ResourcesDir); err != nil {
			return nil, nil, fmt.Errorf("to: %w", err)
		}
		return nil, nil, nil
	}
	present = map[string]bool{}
	err = loc.Walk(ctx, archive.ResourcesDir, func(e storage.Entry) error {
		if e.Dir {
			return nil
		}
		if size, ok := keep[e.Path]; ok && size == e.Size {
			present[e.Path] = true
		} else {
			leftovers = append(leftovers, e.Path)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("to: %w", err)
	}
	return present, leftovers, nil
}

// removeLeftovers removes the files of an earlier backup that this one has not written again,
// before its manifest makes it complete: a backup holds only what its manifest lists.
func removeLeftovers(ctx context.Context, loc storage.Location, leftovers []string, jobs []*job) error {
	written := map[string]bool{}
	for _, j := range jobs {
		for _, f := range j.files {
			written[f.Path] = true
		}
	}
	var stale []string
	for _, p := range leftovers {
		if !written[p] {
			stale = append(stale, p)
		}
	}
	return parallel.Each(ctx, 16, stale, func(ctx context.Context, p string) error {
		if err := loc.Remove(ctx, p); err != nil {
			return fmt.Errorf("to: %w", err)
		}
		return nil
	})
}
