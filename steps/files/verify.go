package files

import (
	"context"
	"errors"
	"fmt"

	"planrun.dev/planrun/steps/storage"
)

// errVerify: the destination's listing after the copy disagrees with what was copied.
var errVerify = errors.New("verification failed")

// verify lists the destination once more after the copy and checks that every file is there
// with the size of its source (and the sha256 computed from the source, where the listing
// shows the object's recorded sum). Each streamed file was already checked against its sha256
// as it was written; this catches what happened after (a file removed or replaced under the
// copy, a service that acknowledged a write it lost).
func verify(ctx context.Context, to storage.Location, items []*item) error {
	listing, err := listDestination(ctx, to, items)
	if err != nil {
		return fmt.Errorf("verifying: %w", err)
	}
	for _, it := range items {
		e, ok := listing[it.dst]
		switch {
		case !ok:
			return fmt.Errorf("%w: %s: %s is missing after the copy", errVerify, to, it.dst)
		case e.Dir:
			return fmt.Errorf("%w: %s: %s is a folder after the copy", errVerify, to, it.dst)
		case e.Size != it.size:
			return fmt.Errorf("%w: %s: %s has %d bytes, the source %d", errVerify, to, it.dst, e.Size, it.size)
		case e.SHA256 != "" && it.sum != "" && e.SHA256 != it.sum:
			return fmt.Errorf("%w: %s: %s: %w: sha256 %s, the source %s", errVerify, to, it.dst, storage.ErrChecksum, e.SHA256, it.sum)
		}
	}
	return nil
}
