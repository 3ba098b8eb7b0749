package mover

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/blob"
	"github.com/kopia/kopia/repo/content"
	"github.com/kopia/kopia/repo/object"
	"golang.org/x/sys/unix"
)

// RestoreOptions say what Restore writes where.
type RestoreOptions struct {
	// Dir is the folder to make a mirror of the snapshot (created if absent). What it holds
	// and the snapshot does not is deleted.
	Dir string
	// Snapshot is the ID of a complete snapshot made by Backup.
	Snapshot string
	// Verify reads every file back afterwards and compares it with the snapshot's index.
	Verify bool
	// Events receives progress and warnings; nil: none.
	Events func(Event)
	// Parallel is how many files are written at once (0: twice the number of CPUs, at least
	// 4: reading from object storage waits on the network).
	Parallel int

	hooks *testHooks
}

// RestoreResult is what Restore did; it is also the "result" event of a restore.
type RestoreResult struct {
	Snapshot string `json:"snapshot"`
	// Files and Bytes are the snapshot's regular files and their size.
	Files int64 `json:"files"`
	Bytes int64 `json:"bytes"`
	// WrittenFiles and WrittenBytes are what this run wrote; SkippedFiles the files already
	// there with the snapshot's size and mtime (their owner and mode set if they differed).
	WrittenFiles int64 `json:"writtenFiles"`
	WrittenBytes int64 `json:"writtenBytes"`
	SkippedFiles int64 `json:"skippedFiles"`
	// Deleted counts the entries removed because the snapshot does not have them (or has
	// something of another type there); a folder counts once.
	Deleted  int64   `json:"deleted"`
	Verified bool    `json:"verified"`
	Seconds  float64 `json:"seconds"`
}

// Restore makes opts.Dir an exact mirror of a snapshot. It walks the folder and the snapshot's
// index together, once, in index order (a folder before its contents, names in byte order),
// never following a symlink:
//
//   - what the snapshot does not hold, or holds with another type (a symlink where the
//     snapshot has a folder…), is removed: a symlink "a -> /etc" and a snapshot file
//     "a/passwd" cannot write to /etc;
//   - a file already there with the snapshot's size and mtime is not written again (owner and
//     mode are fixed in place); the others are read from the repository by parallel writers
//     and written to a temporary name, sparse (runs of zeros become holes), owner, mode and
//     mtime set, then renamed into place, so a file is never seen half written; symlinks
//     likewise, with the target the index records;
//
// then the other names of each hard-link group are linked to the group's first name, and
// folders get their owner, mode and mtime once nothing is written in them any more.
//
// Killed at any point and run again, it finishes the job: what is done is skipped, and the
// temporary files a killed run left are removed (the index has no such names).
func Restore(ctx context.Context, rep repo.Repository, opts RestoreOptions) (RestoreResult, error) {
	start := time.Now()
	res, err := restoreRun(ctx, rep, opts)
	if err != nil {
		return RestoreResult{}, fmt.Errorf("restore of %s into %s: %w", opts.Snapshot, opts.Dir, err)
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func restoreRun(ctx context.Context, rep repo.Repository, opts RestoreOptions) (RestoreResult, error) {
	man, idx, err := snapshotWithIndex(ctx, rep, opts.Snapshot)
	if err != nil {
		return RestoreResult{}, err
	}
	if opts.Parallel <= 0 {
		opts.Parallel = max(4, 2*runtime.NumCPU())
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return RestoreResult{}, err
	}
	root, err := filepath.EvalSymlinks(opts.Dir)
	if err != nil {
		return RestoreResult{}, err
	}
	rp := startReporter(PhaseRestore, opts.Events)
	defer rp.stop()
	if s := man.RootEntry.DirSummary; s != nil {
		rp.filesTotal.Store(s.TotalFileCount)
		rp.bytesTotal.Store(s.TotalFileSize)
	}

	links, err := loadLinks(ctx, rep, idx)
	if err != nil {
		return RestoreResult{}, err
	}
	out := &restoreOutput{ctx: ctx, rep: rep, root: root, links: links, rp: rp, hooks: opts.hooks, shared: map[inode][]multiName{}}
	if err := out.tree(idx, opts.Parallel); err != nil {
		return RestoreResult{}, err
	}
	if err := out.unlinkStrangers(); err != nil {
		return RestoreResult{}, fmt.Errorf("hard links: %w", err)
	}
	if err := relink(root, links); err != nil {
		return RestoreResult{}, fmt.Errorf("hard links: %w", err)
	}
	if err := folderMetadata(ctx, rep, idx, root); err != nil {
		return RestoreResult{}, fmt.Errorf("folders: %w", err)
	}
	if err := syncFS(root); err != nil {
		return RestoreResult{}, err
	}
	rp.stop()
	res := RestoreResult{
		Snapshot:     opts.Snapshot,
		Files:        links.files,
		Bytes:        links.bytes,
		WrittenFiles: out.written.Load(),
		WrittenBytes: out.writtenBytes.Load(),
		SkippedFiles: out.skipped.Load(),
		Deleted:      out.deleted,
	}
	if opts.Verify {
		if _, err := Verify(ctx, rep, VerifyOptions{Dir: root, Snapshot: opts.Snapshot, Events: opts.Events}); err != nil {
			return RestoreResult{}, err
		}
		res.Verified = true
	}
	return res, nil
}

// linkPlan is what the index says about hard links, and its totals.
type linkPlan struct {
	// members maps every name of a hard-link group but the first to the first (its leader).
	members map[string]string
	// groups maps each group's leader to its number.
	groups       map[string]int
	files, bytes int64
}

func loadLinks(ctx context.Context, rep repo.Repository, idx object.ID) (*linkPlan, error) {
	ir, err := openIndex(ctx, rep, idx)
	if err != nil {
		return nil, err
	}
	defer ir.Close()
	lp := &linkPlan{members: map[string]string{}, groups: map[string]int{}}
	leaders := map[int]string{}
	for {
		rec, ok, err := ir.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return lp, nil
		}
		if rec.Type == typeFile {
			lp.files++
			lp.bytes += rec.Size
		}
		if rec.Link == 0 {
			continue
		}
		if l, ok := leaders[rec.Link]; ok {
			lp.members[rec.Path] = l
		} else {
			leaders[rec.Link] = rec.Path
			lp.groups[rec.Path] = rec.Link
		}
	}
}

// relink makes every member of a hard-link group a name of its leader's file.
func relink(root string, lp *linkPlan) error {
	for member, leader := range lp.members {
		var ls, ms unix.Stat_t
		lpath, mpath := localPath(root, leader), localPath(root, member)
		if err := unix.Lstat(lpath, &ls); err != nil {
			return &os.PathError{Op: "lstat", Path: lpath, Err: err}
		}
		if unix.Lstat(mpath, &ms) == nil && ms.Dev == ls.Dev && ms.Ino == ls.Ino {
			continue
		}
		tmp := filepath.Join(filepath.Dir(mpath), ".planrun-link-"+randomID())
		if err := os.Link(lpath, tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, mpath); err != nil {
			os.Remove(tmp)
			return err
		}
	}
	return nil
}

// folderMetadata gives every folder the owner, mode and mtime the index records.
func folderMetadata(ctx context.Context, rep repo.Repository, idx object.ID, root string) error {
	ir, err := openIndex(ctx, rep, idx)
	if err != nil {
		return err
	}
	defer ir.Close()
	for {
		rec, ok, err := ir.next()
		if err != nil || !ok {
			return err
		}
		if rec.Type != typeDir {
			continue
		}
		if err := setMetadata(localPath(root, rec.Path), &rec); err != nil {
			return err
		}
	}
}

// setMetadata sets owner, mode and mtime of p (not following a symlink) where they differ from
// rec's: owner first (chown clears setuid and setgid), mtime last.
func setMetadata(p string, rec *record) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	if st.Uid != rec.UID || st.Gid != rec.GID {
		if err := unix.Lchown(p, int(rec.UID), int(rec.GID)); err != nil {
			return &os.PathError{Op: "chown", Path: p, Err: err}
		}
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK && st.Mode&0o7777 != rec.Mode {
		if err := os.Chmod(p, goPerm(rec.Mode)); err != nil {
			return err
		}
	}
	if st.Mtim.Nano() != rec.MTime {
		return setMTime(p, rec.MTime)
	}
	return nil
}

func setMTime(p string, ns int64) error {
	ts := unix.NsecToTimespec(ns)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: p, Err: err}
	}
	return nil
}

func syncFS(root string) error {
	f, err := os.Open(root)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return &os.PathError{Op: "syncfs", Path: root, Err: err}
	}
	return nil
}

// restoreOutput writes a snapshot into a folder: one walk of the folder and the snapshot's index
// together (mergeWalk) decides, entry by entry, what to remove, keep, make or write, and hands
// the files to write to parallel writers in batches (prefetch). Memory holds one folder's names
// per level, the batches' records, and the names of files with several links on disk, whatever
// the size of the tree. (Kopia's own restore.Entry queues every entry of the tree before writing
// most of them, several hundred bytes per file, and its repository file system gives folders the
// newest mtime of their contents. The index also spares reading kopia's folder objects and each
// symlink's target object.)
type restoreOutput struct {
	ctx   context.Context
	rep   repo.Repository
	root  string
	links *linkPlan
	rp    *reporter
	hooks *testHooks
	batch *restoreBatch // files the walk found to write, not handed over yet
	// shared holds the files found with several names on disk (walk only).
	shared  map[inode][]multiName
	deleted int64 // walk only

	written, writtenBytes, skipped atomic.Int64
}

// multiName is one name, on disk, of a file with several, and what the snapshot has there.
type multiName struct {
	path string
	rec  record
}

// tree restores the snapshot whose index is idx into root, with parallel file writers.
func (o *restoreOutput) tree(idx object.ID, parallel int) error {
	ir, err := openIndex(o.ctx, o.rep, idx)
	if err != nil {
		return err
	}
	defer ir.Close()
	ctx, cancel := context.WithCancelCause(o.ctx)
	defer cancel(nil)
	jobs := make(chan func() error, parallel)
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range jobs {
				if ctx.Err() != nil {
					continue
				}
				if err := job(); err != nil {
					cancel(err)
				}
			}
		}()
	}
	// The walk hands files over in batches; a batch's small files are fetched ahead, before
	// its jobs are queued (prefetch).
	batches := make(chan *restoreBatch, 1)
	go func() {
		defer close(jobs)
		for b := range batches {
			o.prefetch(ctx, b)
			for _, job := range b.jobs {
				select {
				case jobs <- job:
				case <-ctx.Done():
				}
			}
		}
	}()
	o.batch = &restoreBatch{}
	err = mergeWalk(ctx, o.root, ir, func(rel string, st *unix.Stat_t, rec *record) (bool, error) {
		return o.entry(ctx, rel, st, rec, batches)
	})
	if err == nil {
		err = o.flush(ctx, batches)
	}
	close(batches)
	wg.Wait()
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if err != nil {
		return err
	}
	return o.ctx.Err()
}

// entry handles one path of the walk: st is what the folder has there (nil: nothing), rec what
// the snapshot has (nil: nothing). It says whether to walk into a folder on disk.
func (o *restoreOutput) entry(ctx context.Context, rel string, st *unix.Stat_t, rec *record, batches chan<- *restoreBatch) (bool, error) {
	if rel == "." {
		if rec == nil || rec.Type != typeDir {
			return false, errors.New("the snapshot's root is not a folder")
		}
		return true, nil
	}
	if st != nil && (rec == nil || rec.Type != localType(st)) {
		o.deleted++
		if err := os.RemoveAll(localPath(o.root, rel)); err != nil {
			return false, err
		}
		st = nil
	}
	if rec == nil {
		return false, nil
	}
	switch rec.Type {
	case typeDir:
		if st == nil {
			return false, os.Mkdir(localPath(o.root, rel), 0o700)
		}
		return true, nil
	case typeFile:
		if st != nil && st.Nlink > 1 {
			n := inode{st.Dev, st.Ino}
			o.shared[n] = append(o.shared[n], multiName{rel, *rec})
		}
		if _, member := o.links.members[rel]; member {
			return false, nil // linked to its group's leader afterwards
		}
		if st != nil && o.fileExists(rel, st, rec) {
			o.rp.files.Add(1)
			o.rp.bytes.Add(rec.Size)
			return false, nil
		}
		return false, o.queue(ctx, rel, rec, batches)
	case typeSymlink:
		if st != nil && o.symlinkExists(rel, st, rec) {
			return false, nil
		}
		return false, o.createSymlink(rel, rec)
	}
	return false, fmt.Errorf("%s: entry of unknown type %q in the snapshot's index", rel, rec.Type)
}

// unlinkStrangers separates names that are one file on disk but not in the snapshot (or in
// other hard-link groups there): each name but the group members relink links is written again
// as a file of its own.
func (o *restoreOutput) unlinkStrangers() error {
	for _, names := range o.shared {
		if len(names) < 2 {
			continue
		}
		same := names[0].rec.Link != 0
		for _, n := range names[1:] {
			same = same && n.rec.Link == names[0].rec.Link
		}
		if same {
			continue
		}
		for _, n := range names {
			o.deleted++
			if _, member := o.links.members[n.path]; member {
				if err := os.Remove(localPath(o.root, n.path)); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
				continue
			}
			if err := o.writeFile(o.ctx, n.path, &n.rec); err != nil {
				return err
			}
		}
	}
	return nil
}

// Files are written from object storage, one read per file's chunk: as many requests as small
// files, where the pack files that hold them have a few hundred each. Restore hands the files to
// write to its writers in batches, in the order of the walk (about the order in which the
// backup packed them), and first reads into the cache, whole, the packs (20 MiB at most) that
// hold many of a batch's small files: a first stage reads whole packs, a later stage, with files
// changed here and there, only what changed. Files of prefetchBelow bytes
// or more are read chunk by chunk by their writer (a chunk is a few MiB). The data cache holds
// several batches (ConnectRepository's ReadOnly limits). On a 1 GiB tree of 8,740 files in
// versitygw (BenchmarkMoverVsRestic), a first restore took 7.4 s instead of 28.6 s, with some
// 400 reads of packs instead of one or more per file.
var (
	prefetchBatchBytes   int64 = 32 << 20
	prefetchBatchFiles         = 2000
	prefetchBelow        int64 = 1 << 20
	prefetchPackContents       = 8
	prefetchPackBytes    int64 = 1 << 20
)

// restoreBatch is files to write, and the objects to fetch for them ahead.
type restoreBatch struct {
	jobs  []func() error
	oids  []object.ID
	bytes int64
}

// queue adds a file to write to the current batch, and hands the batch over when it is full.
func (o *restoreOutput) queue(ctx context.Context, rel string, rec *record, batches chan<- *restoreBatch) error {
	oid, err := object.ParseID(rec.Object)
	if err != nil {
		return fmt.Errorf("%s: object %q in the snapshot's index: %w", rel, rec.Object, err)
	}
	b := o.batch
	r := *rec
	b.jobs = append(b.jobs, func() error { return o.writeFile(ctx, rel, &r) })
	if rec.Size < prefetchBelow {
		b.oids = append(b.oids, oid)
		b.bytes += rec.Size
	}
	if b.bytes >= prefetchBatchBytes || len(b.jobs) >= prefetchBatchFiles {
		return o.flush(ctx, batches)
	}
	return nil
}

// flush hands the current batch over and starts a new one.
func (o *restoreOutput) flush(ctx context.Context, batches chan<- *restoreBatch) error {
	if len(o.batch.jobs) == 0 {
		return nil
	}
	select {
	case batches <- o.batch:
		o.batch = &restoreBatch{}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// prefetch brings into the cache, whole, the packs from which the batch needs at least
// prefetchPackContents contents or prefetchPackBytes bytes; the writers read the other files
// themselves, content by content. It does so only when the repository has a data cache for it
// (ConnectRepository's ReadOnly). A failure is no error here: the writers read what is missing
// themselves, and report what fails.
func (o *restoreOutput) prefetch(ctx context.Context, b *restoreBatch) {
	r, ok := o.rep.(*Repository)
	if !ok || !r.prefetch || len(b.oids) < 2 || ctx.Err() != nil {
		return
	}
	type need struct {
		first content.ID
		n     int
		bytes int64
	}
	packs := map[blob.ID]*need{}
	for _, oid := range b.oids {
		cid, _, ok := oid.ContentID()
		if !ok {
			continue
		}
		info, err := r.ContentInfo(ctx, cid)
		if err != nil {
			continue
		}
		p := packs[info.PackBlobID]
		if p == nil {
			p = &need{first: cid}
			packs[info.PackBlobID] = p
		}
		p.n++
		p.bytes += int64(info.PackedLength)
	}
	var whole []content.ID // one content of each pack to fetch whole
	for _, p := range packs {
		if p.n >= prefetchPackContents || p.bytes >= prefetchPackBytes {
			whole = append(whole, p.first)
		}
	}
	if o.hooks != nil && o.hooks.prefetch != nil {
		o.hooks.prefetch(len(b.oids), len(whole))
	}
	// One pack at a time: kopia reads a pack whole into memory (and a copy for the cache),
	// five at a time when given several.
	for _, c := range whole {
		if ctx.Err() != nil {
			return
		}
		r.PrefetchContents(ctx, []content.ID{c}, "blobs")
	}
}

// fileExists says whether the regular file at rel (stat st) need not be written: it has the
// snapshot's size and mtime. Its owner and mode are fixed if they differ.
func (o *restoreOutput) fileExists(rel string, st *unix.Stat_t, rec *record) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != rec.Size || !sameTime(st.Mtim.Nano(), rec.MTime) {
		return false
	}
	if st.Uid != rec.UID || st.Gid != rec.GID || st.Mode&0o7777 != rec.Mode {
		want := *rec
		want.MTime = st.Mtim.Nano()
		if setMetadata(localPath(o.root, rel), &want) != nil {
			return false
		}
	}
	o.skipped.Add(1)
	return true
}

// writeFile writes the file to a temporary name in its folder, sets owner, mode and mtime, and
// renames it into place.
func (o *restoreOutput) writeFile(ctx context.Context, rel string, rec *record) error {
	if o.hooks != nil && o.hooks.beforeWrite != nil {
		o.hooks.beforeWrite(rel)
	}
	oid, err := object.ParseID(rec.Object)
	if err != nil {
		return fmt.Errorf("%s: object %q in the snapshot's index: %w", rel, rec.Object, err)
	}
	p := localPath(o.root, rel)
	tmp := filepath.Join(filepath.Dir(p), ".planrun-restore-"+randomID())
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			out.Close()
			os.Remove(tmp)
		}
	}()
	in, err := o.rep.OpenObject(ctx, oid)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	n, err := copySparse(out, in, func(n int64) {
		o.rp.downloaded.Add(n)
		o.rp.bytes.Add(n)
	})
	in.Close()
	if err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if n != rec.Size {
		return fmt.Errorf("%s: the snapshot's object holds %d bytes, its index says %d", rel, n, rec.Size)
	}
	if err := out.Truncate(n); err != nil { // a hole at the end has to be given its length
		return err
	}
	if err := out.Chown(int(rec.UID), int(rec.GID)); err != nil {
		return err
	}
	if err := out.Chmod(goPerm(rec.Mode)); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := setMTime(tmp, rec.MTime); err != nil {
		return err
	}
	if err := replace(tmp, p); err != nil {
		return err
	}
	ok = true
	o.written.Add(1)
	o.writtenBytes.Add(n)
	o.rp.files.Add(1)
	return nil
}

// replace renames tmp to p; a folder in the way (mirror removed it, unless something
// recreated it since) is removed first.
func replace(tmp, p string) error {
	var st unix.Stat_t
	if unix.Lstat(p, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := os.RemoveAll(p); err != nil {
			return err
		}
	}
	return os.Rename(tmp, p)
}

// sparseBlock is the unit of hole detection: a block of zeros is not written.
const sparseBlock = 4096

var zeroBlock [sparseBlock]byte

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// copySparse copies r to w, leaving holes where whole blocks are zero, and returns the length
// copied (w must then be truncated to it).
func copySparse(w *os.File, r io.Reader, progress func(int64)) (int64, error) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	buf := *bp
	var off int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			chunk := buf[:n]
			for i := 0; i < len(chunk); {
				j := min(i+sparseBlock, len(chunk))
				if bytes.Equal(chunk[i:j], zeroBlock[:j-i]) {
					i = j
					continue
				}
				// Extend over the following non-zero blocks, write once.
				for j < len(chunk) {
					k := min(j+sparseBlock, len(chunk))
					if bytes.Equal(chunk[j:k], zeroBlock[:k-j]) {
						break
					}
					j = k
				}
				if _, werr := w.WriteAt(chunk[i:j], off+int64(i)); werr != nil {
					return off, werr
				}
				i = j
			}
			off += int64(n)
			progress(int64(n))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return off, nil
		}
		if err != nil {
			return off, err
		}
	}
}

// symlinkExists says whether the symlink at rel (stat st) has the snapshot's target, owner and
// mtime.
func (o *restoreOutput) symlinkExists(rel string, st *unix.Stat_t, rec *record) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Uid != rec.UID || st.Gid != rec.GID || !sameTime(st.Mtim.Nano(), rec.MTime) {
		return false
	}
	have, err := os.Readlink(localPath(o.root, rel))
	return err == nil && have == rec.Target
}

// createSymlink makes the symlink under a temporary name, sets its owner and mtime, and renames
// it into place.
func (o *restoreOutput) createSymlink(rel string, rec *record) error {
	p := localPath(o.root, rel)
	tmp := filepath.Join(filepath.Dir(p), ".planrun-restore-"+randomID())
	if err := os.Symlink(rec.Target, tmp); err != nil {
		return err
	}
	err := unix.Lchown(tmp, int(rec.UID), int(rec.GID))
	if err == nil {
		err = setMTime(tmp, rec.MTime)
	}
	if err == nil {
		err = replace(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
