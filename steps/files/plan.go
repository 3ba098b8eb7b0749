package files

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"syscall"

	"planrun.dev/planrun/internal/safepath"
	"planrun.dev/planrun/steps/storage"
)

// item is one file to copy: its path in the source and in the destination.
type item struct {
	src, dst string
	size     int64
	mode     fs.FileMode
	// outcome
	sum     string // sha256 (hex) when known: hashed while copied or compared, or recorded
	outcome outcome
	resumed bool // found done in the checkpoint and present in the destination's listing
}

// outcome is what happened to an item.
type outcome uint8

const (
	outcomeEqual      outcome = iota // already in the destination, equal: skipped
	outcomeCopied                    // streamed through planrun
	outcomeServerSide                // copied by the service itself
)

// plan lists the folders to create and the files to copy. A folder source copies its contents
// into the destination folder; a file source copies that file into it under its own name.
func (c *Copy) plan(ctx context.Context, from storage.Location) ([]storage.Entry, []*item, error) {
	root, err := from.Stat(ctx, "")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("from: %s does not exist", from)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("from: %w", err)
	}
	if !root.Dir {
		name := path.Base(strings.ReplaceAll(strings.SplitN(from.String(), "?", 2)[0], "\\", "/"))
		if err := safepath.Name("files.copy entry", name); err != nil {
			return nil, nil, fmt.Errorf("from: %w", err)
		}
		if !c.included(name) {
			return nil, nil, fmt.Errorf("from: %s is a file that include excludes", from)
		}
		return []storage.Entry{{Path: "", Mode: 0o755, Dir: true}}, []*item{{src: "", dst: name, size: root.Size, mode: root.Mode}}, nil
	}
	dirs := []storage.Entry{{Path: "", Mode: dirMode(root.Mode), Dir: true}}
	var items []*item
	err = from.Walk(ctx, "", func(e storage.Entry) error {
		// A location lists its own names; one that is not a safe relative path (an object
		// store key such as "../x") must not become a path in the destination.
		if err := safepath.Rel("files.copy entry", e.Path); err != nil {
			return fmt.Errorf("from: %s: %w", from, err)
		}
		if e.Dir {
			e.Mode = dirMode(e.Mode)
			dirs = append(dirs, e)
			return nil
		}
		if c.included(e.Path) {
			items = append(items, &item{src: e.Path, dst: e.Path, size: e.Size, mode: e.Mode})
		}
		return nil
	})
	if located(err) {
		return nil, nil, fmt.Errorf("from: %w", err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("from: listing %s: %w", from, err)
	}
	return dirs, items, nil
}

func dirMode(m fs.FileMode) fs.FileMode {
	if m == 0 {
		return 0o755
	}
	return m | 0o700 // the copy must be able to write into what it creates
}

func (c *Copy) included(p string) bool {
	if len(c.Include) == 0 {
		return true
	}
	for _, pat := range c.Include {
		subject := path.Base(p)
		if strings.Contains(pat, "/") {
			subject = p
		}
		if ok, _ := path.Match(pat, subject); ok {
			return true
		}
	}
	return false
}

// listDestination lists what the destination already holds, once, so that a file it does not
// hold costs no request at all (no HEAD per object) and one it holds with another size is
// copied without reading it. A single file is looked up on its own: the destination folder may
// hold far more than it.
func listDestination(ctx context.Context, to storage.Location, items []*item) (map[string]storage.Entry, error) {
	out := make(map[string]storage.Entry, len(items))
	if len(items) == 1 && items[0].src == "" {
		e, err := to.Stat(ctx, items[0].dst)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case errors.Is(err, syscall.ENOTDIR):
			// The destination is a file: creating the folder says so.
		case err != nil:
			return nil, fmt.Errorf("to: %w", err)
		default:
			out[e.Path] = e
		}
		return out, nil
	}
	err := to.Walk(ctx, "", func(e storage.Entry) error {
		out[e.Path] = e
		return nil
	})
	switch {
	case err == nil, errors.Is(err, fs.ErrNotExist):
	case errors.Is(err, syscall.ENOTDIR):
		// The destination is a file: creating the folder says so.
	case located(err):
		return nil, fmt.Errorf("to: %w", err)
	default:
		return nil, fmt.Errorf("to: listing %s: %w", to, err)
	}
	return out, nil
}
