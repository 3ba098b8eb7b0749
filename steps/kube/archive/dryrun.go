package archive

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/storage"
)

// A dry run must leave a backup location alone, yet the steps after a backup (its verify, a
// restore) should show what they would do with it. So a dry run writes the backup it was asked
// to write to a location into a temporary local folder instead, kept for the rest of the run and
// removed when the run ends; the steps that read that location in the same dry run read the
// folder.

// tempFolder is a dry run's stand-in for a backup location; closing it removes it.
type tempFolder struct {
	storage.Location
	dir string
}

func (f tempFolder) Close() error { return os.RemoveAll(f.dir) }

// dryRunKey names a location in the run's shared values: a local path by its absolute path (so
// that ./b, b and file:///abs/b are one backup), any other URL as storage.Redact writes it (so
// that the URL a step was given and the one a backup step's outputs name are one backup).
func dryRunKey(raw string) string {
	if storage.IsLocal(raw) {
		p := raw
		if strings.Contains(raw, "://") {
			if u, err := url.Parse(raw); err == nil {
				p = u.Path
			}
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		return "archive.dryrun/" + p
	}
	return "archive.dryrun/" + storage.Redact(raw)
}

// DryRunLocation returns the temporary folder a dry run writes the backup for the location raw
// into, making it on first use in the run.
func DryRunLocation(rc *engine.RunContext, raw string) (storage.Location, error) {
	v, err := rc.Shared(dryRunKey(raw), func() (any, error) {
		tmp, err := os.MkdirTemp("", "planrun-dry-run-backup-")
		if err != nil {
			return nil, fmt.Errorf("dry run: a temporary folder for the backup: %w", err)
		}
		return tempFolder{Location: storage.OpenLocal(tmp), dir: tmp}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(tempFolder).Location, nil
}

var errNoDryRunFolder = errors.New("no dry-run backup")

// DryRunWritten returns, in a dry run in which a backup step wrote the location raw, the
// temporary folder it wrote instead; ok is false otherwise (read raw itself).
func DryRunWritten(rc *engine.RunContext, raw string) (loc storage.Location, ok bool) {
	if !rc.DryRun {
		return nil, false
	}
	v, err := rc.Shared(dryRunKey(raw), func() (any, error) { return nil, errNoDryRunFolder })
	if err != nil {
		return nil, false
	}
	return v.(tempFolder).Location, true
}
