package mover

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/snapshot"

	"planrun.dev/planrun/steps/storage"
)

// A handoff lets a restore start before the backup it restores has finished: the backup names
// its snapshot (BackupOptions.Handoff) and the restore, already connected, waits for a complete
// snapshot of that name (WaitForSnapshot). A volume copy then pays for the target's pod start
// and repository open while the source is still being read, not after: for a stage copy of
// little change, that was half of the time.

// tagHandoff, on a complete data snapshot, is the name its backup was given for the restore
// waiting for it. Checkpoints never carry it: a restore must not take a partial tree.
const tagHandoff = "tag:planrun-handoff"

// ErrNoHandoff: the backup a restore waited for did not save its snapshot in time.
var ErrNoHandoff = errors.New("no snapshot handed off")

// Handoff polling: often at first (a stage copy's backup takes seconds), then less and less
// (a first copy's backup takes hours, and each poll is a few listings of the store): never
// later than a twentieth of the wait so far, at most handoffMaxPoll.
var (
	handoffMinPoll = 100 * time.Millisecond
	handoffMaxPoll = 5 * time.Second
)

// ConnectWaiting is ConnectRepository (ReadOnly) for a restore started with the first backup
// of a repository: while the location holds no repository yet, it waits for the backup to create
// it. It ends with ctx; an expired deadline is ErrNoRepository.
func ConnectWaiting(ctx context.Context, loc storage.Location, opts RepositoryOptions) (*Repository, error) {
	opts.ReadOnly = true
	start := time.Now()
	for {
		r, err := ConnectRepository(ctx, loc, opts)
		if !errors.Is(err, ErrNoRepository) {
			return r, err
		}
		if err := pause(ctx, start); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, fmt.Errorf("kopia repository in %s: %w after waiting %s for a backup to create it", storage.Display(loc.String()), ErrNoRepository, time.Since(start).Round(time.Second))
			}
			return nil, err
		}
	}
}

// pause waits before the next poll of a wait that started at start, or until ctx ends.
func pause(ctx context.Context, start time.Time) error {
	wait := min(max(handoffMinPoll, time.Since(start)/20), handoffMaxPoll)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
		return nil
	}
}

// WaitForSnapshot waits until a complete snapshot of sourceID named handoff is in rep and
// returns its ID. It ends with ctx; an expired deadline is ErrNoHandoff.
func WaitForSnapshot(ctx context.Context, rep repo.Repository, sourceID, handoff string) (string, error) {
	if sourceID == "" || handoff == "" {
		return "", errors.New("waiting for a snapshot: no source ID or handoff name")
	}
	si := sourceInfo(sourceID)
	start := time.Now()
	for {
		all, err := snapshot.ListSnapshots(ctx, rep, si)
		if err != nil && ctx.Err() == nil {
			return "", fmt.Errorf("waiting for the snapshot of %s named %q: %w", sourceID, handoff, err)
		}
		var found *snapshot.Manifest
		for _, m := range all {
			if m.IncompleteReason == "" && m.Tags[tagHandoff] == handoff && (found == nil || m.EndTime.After(found.EndTime)) {
				found = m
			}
		}
		if found != nil {
			return string(found.ID), nil
		}
		if err := pause(ctx, start); err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return "", fmt.Errorf("%w: no complete snapshot of %s named %q after %s", ErrNoHandoff, sourceID, handoff, time.Since(start).Round(time.Second))
			}
			return "", err
		}
		if err := rep.Refresh(ctx); err != nil && ctx.Err() == nil {
			return "", fmt.Errorf("waiting for the snapshot of %s named %q: reading the repository's indexes: %w", sourceID, handoff, err)
		}
	}
}
