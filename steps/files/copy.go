// Package files implements files.copy: copy backup folders, snapshot files and buckets from one
// location to another (local folders, S3, GCS, Azure, across providers), in parallel, skipping
// what is already there and equal, sha256-verified, server-side where both ends are one service,
// and resumable after a crash without copying again what the checkpoint says is done.
package files

import (
	"context"
	"errors"
	"fmt"
	"path"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/parallel"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/storage"
)

func init() {
	engine.Register(engine.StepType{
		Name: "files.copy",
		Doc: "Copy a folder, bucket prefix or file to a folder or bucket prefix (local, s3://, gs://, azblob://, across providers): " +
			"in parallel, skipping equal files (size and sha256), server-side within one service, sha256-verified, resumable.",
		New: func() engine.Action { return new(Copy) },
	})
}

const (
	// defaultWorkers is how many files are copied at once to or from an object store: each
	// object costs a few round trips whatever its size, so small objects need many in flight.
	defaultWorkers = 16
	// defaultLocalWorkers is the same between local folders, where the disk, not latency, is
	// the limit and more workers only add seeking.
	defaultLocalWorkers = 4
	// maxManifest bounds the per-file list kept in outputs (they are checkpointed); the counts
	// always cover every file.
	maxManifest = 1000
)

// Copy copies files from one location to another.
type Copy struct {
	From            string                   `yaml:"from" plan:"required" doc:"Source: a folder or bucket prefix (its contents are copied) or a single file or object; a plain path, file:///path, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix."`
	To              string                   `yaml:"to" plan:"required" doc:"Destination folder or bucket prefix, created if absent; a location URL as from. Another bucket of the same S3 service (same endpoint and credentials) is copied server-side: no bytes pass through planrun."`
	FromCredentials *storage.CredentialsFrom `yaml:"fromCredentials" doc:"Secret with the credentials of from (default: the provider's own chain: environment, profile, workload identity)."`
	ToCredentials   *storage.CredentialsFrom `yaml:"toCredentials" doc:"Secret with the credentials of to (default: the provider's own chain)."`
	Include         []string                 `yaml:"include" doc:"Copy only files matching one of these glob patterns (path.Match): a pattern with a slash matches the path relative to from, one without matches the file name. Default: every file."`
	Workers         int                      `yaml:"workers" doc:"Files copied in parallel (default 16 when either end is an object store, 4 between local folders). Memory is bounded: a buffer of at most 8 MiB per worker (files up to 8 MiB are read whole), and at most 4 larger files streamed at once through the upload's part buffers."`
}

var (
	_ engine.Action     = (*Copy)(nil)
	_ engine.Validator  = (*Copy)(nil)
	_ engine.Describer  = (*Copy)(nil)
	_ kube.AccessNeeder = (*Copy)(nil)
)

// Access implements kube.AccessNeeder:
//   - get on the Secrets fromCredentials and toCredentials name, each on its cluster.
func (c *Copy) Access() []kube.Rule {
	return append(c.FromCredentials.Access(), c.ToCredentials.Access()...)
}

// Validate implements engine.Validator.
func (c *Copy) Validate() error {
	if err := storage.Check(c.From); err != nil {
		return fmt.Errorf("from: %w", err)
	}
	if err := storage.Check(c.To); err != nil {
		return fmt.Errorf("to: %w", err)
	}
	if err := c.FromCredentials.Check(); err != nil {
		return fmt.Errorf("fromCredentials: %w", err)
	}
	if err := c.ToCredentials.Check(); err != nil {
		return fmt.Errorf("toCredentials: %w", err)
	}
	for i, p := range c.Include {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("include[%d]: bad pattern %q: %v", i, p, err)
		}
	}
	if c.Workers < 0 {
		return fmt.Errorf("workers: must be positive, got %d", c.Workers)
	}
	return nil
}

// Describe implements engine.Describer.
func (c *Copy) Describe() string {
	return fmt.Sprintf("copy %s to %s", storage.Redact(c.From), storage.Redact(c.To))
}

func (c *Copy) workers() int {
	switch {
	case c.Workers > 0:
		return c.Workers
	case storage.IsLocal(c.From) && storage.IsLocal(c.To):
		return defaultLocalWorkers
	}
	return defaultWorkers
}

// Run implements engine.Action: list the source and the destination once, copy what differs
// through workers, checkpoint what is done every so often, then check the destination's listing
// against what was copied.
func (c *Copy) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	from, err := storage.OpenFor(ctx, rc, c.From, c.FromCredentials)
	if err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	to, err := storage.OpenFor(ctx, rc, c.To, c.ToCredentials)
	if err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	dirs, items, err := c.plan(ctx, from)
	if err != nil {
		return nil, err
	}
	dst, err := listDestination(ctx, to, items)
	if err != nil {
		return nil, err
	}
	ck, err := loadCheckpoint(rc, from, to)
	if err != nil {
		return nil, err
	}

	if !rc.DryRun {
		for _, d := range dirs {
			if err := to.MkdirAll(ctx, d.Path, d.Mode); err != nil {
				return nil, fmt.Errorf("creating folder %q in %s: %w", d.Path, to, err)
			}
		}
	}

	var total int64
	for _, it := range items {
		total += it.size
	}
	cp := &copier{
		from: from, to: to, dst: dst, dryRun: rc.DryRun,
		progress: newProgress(rc, int64(len(items))),
		ck:       ck,
		bufs:     newBufferPool(c.workers()),
		streams:  make(chan struct{}, maxStreams),
		rc:       rc,
	}
	cp.serverCopier, _ = to.(storage.ServerCopier)
	cp.small = !storage.IsLocal(c.To) // object stores record a sum known before the upload
	err = parallel.Each(ctx, c.workers(), items, func(ctx context.Context, it *item) error {
		if err := cp.one(ctx, it); err != nil {
			if located(err) {
				return fmt.Errorf("copying %q: %w", it.src, err)
			}
			return fmt.Errorf("copying %q from %s to %s: %w", it.src, from, to, err)
		}
		return nil
	})
	cp.progress.flush()
	if err == nil && !rc.DryRun {
		err = verify(ctx, to, items)
	}
	if err != nil {
		// What was done before the failure is kept, so that resume does not do it again.
		if serr := ck.save(context.WithoutCancel(ctx), rc, true); serr != nil {
			err = errors.Join(err, serr)
		}
		return nil, err
	}
	return c.outputs(rc, from, to, items, total), nil
}

// outputs are the counts of the copy and a manifest of at most maxManifest files.
func (c *Copy) outputs(rc *engine.RunContext, from, to storage.Location, items []*item, total int64) engine.Outputs {
	var copied, skipped, serverSide, resumed, copiedBytes int64
	manifest := make([]any, 0, min(len(items), maxManifest))
	for _, it := range items {
		switch it.outcome {
		case outcomeCopied:
			copied++
			copiedBytes += it.size
		case outcomeServerSide:
			copied++
			serverSide++
			copiedBytes += it.size
		default:
			skipped++
		}
		if it.resumed {
			resumed++
		}
		if len(manifest) < maxManifest {
			m := map[string]any{"path": it.dst, "size": it.size, "copied": it.outcome != outcomeEqual}
			if it.sum != "" {
				m["sha256"] = it.sum
			}
			if it.mode != 0 {
				m["mode"] = fmt.Sprintf("%04o", it.mode)
			}
			if it.outcome == outcomeServerSide {
				m["serverSide"] = true
			}
			manifest = append(manifest, m)
		}
	}
	out := engine.Outputs{
		"from":       from.String(),
		"to":         to.String(),
		"files":      int64(len(items)),
		"bytes":      total,
		"skipped":    skipped,
		"serverSide": serverSide,
		"resumed":    resumed,
		"workers":    int64(c.workers()),
	}
	if rc.DryRun {
		out["dryRun"] = true
		out["wouldCopy"] = copied
		out["wouldCopyBytes"] = copiedBytes
	} else {
		out["copied"] = copied
		out["copiedBytes"] = copiedBytes
	}
	out["manifest"] = manifest
	if len(items) > maxManifest {
		out["manifestTruncated"] = true
	}
	return out
}

// located reports whether err already names its location and path (a *storage.Error), so that
// a message need not name them twice.
func located(err error) bool {
	var se *storage.Error
	return errors.As(err, &se)
}
