package mover

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/kopia/kopia/fs"
	"golang.org/x/sys/unix"
)

// The folder a backup reads, as kopia's fs.Directory.
//
// Kopia's own localfs would do, but its entries hide what the mover needs besides: inode and
// link count (hard links), ctime (a file changed while read), and it opens files without a
// chance to hash what kopia reads. These entries lstat each name once (fstatat on the open
// folder), never follow a symlink, never open anything but folders and regular files (a fifo
// would block the reader), stay on the folder's file system, give kopia names it can store (see
// kopiaName), and hand kopia readers that compute the sha256 of exactly the bytes kopia stores.

// sourceEvents receives what the source learns while kopia walks it.
type sourceEvents interface {
	// linked records a regular file with more than one name.
	linked(rel string, n inode)
	// skipped reports an entry left out (special file, another file system).
	skipped(rel, why string)
	// vanished reports an entry gone between the listing of its folder and its reading.
	vanished(rel string)
	// read reports a file read from start to end (through Open) with its sum and size, or a
	// symlink with its target, and whether it changed while it was read ("" if not).
	read(e *srcEntry, sum [32]byte, target string, n int64, changed string)
	// readBytes counts bytes read.
	readBytes(n int)
	// hooks are the test hooks; nil in production.
	hooks() *testHooks
}

// testHooks let tests act at precise moments of a backup or restore (delete a file between its
// listing and its reading, change it while it is read, slow a run down to kill it halfway).
// Options carry them in unexported fields: production code never sets them.
type testHooks struct {
	beforeOpen func(rel string)
	duringRead func(rel string) // after the first chunk of a file is read
	// beforeWrite runs before a restore writes a file.
	beforeWrite func(rel string)
	// prefetch gets, for each batch of files a restore hands its writers, how many small
	// files it has and how many packs are read whole for them.
	prefetch func(files, packs int)
	// indexed gets how many sums of a backup's final index had to be read back from the
	// repository (neither read by the run nor found in an earlier index).
	indexed func(rehashed int)
}

type source struct {
	root string // absolute, clean
	dev  uint64 // the root's file system
	ev   sourceEvents
}

type srcEntry struct {
	src   *source
	rel   string // real, slash-separated; "." is the root
	name  string // kopia's name (kopiaName)
	mode  os.FileMode
	size  int64
	mtime int64
	ctime int64
	uid   uint32
	gid   uint32
	dev   uint64
	ino   uint64
	nlink uint64
}

func (e *srcEntry) Name() string                { return e.name }
func (e *srcEntry) IsDir() bool                 { return e.mode.IsDir() }
func (e *srcEntry) Mode() os.FileMode           { return e.mode }
func (e *srcEntry) ModTime() time.Time          { return time.Unix(0, e.mtime) }
func (e *srcEntry) Sys() any                    { return nil }
func (e *srcEntry) Owner() fs.OwnerInfo         { return fs.OwnerInfo{UserID: e.uid, GroupID: e.gid} }
func (e *srcEntry) Device() fs.DeviceInfo       { return fs.DeviceInfo{Dev: e.dev} }
func (e *srcEntry) LocalFilesystemPath() string { return e.abs() }
func (e *srcEntry) Close()                      {}

func (e *srcEntry) Size() int64 {
	if e.mode.IsDir() {
		return 0
	}
	return e.size
}

func (e *srcEntry) abs() string {
	if e.rel == "." {
		return e.src.root
	}
	return filepath.Join(e.src.root, filepath.FromSlash(e.rel))
}

type srcDir struct{ srcEntry }
type srcFile struct{ srcEntry }
type srcSymlink struct{ srcEntry }

var (
	_ fs.Directory = (*srcDir)(nil)
	_ fs.File      = (*srcFile)(nil)
	_ fs.Symlink   = (*srcSymlink)(nil)
)

// newSource opens the folder dir as a kopia directory.
func newSource(dir string, ev sourceEvents) (*srcDir, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil { // the root may be reached through a symlink
		return nil, &os.PathError{Op: "stat", Path: abs, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("%s is not a folder", dir)
	}
	src := &source{root: abs, dev: st.Dev, ev: ev}
	d := &srcDir{}
	d.srcEntry = entryFromStat(src, ".", ".", &st)
	return d, nil
}

func entryFromStat(src *source, rel, name string, st *unix.Stat_t) srcEntry {
	mode := goPerm(st.Mode & 0o7777)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		mode |= os.ModeDir
	case unix.S_IFLNK:
		mode |= os.ModeSymlink
	}
	return srcEntry{
		src: src, rel: rel, name: name, mode: mode, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
		uid: st.Uid, gid: st.Gid, dev: st.Dev, ino: st.Ino, nlink: uint64(st.Nlink),
	}
}

func (d *srcDir) SupportsMultipleIterations() bool { return true }

// Child looks one name up (kopia does so only in the repository's folders, but the interface
// wants it).
func (d *srcDir) Child(ctx context.Context, name string) (fs.Entry, error) {
	it, err := d.Iterate(ctx)
	if err != nil {
		return nil, err
	}
	defer it.Close()
	for {
		e, err := it.Next(ctx)
		if err != nil {
			return nil, err
		}
		if e == nil {
			return nil, fs.ErrEntryNotFound
		}
		if e.Name() == name {
			return e, nil
		}
	}
}

// Iterate lists the folder in batches, lstat-ing each name relative to the open folder.
func (d *srcDir) Iterate(_ context.Context) (fs.DirectoryIterator, error) {
	f, err := os.OpenFile(d.abs(), os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	return &srcIterator{d: d, f: f}, nil
}

type srcIterator struct {
	d     *srcDir
	f     *os.File
	names []string
	eof   bool
}

const listBatch = 256

func (it *srcIterator) Next(_ context.Context) (fs.Entry, error) {
	for {
		if len(it.names) == 0 {
			if it.eof {
				return nil, nil
			}
			names, err := it.f.Readdirnames(listBatch)
			if errors.Is(err, io.EOF) || (err == nil && len(names) == 0) {
				it.eof = true
				continue
			}
			if err != nil {
				return nil, err
			}
			it.names = names
		}
		name := it.names[0]
		it.names = it.names[1:]
		if e := it.entry(name); e != nil {
			return e, nil
		}
	}
}

// entry lstats name; nil means leave it out (gone, special, another file system).
func (it *srcIterator) entry(name string) fs.Entry {
	src := it.d.src
	rel := joinPath(it.d.rel, name)
	var st unix.Stat_t
	for {
		err := unix.Fstatat(int(it.f.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			// Gone since the listing (ENOENT); any other error is the same for the copy:
			// the entry cannot be read.
			src.ev.vanished(rel)
			return nil
		}
		break
	}
	e := entryFromStat(src, rel, kopiaName(name), &st)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if st.Dev != src.dev {
			src.ev.skipped(rel, "another file system is mounted here: not copied")
			return nil
		}
		return &srcDir{e}
	case unix.S_IFREG:
		if st.Nlink > 1 {
			src.ev.linked(rel, inode{st.Dev, st.Ino})
		}
		return &srcFile{e}
	case unix.S_IFLNK:
		return &srcSymlink{e}
	case unix.S_IFIFO:
		src.ev.skipped(rel, "fifo (named pipe): not copied")
	case unix.S_IFSOCK:
		src.ev.skipped(rel, "socket: not copied")
	case unix.S_IFCHR, unix.S_IFBLK:
		src.ev.skipped(rel, "device file: not copied")
	default:
		src.ev.skipped(rel, "file of unknown type: not copied")
	}
	return nil
}

func (it *srcIterator) Close() { it.f.Close() }

func (l *srcSymlink) Readlink(_ context.Context) (string, error) {
	target, err := os.Readlink(l.abs())
	if err != nil {
		return "", err
	}
	l.src.ev.read(&l.srcEntry, [32]byte{}, target, l.size, "")
	return target, nil
}

func (l *srcSymlink) Resolve(context.Context) (fs.Entry, error) {
	return nil, errors.New("the mover does not follow symlinks")
}

// Open opens the file for kopia, through a reader that hashes what kopia reads.
func (f *srcFile) Open(_ context.Context) (fs.Reader, error) {
	if h := f.src.ev.hooks(); h != nil && h.beforeOpen != nil {
		h.beforeOpen(f.rel)
	}
	file, err := os.OpenFile(f.abs(), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	return &hashReader{f: file, e: f, h: sha256.New()}, nil
}

// hashReader hands kopia the file's bytes and hashes them on the way. Kopia reads a file once,
// from start to end, when its policy does not split large files into parts read in parallel
// (ParallelUploadAboveSize is off, see backupPolicy); should it ever seek, the sum is not
// recorded and the index builder reads the stored object back to hash it instead.
type hashReader struct {
	f      *os.File
	e      *srcFile
	h      hash.Hash
	n      int64
	eof    bool
	seeked bool
	hooked bool
}

func (r *hashReader) Read(p []byte) (int, error) {
	n, err := r.f.Read(p)
	if n > 0 {
		r.h.Write(p[:n])
		r.n += int64(n)
		r.e.src.ev.readBytes(n)
		if h := r.e.src.ev.hooks(); h != nil && h.duringRead != nil && !r.hooked {
			r.hooked = true
			h.duringRead(r.e.rel)
		}
	}
	if errors.Is(err, io.EOF) {
		r.eof = true
	}
	return n, err
}

func (r *hashReader) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || (whence == io.SeekStart && r.n != 0) || whence == io.SeekEnd {
		r.seeked = true
	}
	return r.f.Seek(offset, whence)
}

func (r *hashReader) Entry() (fs.Entry, error) { return r.e, nil }

// Close reports the file read, with its sum, when kopia read it whole; and whether it changed
// while read: size, mtime or ctime not those of the listing, or its name now another file or
// none.
func (r *hashReader) Close() error {
	var st unix.Stat_t
	ferr := unix.Fstat(int(r.f.Fd()), &st)
	err := r.f.Close()
	if !r.eof || r.seeked {
		return err
	}
	e := &r.e.srcEntry
	changed := ""
	switch {
	case ferr != nil:
		changed = "could not stat after reading: " + ferr.Error()
	case st.Ino != e.ino || st.Dev != e.dev:
		changed = "replaced by another file between listing and reading"
	case r.n != e.size || st.Size != e.size:
		changed = fmt.Sprintf("size changed while read (%d bytes listed, %d read, %d now)", e.size, r.n, st.Size)
	case st.Mtim.Nano() != e.mtime || st.Ctim.Nano() != e.ctime:
		changed = "modified while read"
	default:
		var now unix.Stat_t
		if lerr := unix.Lstat(e.abs(), &now); lerr != nil {
			changed = "deleted while read"
		} else if now.Ino != e.ino || now.Dev != e.dev {
			changed = "replaced while read"
		}
	}
	var sum [32]byte
	r.h.Sum(sum[:0])
	r.e.src.ev.read(e, sum, "", r.n, changed)
	return err
}
