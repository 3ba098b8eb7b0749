package archive

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"planrun.dev/planrun/engine"
)

// A dry run must leave a backup folder alone, yet the steps after a backup (its verify, a
// restore) should show what they would do with it. So a dry run writes the backup it was asked
// to write to dir into a temporary folder instead, kept for the rest of the run and removed when
// the run ends; the steps that read dir in the same dry run read that folder.

// tempFolder is a dry run's stand-in for a backup folder; closing it removes it.
type tempFolder string

func (f tempFolder) Close() error { return os.RemoveAll(string(f)) }

func dryRunKey(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	return "archive.dryrun/" + dir
}

// DryRunFolder returns the temporary folder a dry run writes the backup for dir into, making it
// on first use in the run.
func DryRunFolder(rc *engine.RunContext, dir string) (string, error) {
	v, err := rc.Shared(dryRunKey(dir), func() (any, error) {
		tmp, err := os.MkdirTemp("", "planrun-dry-run-backup-")
		if err != nil {
			return nil, fmt.Errorf("dry run: a temporary folder for the backup: %w", err)
		}
		return tempFolder(tmp), nil
	})
	if err != nil {
		return "", err
	}
	return string(v.(tempFolder)), nil
}

var errNoDryRunFolder = errors.New("no dry-run backup")

// ReadFolder is the folder to read the backup at dir from: in a dry run in which a backup step
// wrote dir, the temporary folder it wrote instead; else dir.
func ReadFolder(rc *engine.RunContext, dir string) string {
	if !rc.DryRun {
		return dir
	}
	v, err := rc.Shared(dryRunKey(dir), func() (any, error) { return nil, errNoDryRunFolder })
	if err != nil {
		return dir
	}
	return string(v.(tempFolder))
}
