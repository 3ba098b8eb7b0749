// Package files implements files.copy: copy backup folders and snapshot files from one location
// to another, verified by sha256, in parallel, skipping what is already there and equal.
package files

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"sync"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/parallel"
	"planrun.dev/planrun/internal/safepath"
	"planrun.dev/planrun/steps/storage"
)

func init() {
	engine.Register(engine.StepType{
		Name: "files.copy",
		Doc:  "Copy a folder or file to a folder (local path or file:// URL), sha256-verified, in parallel, skipping equal files.",
		New:  func() engine.Action { return new(Copy) },
	})
}

const (
	defaultWorkers = 4
	// maxManifest bounds the per-file list kept in outputs (they are checkpointed); the counts
	// always cover every file.
	maxManifest = 1000
)

// Copy copies files from one location to another.
type Copy struct {
	From            string                   `yaml:"from" plan:"required" doc:"Source: a folder or bucket prefix (its contents are copied) or a single file or object; a plain path, file:///path, s3://bucket/prefix, gs://bucket/prefix or azblob://container/prefix."`
	To              string                   `yaml:"to" plan:"required" doc:"Destination folder or bucket prefix, created if absent; a location URL as from."`
	FromCredentials *storage.CredentialsFrom `yaml:"fromCredentials" doc:"Secret with the credentials of from (default: the provider's own chain: environment, profile, workload identity)."`
	ToCredentials   *storage.CredentialsFrom `yaml:"toCredentials" doc:"Secret with the credentials of to (default: the provider's own chain)."`
	Include         []string                 `yaml:"include" doc:"Copy only files matching one of these glob patterns (path.Match): a pattern with a slash matches the path relative to from, one without matches the file name. Default: every file."`
	Workers         int                      `yaml:"workers" doc:"Files copied in parallel (default 4)."`
}

var (
	_ engine.Action    = (*Copy)(nil)
	_ engine.Validator = (*Copy)(nil)
	_ engine.Describer = (*Copy)(nil)
)

// Validate implements engine.Validator.
func (c *Copy) Validate() error {
	if err := storage.Check(c.From); err != nil {
		return fmt.Errorf("from: %w", err)
	}
	if err := storage.Check(c.To); err != nil {
		return fmt.Errorf("to: %w", err)
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
func (c *Copy) Describe() string { return fmt.Sprintf("copy %s to %s", c.From, c.To) }

// item is one file to copy: its path in the source and in the destination.
type item struct {
	src, dst string
	size     int64
	mode     fs.FileMode
	// outcome
	sum    string
	copied bool
}

// Run implements engine.Action.
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
	p := &progress{rc: rc, total: int64(len(items))}
	workers := c.Workers
	if workers == 0 {
		workers = defaultWorkers
	}
	err = parallel.Each(ctx, workers, items, func(ctx context.Context, it *item) error {
		if err := copyOne(ctx, from, to, it, rc.DryRun, p); err != nil {
			return fmt.Errorf("copying %q from %s to %s: %w", it.src, from, to, err)
		}
		p.file()
		return nil
	})
	if err != nil {
		return nil, err
	}

	var copied, skipped, copiedBytes int64
	manifest := make([]any, 0, min(len(items), maxManifest))
	for _, it := range items {
		if it.copied {
			copied++
			copiedBytes += it.size
		} else {
			skipped++
		}
		if len(manifest) < maxManifest {
			m := map[string]any{"path": it.dst, "size": it.size, "copied": it.copied}
			if it.sum != "" {
				m["sha256"] = it.sum
			}
			if it.mode != 0 {
				m["mode"] = fmt.Sprintf("%04o", it.mode)
			}
			manifest = append(manifest, m)
		}
	}
	out := engine.Outputs{
		"from":    from.String(),
		"to":      to.String(),
		"files":   int64(len(items)),
		"bytes":   total,
		"skipped": skipped,
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
	return out, nil
}

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
		name := path.Base(strings.ReplaceAll(from.String(), "\\", "/"))
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

// copyOne copies one file unless the destination already holds the same bytes (and mode, where
// both ends have modes). The source is hashed while it is copied; the destination checks what
// it stored against that hash before the file takes its final name (Upload.Commit).
func copyOne(ctx context.Context, from, to storage.Location, it *item, dryRun bool, p *progress) error {
	same, err := sameFile(ctx, from, to, it)
	if err != nil {
		return err
	}
	if same {
		p.add(it.size)
		return nil
	}
	it.copied = true
	if dryRun {
		return nil
	}
	r, err := from.Open(ctx, it.src)
	if err != nil {
		return err
	}
	defer r.Close()
	known := ""
	if k, ok := r.(storage.KnownSHA256); ok {
		known = k.SHA256()
	}
	w, err := to.Create(ctx, it.dst, storage.CreateOptions{Mode: it.mode, SHA256: known})
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h, p), &ctxReader{ctx: ctx, r: r})
	if err == nil && n != it.size {
		err = fmt.Errorf("source changed while being copied: listed %d bytes, read %d", it.size, n)
	}
	if err != nil {
		_ = w.Abort()
		return err
	}
	it.sum = hex.EncodeToString(h.Sum(nil))
	if err := w.Commit(ctx, it.sum); err != nil {
		_ = w.Abort()
		return err
	}
	return nil
}

// sameFile reports whether the destination already holds the file: same size, same mode (when
// both ends have modes) and same sha256. Sizes are compared first so that the usual cases (a
// missing or different file) cost no reading.
func sameFile(ctx context.Context, from, to storage.Location, it *item) (bool, error) {
	d, err := to.Stat(ctx, it.dst)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if d.Dir {
		return false, fmt.Errorf("the destination %q is a folder", it.dst)
	}
	if d.Size != it.size || (d.Mode != 0 && it.mode != 0 && d.Mode != it.mode) {
		return false, nil
	}
	dstSum, err := sum(ctx, to, it.dst)
	if err != nil {
		return false, fmt.Errorf("reading the destination: %w", err)
	}
	srcSum, err := sum(ctx, from, it.src)
	if err != nil {
		return false, err
	}
	if srcSum != dstSum {
		return false, nil
	}
	it.sum = srcSum
	return true, nil
}

func sum(ctx context.Context, l storage.Location, p string) (string, error) {
	if e, err := l.Stat(ctx, p); err == nil && e.SHA256 != "" {
		return e.SHA256, nil
	}
	r, err := l.Open(ctx, p)
	if err != nil {
		return "", err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, &ctxReader{ctx: ctx, r: r}); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ctxReader stops a long copy when the run is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(b)
}

// progress counts files done and bytes copied (or found equal) across workers.
type progress struct {
	rc           *engine.RunContext
	mu           sync.Mutex
	total, files int64
	bytes        int64
}

func (p *progress) Write(b []byte) (int, error) {
	p.add(int64(len(b)))
	return len(b), nil
}

func (p *progress) add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bytes += n
	p.rc.Progress(engine.Progress{Done: p.files, Total: p.total, Bytes: p.bytes, Unit: "files"})
}

func (p *progress) file() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.files++
	p.rc.Progress(engine.Progress{Done: p.files, Total: p.total, Bytes: p.bytes, Unit: "files"})
}
