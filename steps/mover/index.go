package mover

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/kopia/kopia/repo"
	"github.com/kopia/kopia/repo/object"
	"github.com/kopia/kopia/snapshot"
)

// The per-file index.
//
// Kopia keeps what a restore needs, not what a verification or a mirror needs: no checksum a
// reader can recompute from a file (its object IDs are keyed hashes of chunks), no hard links
// (each name is stored as a file of its own), and names that are not valid UTF-8 do not survive
// its JSON. So every snapshot the mover makes carries an index: one line per entry, sorted in
// depth-first order (a folder before its contents, names in byte order), with type, mode,
// owner, size, mtime (nanoseconds), the sha256 of each regular file (computed in the same read
// kopia did), each symlink's target, the hard-link group, and the kopia object ID of the entry.
// Restore, its mirror pass and Verify stream it next to a walk of the folder: memory does not grow
// with the number of files.
//
// The index is a kopia object, so it is encrypted, compressed and deduplicated like the data. A
// second snapshot manifest (user indexUser, same source path) has it as its root "file": kopia's
// garbage collection keeps only what some snapshot's tree reaches, so an object referenced only
// by a tag would be collected by the first full maintenance.

const (
	indexHeader = "planrun-mover-index 1"
	// tagIndex, on a data snapshot manifest, is the object ID of its index.
	tagIndex = "tag:planrun-index"
	// tagIndexManifest is the ID of the manifest that keeps that index reachable.
	tagIndexManifest = "tag:planrun-index-manifest"
	// tagRun names the Backup call that made a snapshot (checkpoints included).
	tagRun = "tag:planrun-run"

	sourceHost = "planrun"
	sourceUser = "mover"
	indexUser  = "mover-index"

	// indexCompressor compresses index objects (text: 3-5×).
	indexCompressor = "zstd-fastest"
	// indexSplitter chunks index objects: content-defined, so that the index of stage N+1
	// shares most chunks with stage N's (deduplicated, not uploaded again), and small, so that
	// a reader holds 1-2 MiB of it at a time.
	indexSplitter = "DYNAMIC-1M-BUZHASH"
)

// Entry types in the index.
const (
	typeDir     = 'd'
	typeFile    = 'f'
	typeSymlink = 'l'
)

// record is one line of the index.
type record struct {
	Path   string // slash-separated, relative to the root ("." is the root), real names
	Type   byte   // typeDir, typeFile, typeSymlink
	Mode   uint32 // permission bits with setuid (04000), setgid (02000), sticky (01000)
	UID    uint32
	GID    uint32
	Size   int64
	MTime  int64 // nanoseconds since the epoch
	Link   int   // hard-link group (1, 2, …; its first member in index order is its leader); 0: none
	Sum    [32]byte
	Object string // kopia object ID
	Target string // symlinks
}

func (r *record) typeName() string {
	switch r.Type {
	case typeDir:
		return "folder"
	case typeSymlink:
		return "symlink"
	default:
		return "file"
	}
}

// appendLine formats r as an index line (with its newline).
func (r *record) appendLine(b []byte) []byte {
	b = append(b, r.Type, ' ')
	b = strconv.AppendUint(b, uint64(r.Mode), 8)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(r.UID), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(r.GID), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, r.Size, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, r.MTime, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(r.Link), 10)
	b = append(b, ' ')
	if r.Type == typeFile {
		b = hex.AppendEncode(b, r.Sum[:])
	} else {
		b = append(b, '-')
	}
	b = append(b, ' ')
	if r.Object == "" {
		b = append(b, '-')
	} else {
		b = append(b, r.Object...)
	}
	b = append(b, ' ')
	b = strconv.AppendQuote(b, r.Path)
	if r.Type == typeSymlink {
		b = append(b, ' ')
		b = strconv.AppendQuote(b, r.Target)
	}
	return append(b, '\n')
}

// parseLine is appendLine's inverse (line without its newline).
func parseLine(line string) (record, error) {
	var r record
	var f [9]string
	rest := line
	for i := range f {
		var ok bool
		f[i], rest, ok = strings.Cut(rest, " ")
		if !ok {
			return r, fmt.Errorf("short index line %q", line)
		}
	}
	if len(f[0]) != 1 || !strings.Contains("dfl", f[0]) {
		return r, fmt.Errorf("index line %q: bad type", line)
	}
	r.Type = f[0][0]
	mode, err1 := strconv.ParseUint(f[1], 8, 32)
	uid, err2 := strconv.ParseUint(f[2], 10, 32)
	gid, err3 := strconv.ParseUint(f[3], 10, 32)
	size, err4 := strconv.ParseInt(f[4], 10, 64)
	mtime, err5 := strconv.ParseInt(f[5], 10, 64)
	link, err6 := strconv.Atoi(f[6])
	if err := errors.Join(err1, err2, err3, err4, err5, err6); err != nil {
		return r, fmt.Errorf("index line %q: %w", line, err)
	}
	r.Mode, r.UID, r.GID, r.Size, r.MTime, r.Link = uint32(mode), uint32(uid), uint32(gid), size, mtime, link
	if r.Type == typeFile {
		if n, err := hex.Decode(r.Sum[:], []byte(f[7])); err != nil || n != len(r.Sum) {
			return r, fmt.Errorf("index line %q: bad sha256", line)
		}
	}
	if f[8] != "-" {
		r.Object = f[8]
	}
	q, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return r, fmt.Errorf("index line %q: bad path", line)
	}
	r.Path, _ = strconv.Unquote(q)
	rest = rest[len(q):]
	if r.Type == typeSymlink {
		t, err := strconv.QuotedPrefix(strings.TrimPrefix(rest, " "))
		if err != nil {
			return r, fmt.Errorf("index line %q: bad symlink target", line)
		}
		r.Target, _ = strconv.Unquote(t)
	}
	return r, nil
}

// comparePaths orders index paths depth-first: "." first, then component by component in byte
// order (a folder before its contents, "a/b" before "a.b"). It is string comparison with "/"
// weighing less than any byte a name can hold.
func comparePaths(a, b string) int {
	switch {
	case a == b:
		return 0
	case a == ".":
		return -1
	case b == ".":
		return 1
	}
	n := min(len(a), len(b))
	for i := range n {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if ca == '/' {
			ca = 0
		}
		if cb == '/' {
			cb = 0
		}
		if ca < cb {
			return -1
		}
		return 1
	}
	return len(a) - len(b)
}

// joinPath is path.Join for index paths: "." + name is name.
func joinPath(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

// kopiaName is the name a file is given in kopia: its own when valid UTF-8 (kopia's directory
// objects are JSON, which replaces other bytes with U+FFFD), else a NUL (no real name holds one)
// and the name's bytes in hex. realName undoes it.
func kopiaName(name string) string {
	if utf8.ValidString(name) {
		return name
	}
	return "\x00" + hex.EncodeToString([]byte(name))
}

func realName(k string) string {
	if strings.HasPrefix(k, "\x00") {
		if b, err := hex.DecodeString(k[1:]); err == nil {
			return string(b)
		}
	}
	return k
}

// realPath converts a slash-separated path of kopia names to real names.
func realPath(k string) string {
	if !strings.Contains(k, "\x00") {
		return k
	}
	parts := strings.Split(k, "/")
	for i, p := range parts {
		parts[i] = realName(p)
	}
	return strings.Join(parts, "/")
}

// indexWriter streams records into a kopia object.
type indexWriter struct {
	w     object.Writer
	buf   *bufio.Writer
	line  []byte
	count int
	last  string
}

func newIndexWriter(ctx context.Context, rep repo.RepositoryWriter, desc string) *indexWriter {
	w := rep.NewObjectWriter(ctx, object.WriterOptions{
		Description:        "PLANRUN-INDEX:" + desc,
		Compressor:         indexCompressor,
		MetadataCompressor: indexCompressor,
		Splitter:           indexSplitter,
	})
	iw := &indexWriter{w: w, buf: bufio.NewWriterSize(w, 256<<10)}
	iw.buf.WriteString(indexHeader + "\n")
	return iw
}

func (iw *indexWriter) add(r *record) error {
	if iw.count > 0 && comparePaths(iw.last, r.Path) >= 0 {
		return fmt.Errorf("index out of order: %q after %q", r.Path, iw.last)
	}
	iw.line = r.appendLine(iw.line[:0])
	iw.count++
	iw.last = r.Path
	_, err := iw.buf.Write(iw.line)
	return err
}

// finish writes the trailer and returns the object's ID.
func (iw *indexWriter) finish() (object.ID, error) {
	fmt.Fprintf(iw.buf, "end %d\n", iw.count)
	if err := iw.buf.Flush(); err != nil {
		iw.w.Close()
		return object.EmptyID, err
	}
	oid, err := iw.w.Result()
	iw.w.Close()
	return oid, err
}

func (iw *indexWriter) abort() { iw.w.Close() }

// indexReader streams the records of an index object.
type indexReader struct {
	r     io.ReadCloser
	sc    *bufio.Scanner
	count int
	done  bool
}

func openIndex(ctx context.Context, rep repo.Repository, oid object.ID) (*indexReader, error) {
	r, err := rep.OpenObject(ctx, oid)
	if err != nil {
		return nil, fmt.Errorf("opening index %v: %w", oid, err)
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() || sc.Text() != indexHeader {
		r.Close()
		return nil, fmt.Errorf("index %v: not a planrun mover index", oid)
	}
	return &indexReader{r: r, sc: sc}, nil
}

// next returns the next record; ok is false at the end, which it checks against the trailer (a
// truncated index is an error).
func (ir *indexReader) next() (rec record, ok bool, err error) {
	if ir.done {
		return rec, false, nil
	}
	if !ir.sc.Scan() {
		if err := ir.sc.Err(); err != nil {
			return rec, false, fmt.Errorf("reading index: %w", err)
		}
		return rec, false, errors.New("index truncated: no trailer")
	}
	line := ir.sc.Text()
	if n, found := strings.CutPrefix(line, "end "); found {
		ir.done = true
		if c, err := strconv.Atoi(n); err != nil || c != ir.count {
			return rec, false, fmt.Errorf("index trailer says %s entries, read %d", n, ir.count)
		}
		return rec, false, nil
	}
	rec, err = parseLine(line)
	if err != nil {
		return rec, false, err
	}
	ir.count++
	return rec, true, nil
}

func (ir *indexReader) Close() error { return ir.r.Close() }

// cursor looks records up in one index in increasing path order.
type cursor struct {
	ir  *indexReader
	cur record
	ok  bool
}

func newCursor(ir *indexReader) *cursor {
	c := &cursor{ir: ir}
	c.advance()
	return c
}

func (c *cursor) advance() {
	var err error
	c.cur, c.ok, err = c.ir.next()
	if err != nil {
		c.ok = false // a damaged parent index only costs re-reading objects
	}
}

// find returns the record of p, if the index has one; calls must come in path order.
func (c *cursor) find(p string) (*record, bool) {
	for c.ok && comparePaths(c.cur.Path, p) < 0 {
		c.advance()
	}
	if c.ok && c.cur.Path == p {
		return &c.cur, true
	}
	return nil, false
}

// inode identifies a file for hard-link grouping.
type inode struct{ dev, ino uint64 }

// freshEntry is what a backup learnt reading a file (or symlink) itself: the metadata kopia
// records for it (from the folder listing; size is what was read) and its sha256 (target).
type freshEntry struct {
	size, mtime int64
	mode        os.FileMode
	uid, gid    uint32
	sum         [32]byte
	target      string
}

// indexer builds the indexes of one backup: of each checkpoint kopia saves, and of the final
// snapshot. It walks the snapshot's tree in the repository (directory objects, in index order)
// and takes each file's sha256 from, in order: what this run read (fresh, matched by path and
// metadata); an earlier index (the parents', this run's last checkpoint's) holding the same path
// with the same kopia object ID (the same content: kopia reused the entry); and, failing both,
// the object itself, read back from the repository and hashed (a parent without an index).
type indexer struct {
	mu      sync.Mutex
	fresh   map[string]*freshEntry // by real path; pruned once a checkpoint index holds them
	links   map[string]inode       // real path → inode, files with more than one name
	parents []object.ID            // indexes of the parent snapshots
	own     object.ID              // index of this run's latest checkpoint
	// rehashed counts entries whose sum had to be read from the repository.
	rehashed int
}

func newIndexer(parents []object.ID) *indexer {
	return &indexer{fresh: map[string]*freshEntry{}, links: map[string]inode{}, parents: parents}
}

func (ix *indexer) addFresh(p string, e *freshEntry) {
	ix.mu.Lock()
	ix.fresh[p] = e
	ix.mu.Unlock()
}

func (ix *indexer) addLink(p string, n inode) {
	ix.mu.Lock()
	ix.links[p] = n
	ix.mu.Unlock()
}

// indexStats counts what an index holds.
type indexStats struct {
	files, dirs, symlinks int64
	bytes                 int64
}

// write walks the tree under root and writes its index; checkpoint says the tree is a
// checkpoint's (entries kopia renamed ".checkpointed.*" hold parts of files and are left out).
// It returns the index's object ID, and the fresh paths it used (which later walks can find in
// this index).
func (ix *indexer) write(ctx context.Context, w repo.RepositoryWriter, root *snapshot.DirEntry, checkpoint bool) (object.ID, indexStats, []string, error) {
	iw := newIndexWriter(ctx, w, root.Name)
	ok := false
	defer func() {
		if !ok {
			iw.abort()
		}
	}()
	ix.mu.Lock()
	sources := append(slices.Clone(ix.parents), ix.own)
	groupSize := map[inode]int{}
	for _, n := range ix.links {
		groupSize[n]++
	}
	ix.mu.Unlock()
	var cursors []*cursor
	for _, oid := range sources {
		if oid == object.EmptyID {
			continue
		}
		ir, err := openIndex(ctx, w, oid)
		if err != nil {
			continue // no index to take sums from: objects are read back
		}
		defer ir.Close()
		cursors = append(cursors, newCursor(ir))
	}
	wk := &indexWalk{ix: ix, ctx: ctx, rep: w, iw: iw, cursors: cursors, checkpoint: checkpoint,
		groupSize: groupSize, groups: map[inode]int{}}
	rootRec := record{Path: ".", Type: typeDir, Object: root.ObjectID.String()}
	setMeta(&rootRec, root)
	if err := iw.add(&rootRec); err != nil {
		return object.EmptyID, indexStats{}, nil, err
	}
	wk.stats.dirs++
	if err := wk.dir(".", root.ObjectID); err != nil {
		return object.EmptyID, indexStats{}, nil, err
	}
	oid, err := iw.finish()
	if err != nil {
		return object.EmptyID, indexStats{}, nil, fmt.Errorf("writing index: %w", err)
	}
	ok = true
	return oid, wk.stats, wk.used, nil
}

// prune forgets fresh entries that an index now holds, and makes that index the one later
// walks look them up in.
func (ix *indexer) prune(oid object.ID, used []string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, p := range used {
		delete(ix.fresh, p)
	}
	ix.own = oid
}

type indexWalk struct {
	ix         *indexer
	ctx        context.Context
	rep        repo.RepositoryWriter
	iw         *indexWriter
	cursors    []*cursor
	checkpoint bool
	groupSize  map[inode]int
	groups     map[inode]int
	nextGroup  int
	used       []string
	stats      indexStats
}

func setMeta(r *record, de *snapshot.DirEntry) {
	r.Mode = unixPerm(os.FileMode(de.Permissions))
	r.UID, r.GID = de.UserID, de.GroupID
	r.MTime = int64(de.ModTime)
	if de.Type != snapshot.EntryTypeDirectory {
		r.Size = de.FileSize
	}
}

// readDirManifest reads a kopia directory object as stored (the repository file system of
// snapshotfs replaces a folder's mtime with its newest content's, and lists entries in map order).
func readDirManifest(ctx context.Context, rep repo.Repository, oid object.ID) (*snapshot.DirManifest, error) {
	r, err := rep.OpenObject(ctx, oid)
	if err != nil {
		return nil, fmt.Errorf("opening directory %v: %w", oid, err)
	}
	defer r.Close()
	var m snapshot.DirManifest
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return nil, fmt.Errorf("reading directory %v: %w", oid, err)
	}
	return &m, nil
}

// sortedEntries returns a directory's entries with real names, in byte order of those names.
func sortedEntries(m *snapshot.DirManifest, checkpoint bool) []*snapshot.DirEntry {
	out := make([]*snapshot.DirEntry, 0, len(m.Entries))
	for _, de := range m.Entries {
		if checkpoint && strings.HasPrefix(de.Name, ".checkpointed.") {
			continue
		}
		out = append(out, de)
	}
	slices.SortFunc(out, func(a, b *snapshot.DirEntry) int { return strings.Compare(realName(a.Name), realName(b.Name)) })
	return out
}

func (wk *indexWalk) dir(rel string, oid object.ID) error {
	if err := wk.ctx.Err(); err != nil {
		return err
	}
	m, err := readDirManifest(wk.ctx, wk.rep, oid)
	if err != nil {
		return err
	}
	for _, de := range sortedEntries(m, wk.checkpoint) {
		p := joinPath(rel, realName(de.Name))
		rec := record{Path: p, Object: de.ObjectID.String()}
		setMeta(&rec, de)
		switch de.Type {
		case snapshot.EntryTypeDirectory:
			rec.Type = typeDir
			if err := wk.iw.add(&rec); err != nil {
				return err
			}
			wk.stats.dirs++
			if err := wk.dir(p, de.ObjectID); err != nil {
				return err
			}
			continue
		case snapshot.EntryTypeFile:
			rec.Type = typeFile
			wk.stats.files++
			wk.stats.bytes += de.FileSize
			wk.ix.mu.Lock()
			n, linked := wk.ix.links[p]
			wk.ix.mu.Unlock()
			if linked && wk.groupSize[n] > 1 {
				g, seen := wk.groups[n]
				if !seen {
					wk.nextGroup++
					g = wk.nextGroup
					wk.groups[n] = g
				}
				rec.Link = g
			}
		case snapshot.EntryTypeSymlink:
			rec.Type = typeSymlink
			wk.stats.symlinks++
		default:
			continue
		}
		if err := wk.resolve(&rec, de); err != nil {
			return err
		}
		if err := wk.iw.add(&rec); err != nil {
			return err
		}
	}
	return nil
}

// resolve fills the sum (files) or target (symlinks) of rec.
func (wk *indexWalk) resolve(rec *record, de *snapshot.DirEntry) error {
	wk.ix.mu.Lock()
	fe := wk.ix.fresh[rec.Path]
	wk.ix.mu.Unlock()
	if fe != nil && fe.size == de.FileSize && fe.mtime == int64(de.ModTime) && fe.uid == de.UserID && fe.gid == de.GroupID &&
		fe.mode&modBits == os.FileMode(de.Permissions)&modBits {
		rec.Sum, rec.Target = fe.sum, fe.target
		wk.used = append(wk.used, rec.Path)
		return nil
	}
	for _, c := range wk.cursors {
		if old, ok := c.find(rec.Path); ok && old.Type == rec.Type && old.Object == rec.Object {
			rec.Sum, rec.Target = old.Sum, old.Target
			return nil
		}
	}
	// Not read by this run and in no earlier index: read the object back.
	wk.ix.mu.Lock()
	wk.ix.rehashed++
	wk.ix.mu.Unlock()
	r, err := wk.rep.OpenObject(wk.ctx, de.ObjectID)
	if err != nil {
		return fmt.Errorf("reading back %s: %w", rec.Path, err)
	}
	defer r.Close()
	if rec.Type == typeSymlink {
		b, err := io.ReadAll(io.LimitReader(r, 1<<20))
		if err != nil {
			return fmt.Errorf("reading back %s: %w", rec.Path, err)
		}
		rec.Target = string(b)
		return nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return fmt.Errorf("reading back %s: %w", rec.Path, err)
	}
	h.Sum(rec.Sum[:0])
	return nil
}

// modBits are the mode bits kopia keeps (and compares).
const modBits = os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky

// unixPerm converts an os.FileMode's permission bits to unix ones (04000 setuid, 02000 setgid,
// 01000 sticky).
func unixPerm(m os.FileMode) uint32 {
	p := uint32(m & os.ModePerm)
	if m&os.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

// goPerm is unixPerm's inverse.
func goPerm(p uint32) os.FileMode {
	m := os.FileMode(p & 0o777)
	if p&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if p&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if p&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

// snapshotWithIndex loads a complete snapshot manifest and the ID of its index.
func snapshotWithIndex(ctx context.Context, rep repo.Repository, id string) (*snapshot.Manifest, object.ID, error) {
	if id == "" {
		return nil, object.EmptyID, errors.New("no snapshot given")
	}
	man, err := snapshot.LoadSnapshot(ctx, rep, manifestID(id))
	if err != nil {
		return nil, object.EmptyID, fmt.Errorf("snapshot %s: %w", id, err)
	}
	if man.IncompleteReason != "" {
		return nil, object.EmptyID, fmt.Errorf("snapshot %s is incomplete (%s)", id, man.IncompleteReason)
	}
	if man.RootEntry == nil || man.RootEntry.Type != snapshot.EntryTypeDirectory {
		return nil, object.EmptyID, fmt.Errorf("snapshot %s is not of a folder", id)
	}
	oid, err := object.ParseID(man.Tags[tagIndex])
	if err != nil || man.Tags[tagIndex] == "" {
		return nil, object.EmptyID, fmt.Errorf("snapshot %s has no planrun index: not made by planrun mover backup", id)
	}
	return man, oid, nil
}
