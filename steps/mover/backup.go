package mover

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/compression"
	"github.com/kopia/kopia/repo/manifest"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
	"github.com/kopia/kopia/snapshot/policy"
	"github.com/kopia/kopia/snapshot/upload"
	"golang.org/x/sys/unix"
)

// DefaultCheckpointInterval is how often a backup saves a checkpoint (an incomplete snapshot,
// with the index of what it holds) that a backup killed later resumes from.
const DefaultCheckpointInterval = 30 * time.Second

// defaultCompressor compresses file contents. Measured with BenchmarkMoverStage (256 MiB, half
// of its 4 KiB blocks random, half text-like; 2 shared cores, three runs each, interleaved):
// s2-default backs up at 79-180 MB/s and restores at 67-94 MB/s, storing 63.7 % of the data;
// zstd-fastest 53-74 and 55-74 MB/s, storing 60.7 %. The mover is CPU-bound on small pods, so
// 5 % more bytes buy about twice the speed.
const defaultCompressor compression.Name = "s2-default"

// BackupOptions say what Backup snapshots.
type BackupOptions struct {
	// Dir is the folder to snapshot (the mounted claim).
	Dir string
	// SourceID names the volume across stages ("<cluster-uid>/<namespace>/<claim>"): a backup
	// starts from the latest complete snapshot of the same source and from the checkpoints of
	// the backups of it that were killed since.
	SourceID string
	// Stage says the volume is in use: a file that changes or vanishes while it is read is a
	// warning (the next stage copies it again). In a final copy (Stage false) it is an error:
	// the application was not quiesced.
	Stage bool
	// Events receives progress (about once a second) and warnings; nil: none.
	Events func(Event)
	// CheckpointInterval is how often a checkpoint is saved (0: DefaultCheckpointInterval; at
	// most 45 minutes, kopia's limit).
	CheckpointInterval time.Duration
	// Parallel is how many files are read at once (0: the number of CPUs).
	Parallel int
	// Handoff names the complete snapshot for a restore that waits for it (WaitForSnapshot);
	// "": none. It should be unique to one copy of one volume.
	Handoff string

	compressor compression.Name // tests and benchmarks; "": defaultCompressor
	hooks      *testHooks
}

// BackupResult is what Backup did; it is also the "result" event of a backup.
type BackupResult struct {
	// Snapshot is the ID of the snapshot manifest (Restore's and Verify's Snapshot).
	Snapshot string `json:"snapshot"`
	// Files, Dirs and Bytes are the snapshot's regular files (each name counted), folders and
	// the files' total size.
	Files int64 `json:"files"`
	Dirs  int64 `json:"dirs"`
	Bytes int64 `json:"bytes"`
	// HashedBytes is what was read from Dir (new and changed files); CachedFiles the files not
	// read: unchanged since the parent snapshot (same size, mtime, mode, owner), or already
	// read by a killed run whose checkpoint this one resumed.
	HashedBytes int64 `json:"hashedBytes"`
	CachedFiles int64 `json:"cachedFiles"`
	// UploadedBytes is what was written to the repository's storage: new data after dedup and
	// compression, and metadata.
	UploadedBytes int64   `json:"uploadedBytes"`
	Warnings      int64   `json:"warnings"`
	Seconds       float64 `json:"seconds"`
}

// sourceInfo is the kopia source of a volume; indexSourceInfo that of its indexes' manifests.
func sourceInfo(id string) snapshot.SourceInfo {
	return snapshot.SourceInfo{Host: sourceHost, UserName: sourceUser, Path: id}
}

func indexSourceInfo(id string) snapshot.SourceInfo {
	return snapshot.SourceInfo{Host: sourceHost, UserName: indexUser, Path: id}
}

func manifestID(s string) manifest.ID { return manifest.ID(s) }

// Backup snapshots opts.Dir into rep under opts.SourceID. Unchanged files (kopia compares size,
// mtime, mode and owner with the parent snapshot) are not read again; the others are read once,
// kopia chunking, deduplicating, compressing and uploading them while the mover hashes the same
// bytes for the index. A checkpoint is saved every CheckpointInterval, so that a backup killed
// halfway and run again reads and uploads only what the checkpoint does not hold.
func Backup(ctx context.Context, rep repo.Repository, opts BackupOptions) (BackupResult, error) {
	start := time.Now()
	if opts.SourceID == "" {
		return BackupResult{}, errors.New("backup: no source ID")
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = DefaultCheckpointInterval
	}
	if opts.CheckpointInterval > upload.DefaultCheckpointInterval {
		return BackupResult{}, fmt.Errorf("backup: checkpoint interval %v is over kopia's limit, %v", opts.CheckpointInterval, upload.DefaultCheckpointInterval)
	}
	if opts.Parallel <= 0 {
		opts.Parallel = runtime.NumCPU()
	}
	if opts.compressor == "" {
		opts.compressor = defaultCompressor
	}
	b := &backupRun{opts: opts, si: sourceInfo(opts.SourceID), runID: randomID()}
	b.rep = startReporter(PhaseBackup, opts.Events)
	defer b.rep.stop()
	root, err := newSource(opts.Dir, b)
	if err != nil {
		return BackupResult{}, fmt.Errorf("backup: %w", err)
	}
	res, err := b.run(ctx, rep, root)
	if err != nil {
		return BackupResult{}, fmt.Errorf("backup of %s: %w", opts.Dir, err)
	}
	b.rep.stop()
	res.Warnings = b.rep.warnings.Load()
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// backupRun is one Backup call: it receives what the source and kopia report.
type backupRun struct {
	opts  BackupOptions
	si    snapshot.SourceInfo
	runID string
	rep   *reporter
	ix    *indexer

	hashed    atomic.Int64
	readFiles atomic.Int64 // regular files read
	problems  problemList  // files that changed or vanished while read

	mu     sync.Mutex
	fatal  error
	cancel func()
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// parents are the snapshots a backup starts from: the latest complete one of the source and,
// after it, the latest checkpoint of each backup killed since (a checkpoint holds everything
// its run had done, so the older ones of the same run add nothing).
func parents(ctx context.Context, rep repo.Repository, si snapshot.SourceInfo) ([]*snapshot.Manifest, error) {
	all, err := snapshot.ListSnapshots(ctx, rep, si)
	if err != nil {
		return nil, err
	}
	var complete *snapshot.Manifest
	for _, m := range all {
		if m.IncompleteReason == "" && (complete == nil || m.StartTime.After(complete.StartTime)) {
			complete = m
		}
	}
	runs := map[string]*snapshot.Manifest{}
	for _, m := range all {
		if m.IncompleteReason == "" || (complete != nil && !m.StartTime.After(complete.StartTime)) {
			continue
		}
		if cur := runs[m.Tags[tagRun]]; cur == nil || m.EndTime.After(cur.EndTime) {
			runs[m.Tags[tagRun]] = m
		}
	}
	var out []*snapshot.Manifest
	if complete != nil {
		out = append(out, complete)
	}
	var ckpts []*snapshot.Manifest
	for _, m := range runs {
		ckpts = append(ckpts, m)
	}
	slices.SortFunc(ckpts, func(a, b *snapshot.Manifest) int { return cmp.Compare(a.StartTime, b.StartTime) })
	return append(out, ckpts...), nil
}

// backupPolicy is the kopia policy of every mover backup (the repository's own policies are not
// consulted: the mover decides).
func backupPolicy(comp compression.Name) *policy.Policy {
	p := *policy.DefaultPolicy
	// Everything is copied: no ignore files, no cache-folder skipping (the uploader's ignore
	// rules are off as well). One file system: the source lists another file system's
	// mount point as a skipped entry, with a warning.
	p.FilesPolicy = policy.FilesPolicy{
		IgnoreCacheDirectories: policy.NewOptionalBool(false),
		OneFileSystem:          policy.NewOptionalBool(true),
	}
	// Errors on single files and folders do not stop kopia: the mover classifies them (a file
	// gone while a stage runs is a warning; anything else cancels the upload and fails it).
	p.ErrorHandlingPolicy = policy.ErrorHandlingPolicy{
		IgnoreFileErrors:      policy.NewOptionalBool(true),
		IgnoreDirectoryErrors: policy.NewOptionalBool(true),
		IgnoreUnknownTypes:    policy.NewOptionalBool(true),
	}
	p.CompressionPolicy = policy.CompressionPolicy{CompressorName: comp}
	// Large files are read once, from start to end, in one goroutine: kopia's parallel upload
	// of parts (above 2 GiB by default) would read them with seeks and several readers, and the
	// mover hashes what kopia reads.
	whole := policy.OptionalInt64(math.MaxInt64)
	p.UploadPolicy.ParallelUploadAboveSize = &whole
	p.Actions = policy.ActionsPolicy{}
	return &p
}

func (b *backupRun) run(ctx context.Context, rep repo.Repository, root *srcDir) (BackupResult, error) {
	prev, err := parents(ctx, rep, b.si)
	if err != nil {
		return BackupResult{}, fmt.Errorf("listing earlier snapshots: %w", err)
	}
	var prevIndexes []object.ID
	for _, m := range prev {
		if oid, err := object.ParseID(m.Tags[tagIndex]); err == nil && m.Tags[tagIndex] != "" {
			prevIndexes = append(prevIndexes, oid)
		}
	}
	b.ix = newIndexer(prevIndexes)

	countCtx, stopCount := context.WithCancel(ctx)
	defer stopCount()
	go b.count(countCtx, root.abs(), root.dev)

	wctx, w, err := rep.NewWriter(ctx, repo.WriteSessionOptions{
		Purpose:  "planrun mover backup",
		OnUpload: func(n int64) { b.rep.uploaded.Add(n) },
	})
	if err != nil {
		return BackupResult{}, err
	}
	defer w.Close(context.WithoutCancel(ctx))

	cw := &checkpointWriter{RepositoryWriter: w, b: b}
	u := upload.NewUploader(cw)
	u.Progress = &uploadProgress{b: b}
	u.CheckpointInterval = b.opts.CheckpointInterval
	u.ParallelUploads = b.opts.Parallel
	u.DisableIgnoreRules = true
	u.EnableActions = false
	u.CheckpointLabels = map[string]string{tagRun: b.runID}
	b.mu.Lock()
	b.cancel = u.Cancel
	b.mu.Unlock()
	stop := context.AfterFunc(ctx, u.Cancel)
	man, err := u.Upload(wctx, root, policy.BuildTree(nil, backupPolicy(b.opts.compressor)), b.si, prev...)
	stop()
	cw.close()
	if err != nil {
		return BackupResult{}, err
	}
	// What the uploader did is saved as a checkpoint also when the run is cancelled (a mover
	// told to stop) or failed, so that the next run starts from it; a context that is done
	// still lets the save finish.
	saveCtx := context.WithoutCancel(wctx)
	if err := b.fatalErr(); err != nil {
		_, _, _ = b.save(saveCtx, w, man, "planrun: failed")
		return BackupResult{}, err
	}
	if man.IncompleteReason != "" {
		_, _, _ = b.save(saveCtx, w, man, man.IncompleteReason)
		if err := ctx.Err(); err != nil {
			return BackupResult{}, err
		}
		if cw.err != nil {
			return BackupResult{}, fmt.Errorf("saving a checkpoint: %w", cw.err)
		}
		return BackupResult{}, fmt.Errorf("kopia stopped the upload: %s", man.IncompleteReason)
	}
	if !b.opts.Stage && b.problems.len() > 0 {
		// Kept as a checkpoint, so that a retry (once the application is really stopped) reads
		// only what changed.
		_, _, _ = b.save(saveCtx, w, man, "planrun: files changed during the final copy")
		return BackupResult{}, fmt.Errorf("%d files changed or vanished while the final copy read them (was the application stopped?): %s",
			b.problems.len(), &b.problems)
	}
	id, st, err := b.save(saveCtx, w, man, "")
	if err != nil {
		return BackupResult{}, err
	}
	if h := b.opts.hooks; h != nil && h.indexed != nil {
		h.indexed(b.ix.rehashed)
	}
	b.forgetCheckpoints(saveCtx, w)
	if err := w.Flush(saveCtx); err != nil {
		return BackupResult{}, err
	}
	return BackupResult{
		Snapshot:      string(id),
		Files:         st.files,
		Dirs:          st.dirs,
		Bytes:         st.bytes,
		HashedBytes:   b.hashed.Load(),
		CachedFiles:   max(0, st.files-b.readFiles.Load()),
		UploadedBytes: b.rep.uploaded.Load(),
	}, nil
}

// save writes the index of man's tree and saves man (incomplete when reason is not ""), linked
// to it, then flushes: both manifests become visible at once.
func (b *backupRun) save(ctx context.Context, w repo.RepositoryWriter, man *snapshot.Manifest, reason string) (manifest.ID, indexStats, error) {
	oid, st, _, err := b.ix.write(ctx, w, man.RootEntry, reason != "")
	if err != nil {
		return "", st, err
	}
	tags := map[string]string{tagRun: b.runID}
	if reason == "" && b.opts.Handoff != "" {
		tags[tagHandoff] = b.opts.Handoff
	}
	if err := saveIndexManifest(ctx, w, man, oid, tags); err != nil {
		return "", st, err
	}
	man.IncompleteReason = reason
	man.Tags = tags
	id, err := snapshot.SaveSnapshot(ctx, w, man)
	if err != nil {
		return "", st, fmt.Errorf("saving snapshot: %w", err)
	}
	if err := w.Flush(ctx); err != nil {
		return "", st, fmt.Errorf("saving snapshot: %w", err)
	}
	return id, st, nil
}

// saveIndexManifest saves the manifest that keeps index oid reachable, and adds the tags that
// link a data manifest to the index.
func saveIndexManifest(ctx context.Context, w repo.RepositoryWriter, data *snapshot.Manifest, oid object.ID, tags map[string]string) error {
	im := &snapshot.Manifest{
		Source:      indexSourceInfo(data.Source.Path),
		Description: "planrun mover per-file index",
		StartTime:   data.StartTime,
		EndTime:     data.EndTime,
		RootEntry: &snapshot.DirEntry{
			Name: "index", Type: snapshot.EntryTypeFile, ObjectID: oid, ModTime: data.EndTime, Permissions: 0o600,
		},
	}
	imID, err := snapshot.SaveSnapshot(ctx, w, im)
	if err != nil {
		return fmt.Errorf("saving index manifest: %w", err)
	}
	tags[tagIndex] = oid.String()
	tags[tagIndexManifest] = string(imID)
	return nil
}

// forgetCheckpoints deletes the source's incomplete snapshots (and their indexes' manifests)
// once a complete one is saved: later backups start from the complete one. Complete snapshots
// are never deleted here (kopia's retention is not applied: a plan may still restore an older
// stage); a failure only leaves garbage.
func (b *backupRun) forgetCheckpoints(ctx context.Context, w repo.RepositoryWriter) {
	all, err := snapshot.ListSnapshots(ctx, w, b.si)
	if err != nil {
		return
	}
	for _, m := range all {
		if m.IncompleteReason == "" {
			continue
		}
		if im := m.Tags[tagIndexManifest]; im != "" {
			_ = w.DeleteManifest(ctx, manifest.ID(im))
		}
		_ = w.DeleteManifest(ctx, m.ID)
	}
}

// count walks the folder to give progress its totals.
func (b *backupRun) count(ctx context.Context, dir string, dev uint64) {
	var files, bytes int64
	var walk func(string) bool
	walk = func(d string) bool {
		f, err := os.Open(d)
		if err != nil {
			return true
		}
		defer f.Close()
		for {
			names, err := f.Readdirnames(listBatch)
			for _, n := range names {
				if ctx.Err() != nil {
					return false
				}
				var st unix.Stat_t
				if unix.Fstatat(int(f.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW) != nil {
					continue
				}
				switch st.Mode & unix.S_IFMT {
				case unix.S_IFREG:
					files++
					bytes += st.Size
				case unix.S_IFDIR:
					if st.Dev == dev && !walk(filepath.Join(d, n)) {
						return false
					}
				}
			}
			if err != nil || len(names) == 0 {
				return true
			}
		}
	}
	if walk(dir) {
		b.rep.filesTotal.Store(files)
		b.rep.bytesTotal.Store(bytes)
	}
}

func (b *backupRun) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fatal == nil {
		b.fatal = err
		if b.cancel != nil {
			b.cancel()
		}
	}
}

func (b *backupRun) fatalErr() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.fatal
}

// problem records a file that changed or vanished under the backup: a warning in a stage, an
// error at the end of a final copy.
func (b *backupRun) problem(rel, why string) {
	b.rep.warn(rel, "%s", why)
	if !b.opts.Stage {
		b.problems.add(rel, why)
	}
}

// sourceEvents.

func (b *backupRun) linked(rel string, n inode) { b.ix.addLink(rel, n) }
func (b *backupRun) skipped(rel, why string)    { b.rep.warn(rel, "%s", why) }
func (b *backupRun) vanished(rel string)        { b.problem(rel, "vanished while the backup ran") }
func (b *backupRun) readBytes(n int)            { b.hashed.Add(int64(n)); b.rep.bytes.Add(int64(n)) }
func (b *backupRun) hooks() *testHooks          { return b.opts.hooks }

func (b *backupRun) read(e *srcEntry, sum [32]byte, target string, n int64, changed string) {
	b.ix.addFresh(e.rel, &freshEntry{size: n, mtime: e.mtime, mode: e.mode, uid: e.uid, gid: e.gid, sum: sum, target: target})
	if e.mode.IsRegular() {
		b.readFiles.Add(1)
	}
	if changed != "" {
		b.problem(e.rel, changed)
	}
}

// uploadProgress receives kopia's upload callbacks.
type uploadProgress struct {
	upload.NullUploadProgress
	b *backupRun
}

// Enabled is false: kopia's own size estimation would walk the folder through the source's
// entries; the mover counts it itself (backupRun.count).
func (p *uploadProgress) Enabled() bool { return false }

func (p *uploadProgress) CachedFile(_ string, size int64) { p.b.rep.bytes.Add(size) }

func (p *uploadProgress) FinishedFile(_ string, err error) {
	if err == nil {
		p.b.rep.files.Add(1)
	}
}

// Error classifies what kopia could not read: gone or replaced since its folder was listed is a
// problem (stage: warning); anything else fails the backup.
func (p *uploadProgress) Error(path string, err error, _ bool) {
	rel := realPath(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		p.b.problem(rel, "vanished while the backup ran")
	case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENOTDIR):
		p.b.problem(rel, "replaced by another kind of file while the backup ran")
	default:
		p.b.fail(fmt.Errorf("%s: %w", rel, err))
	}
}

// checkpointWriter is the repository writer kopia's uploader gets. When the uploader saves a
// checkpoint, it first writes the index of the checkpoint's tree (and its manifest) and tags
// the checkpoint with it, in the same flush: a backup resumed from the checkpoint finds the
// sha256 of every file it does not read again.
type checkpointWriter struct {
	repo.RepositoryWriter
	b *backupRun

	mu     sync.Mutex
	closed bool
	err    error
}

func (c *checkpointWriter) PutManifest(ctx context.Context, labels map[string]string, payload any) (manifest.ID, error) {
	m, ok := payload.(*snapshot.Manifest)
	if !ok || labels[manifest.TypeLabelKey] != snapshot.ManifestType || m.IncompleteReason != upload.IncompleteReasonCheckpoint {
		return c.RepositoryWriter.PutManifest(ctx, labels, payload)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", errors.New("the upload is over")
	}
	oid, _, used, err := c.b.ix.write(ctx, c.RepositoryWriter, m.RootEntry, true)
	if err == nil {
		tags := map[string]string{tagRun: c.b.runID}
		if err = saveIndexManifest(ctx, c.RepositoryWriter, m, oid, tags); err == nil {
			m.Tags = tags
			for k, v := range tags {
				labels[k] = v
			}
			var id manifest.ID
			if id, err = c.RepositoryWriter.PutManifest(ctx, labels, m); err == nil {
				c.b.ix.prune(oid, used)
				return id, nil
			}
		}
	}
	if c.err == nil {
		c.err = err // kopia only logs it, and cancels the upload
	}
	return "", err
}

// DeleteManifest is not passed on: kopia applies its retention policy after each checkpoint,
// which would delete older stage snapshots a plan may still restore. The mover deletes only
// checkpoints, once a complete snapshot replaces them (forgetCheckpoints).
func (c *checkpointWriter) DeleteManifest(context.Context, manifest.ID) error { return nil }

// close ends checkpointing: a checkpoint kopia is still saving finishes first.
func (c *checkpointWriter) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
}
