package archive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"

	"planrun.dev/planrun/steps/storage"
)

// WriteManifest writes the manifest, the last file of a backup: it appears whole or not at all
// (a temporary file renamed into place, or an object committed in one piece). Its version
// follows from its compression (Version, or VersionCompressed).
func WriteManifest(ctx context.Context, loc storage.Location, m *Manifest) error {
	m.Version = Version
	if m.Compression != None {
		m.Version = VersionCompressed
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return storage.WriteFile(ctx, loc, ManifestFile, append(data, '\n'), 0o644)
}

// MaxManifestSize bounds the manifest read from a backup (a manifest lists one entry per
// resource and namespace; a million entries stay well below it).
const MaxManifestSize = 256 << 20

// ErrIncomplete is matched (errors.Is) by the error for a location without a manifest: no
// backup, or one that did not finish.
var ErrIncomplete = errors.New("not a complete backup")

// ReadManifest reads a backup's manifest.
func ReadManifest(ctx context.Context, loc storage.Location) (*Manifest, error) {
	m, _, err := ReadManifestFile(ctx, loc)
	return m, err
}

// ReadManifestFile reads a backup's manifest and returns its bytes too (their sha256 identifies
// the backup), read once so that both describe the same file.
func ReadManifestFile(ctx context.Context, loc storage.Location) (*Manifest, []byte, error) {
	f, err := openFile(ctx, loc, ManifestFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s is %w: no %s", loc, ErrIncomplete, ManifestFile)
	}
	if err != nil {
		return nil, nil, located(loc, ManifestFile, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return nil, nil, located(loc, ManifestFile, err)
	}
	if len(data) > MaxManifestSize {
		return nil, nil, located(loc, ManifestFile, fmt.Errorf("larger than %d bytes", MaxManifestSize))
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, nil, located(loc, ManifestFile, err)
	}
	return m, data, nil
}

// ParseManifest decodes a manifest and checks it: its version and compression, and every file
// path with safepath.Rel (no "..", no absolute path, no backslash or control byte), inside
// resources/. A crafted manifest cannot make a reader open anything outside its backup.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	switch m.Version {
	case Version:
		if m.Compression != None {
			return nil, fmt.Errorf("backup format version %d has no compression, this one says %q", Version, m.Compression)
		}
	case VersionCompressed:
		if m.Compression != Gzip && m.Compression != Zstd {
			return nil, fmt.Errorf("compression %q is not supported (want gzip or zstd)", m.Compression)
		}
	default:
		return nil, fmt.Errorf("backup format version %d is not supported (want %d or %d)", m.Version, Version, VersionCompressed)
	}
	for i, r := range m.Resources {
		for j, f := range r.Files {
			if err := checkEntry(f.Path); err != nil {
				return nil, fmt.Errorf("resources[%d].files[%d]: %w", i, j, err)
			}
		}
	}
	return &m, nil
}

// located names the backup and the file in err, unless it is a *storage.Error or a
// *DamagedError, which name both.
func located(loc storage.Location, rel string, err error) error {
	var se *storage.Error
	var de *DamagedError
	if errors.As(err, &se) || errors.As(err, &de) {
		return err
	}
	return fmt.Errorf("backup %s: %s: %w", loc, rel, err)
}
