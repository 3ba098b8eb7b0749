package etcdsnapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/safepath"
	"planrun.dev/planrun/steps/storage"
)

// snapshotFile is where a snapshot file is, as a step's config names it (a path, file:// or an
// object store URL): the location of its folder and its name there, so that its manifest,
// beside it, is reached through the same location.
type snapshotFile struct {
	dir, name string
	// url and manifestURL name the file and its manifest in outputs and messages: a local
	// path, or the URL without credentials.
	url, manifestURL string
}

func parseSnapshotFile(raw string) (snapshotFile, error) {
	dir, name, err := storage.SplitFile(raw)
	if err != nil {
		return snapshotFile{}, err
	}
	show := func(name string) string {
		p := storage.JoinFile(dir, name)
		if storage.IsLocal(dir) {
			return p // a path, which Redact would take for a URL (a "#" or a "?" in it)
		}
		return storage.Redact(p)
	}
	return snapshotFile{dir: dir, name: name, url: show(name), manifestURL: show(name + ManifestSuffix)}, nil
}

func (f snapshotFile) manifestName() string { return f.name + ManifestSuffix }

// open opens the location of the file's folder, with the credentials of the Secret from names
// (nil: the provider's default chain).
func (f snapshotFile) open(ctx context.Context, rc *engine.RunContext, from *storage.CredentialsFrom) (storage.Location, error) {
	return storage.OpenFor(ctx, rc, f.dir, from)
}

// fail says what failed on f: a storage error already names the location, the path and the
// operation; another (a local file's) is said to be about f.
func (f snapshotFile) fail(field, doing string, err error) error {
	var se *storage.Error
	if errors.As(err, &se) {
		return fmt.Errorf("%s: %w", field, err)
	}
	return fmt.Errorf("%s: %s %s: %w", field, doing, f.url, err)
}

// maxManifest bounds what is read of a manifest: a few hundred bytes in practice.
const maxManifest = 1 << 20

// readManifest reads the manifest beside f; a missing one gives an fs.ErrNotExist error.
func readManifest(ctx context.Context, loc storage.Location, f snapshotFile) (*Manifest, error) {
	r, err := loc.Open(ctx, f.manifestName())
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", f.manifestURL, err)
	}
	if len(b) > maxManifest {
		return nil, fmt.Errorf("manifest %s: larger than %d bytes: not a snapshot manifest", f.manifestURL, maxManifest)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %v", f.manifestURL, err)
	}
	// file is a base name beside the manifest; a crafted one ("../x", "/etc/x") is refused so
	// that nothing ever joins it to a folder.
	if err := safepath.Name("snapshot file", m.File); err != nil {
		return nil, fmt.Errorf("manifest %s: file: %w", f.manifestURL, err)
	}
	return &m, nil
}
