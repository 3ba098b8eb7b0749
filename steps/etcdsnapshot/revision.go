package etcdsnapshot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The revision of a snapshot is the revision of its key-value store: the newest key of the
// "key" bucket, or the finished compaction if later (a compaction can remove a trailing
// deletion). Keys and the compaction mark start with the revision's main part, 8 bytes
// big-endian. etcd's Snapshot RPC does not say it: its responses carry no header (etcd v3.7,
// server/etcdserver/api/v3rpc/maintenance.go), so clientv3's SnapshotResponse.Header is nil.

// snapshotRevision reads the revision of a snapshot file with bbolt, without scanning it.
func snapshotRevision(path string) (int64, error) {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true, Timeout: 10 * time.Second})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var rev int64
	err = db.View(func(tx *bolt.Tx) error {
		kb := tx.Bucket([]byte(keyBucket))
		if kb == nil {
			return errors.New("no key bucket: not an etcd v3 snapshot")
		}
		if k, _ := kb.Cursor().Last(); len(k) >= 8 {
			rev = int64(binary.BigEndian.Uint64(k[:8]))
		}
		if mb := tx.Bucket([]byte(metaBucket)); mb != nil {
			if v := mb.Get([]byte(compactKey)); len(v) >= 8 {
				rev = max(rev, int64(binary.BigEndian.Uint64(v[:8])))
			}
		}
		return nil
	})
	return rev, err
}

const (
	keyBucket  = "key"
	metaBucket = "meta"
	compactKey = "finishedCompactRev"
)

// bbolt's file format (go.etcd.io/bbolt/internal/common, little-endian as on the machines etcd
// runs on): pages of pageSize bytes, each starting with a 16-byte header (id u64, flags u16,
// count u16, overflow u32); a page with overflow n spans n+1 pages. The two meta pages come
// first; element headers follow the page header, and their pos is relative to the element.
const (
	pageHeaderSize = 16
	elementSize    = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	bucketHeader   = 16 // a bucket's value: root pgid u64, sequence u64, then its inline page when root is 0
	branchPage     = 0x01
	leafPage       = 0x02
	metaPage       = 0x04
	bucketElement  = 0x01
	boltMagic      = 0xED0CDAED
	boltVersion    = 2
	// maxRun bounds one page and its overflow (a leaf holding one large value), kept whole
	// while it streams by: far above etcd's largest request (1.5 MiB by default).
	maxRun = 64 << 20
)

// revisionScanner finds the revision of a snapshot while it streams by (io.Writer), in one pass
// and without the file, for a snapshot that goes straight to an object store. It reads what
// snapshotRevision reads: the meta page gives the root bucket, whose leaf gives the key and
// meta buckets; the last leaf of the key bucket gives the newest key, the meta bucket the
// finished compaction.
//
// Pages arrive in file order while a tree's children may come before or after their parent,
// so the scanner keeps a few numbers per branch page (about 1% of the pages), one bit per page
// read as a leaf, and of the leaves' contents only what may be the answer: a last key at or
// above floor (the revision etcd reported before the snapshot started: the snapshot holds at
// least that), the empty leaves, and the leaves holding the buckets or the compaction mark.
// Memory stays flat in the snapshot's size (a page is kept only while it streams by); the
// answer is exact whatever is written during the snapshot, or an error.
//
// Pages are walked as bbolt's own page listing walks them, a page and its overflow at a time,
// free pages included: bbolt allocates a run of pages from its first page, so the first page of
// a free run, whose overflow count may be stale, is free whenever the rest is.
type revisionScanner struct {
	floor    int64
	pageSize int
	pos      uint64 // id of the page run being received
	run      []byte // what was received of it
	size     int    // its size, once its header was received
	skip     int    // bytes left of a run too large to keep, passed over
	metas    []boltMeta
	branches map[uint64]branchRefs
	leafRead []uint64            // bit per page: read as a leaf
	leaves   map[uint64]int64    // leaf → revision of its last key (0: empty leaf)
	buckets  map[uint64]leafRefs // leaves holding the key or meta bucket
	compacts map[uint64]int64    // leaves holding the compaction mark
	err      error
}

type boltMeta struct {
	root, txid uint64
}

// branchRefs are the children a branch page leads to: the last one (the newest keys) and
// the ones a lookup of keyBucket, metaBucket and compactKey descends into.
type branchRefs struct {
	last                uint64
	key, meta, compacts uint64
}

// bucketRef is where a bucket is: its root page, or, for an inline bucket (root 0), what the
// scanner needs from its inline page.
type bucketRef struct {
	found   bool
	root    uint64
	lastRev int64 // inline: of the last key
	compact int64 // inline: the compaction mark
}

type leafRefs struct{ key, meta bucketRef }

// leafFacts is what one leaf page says.
type leafFacts struct {
	count          int
	lastRev        int64 // of the last element's key, when it is a key of the key bucket
	hasLastRev     bool
	key, meta      bucketRef
	compact        int64
	hasCompactMark bool
}

func newRevisionScanner(floor int64) *revisionScanner {
	return &revisionScanner{
		floor:    floor,
		branches: map[uint64]branchRefs{},
		leaves:   map[uint64]int64{},
		buckets:  map[uint64]leafRefs{},
		compacts: map[uint64]int64{},
	}
}

// Write implements io.Writer. It never fails: a stream it cannot read makes Revision fail.
func (s *revisionScanner) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 && s.err == nil {
		if s.skip > 0 {
			k := min(len(b), s.skip)
			b, s.skip = b[k:], s.skip-k
			continue
		}
		need := s.size
		if need == 0 {
			need = pageHeaderSize
			if s.pageSize == 0 {
				need += 12 // the first meta page, up to its pageSize field
			}
		}
		k := min(len(b), need-len(s.run))
		s.run = append(s.run, b[:k]...)
		b = b[k:]
		switch {
		case len(s.run) < need:
		case s.size == 0:
			s.start()
		default:
			s.read(s.pos, s.run)
			s.pos += uint64(s.size / s.pageSize)
			s.run, s.size = s.run[:0], 0
		}
	}
	return n, nil
}

// start sizes the run whose header was received: the page and its overflow when the page says
// it is the page at its position, else that page alone (what follows the first page of a free
// run once that page was used again). A run too large to keep is passed over, unread: if the
// tree leads to it, Revision says so.
func (s *revisionScanner) start() {
	if s.pageSize == 0 {
		ps := int(binary.LittleEndian.Uint32(s.run[pageHeaderSize+8:]))
		if ps < 512 || ps > 1<<20 || ps&(ps-1) != 0 {
			s.err = fmt.Errorf("not a bbolt file: page size %d", ps)
			return
		}
		s.pageSize = ps
	}
	s.size = s.pageSize
	if binary.LittleEndian.Uint64(s.run) == s.pos {
		s.size = (1 + int(binary.LittleEndian.Uint32(s.run[12:]))) * s.pageSize
	}
	if s.size > maxRun {
		s.skip = s.size - len(s.run)
		s.pos += uint64(s.size / s.pageSize)
		s.run, s.size = s.run[:0], 0
	}
}

// read reads the page run of page id. Pages that do not say they are page id, or do not parse,
// are left unread.
func (s *revisionScanner) read(id uint64, p []byte) {
	if binary.LittleEndian.Uint64(p) != id {
		return
	}
	switch binary.LittleEndian.Uint16(p[8:]) {
	case metaPage:
		if m, ok := readMeta(p); ok && id < 2 {
			s.metas = append(s.metas, m)
		}
	case branchPage:
		if refs, err := readBranch(p); err == nil {
			s.branches[id] = refs
		}
	case leafPage:
		f, err := readLeaf(p)
		if err != nil {
			return
		}
		for uint64(len(s.leafRead)) <= id/64 {
			s.leafRead = append(s.leafRead, 0)
		}
		s.leafRead[id/64] |= 1 << (id % 64)
		if f.count == 0 {
			s.leaves[id] = 0
		} else if f.hasLastRev && f.lastRev >= s.floor {
			s.leaves[id] = f.lastRev
		}
		if f.key.found || f.meta.found {
			s.buckets[id] = leafRefs{key: f.key, meta: f.meta}
		}
		if f.hasCompactMark {
			s.compacts[id] = f.compact
		}
	}
}

func (s *revisionScanner) isLeaf(id uint64) bool {
	return id/64 < uint64(len(s.leafRead)) && s.leafRead[id/64]&(1<<(id%64)) != 0
}

func readMeta(p []byte) (boltMeta, bool) {
	// magic u32, version u32, pageSize u32, flags u32, root u64, sequence u64, freelist u64,
	// pgid u64, txid u64, then the FNV-64a checksum of all that.
	const summed = 56
	if len(p) < pageHeaderSize+summed+8 {
		return boltMeta{}, false
	}
	m := p[pageHeaderSize:]
	h := fnv.New64a()
	h.Write(m[:summed])
	if binary.LittleEndian.Uint32(m) != boltMagic || binary.LittleEndian.Uint32(m[4:]) != boltVersion ||
		binary.LittleEndian.Uint64(m[summed:]) != h.Sum64() {
		return boltMeta{}, false
	}
	return boltMeta{root: binary.LittleEndian.Uint64(m[16:]), txid: binary.LittleEndian.Uint64(m[48:])}, true
}

// element returns the key and value (or pgid bytes) of element i of page p.
func element(p []byte, i int, leaf bool) (flags uint32, key, val []byte, pgid uint64, err error) {
	off := pageHeaderSize + i*elementSize
	if off+elementSize > len(p) {
		return 0, nil, nil, 0, errors.New("element beyond the page")
	}
	e := p[off : off+elementSize]
	var pos, ksize, vsize uint32
	if leaf {
		flags, pos, ksize, vsize = binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:]), binary.LittleEndian.Uint32(e[8:]), binary.LittleEndian.Uint32(e[12:])
	} else {
		pos, ksize, pgid = binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:]), binary.LittleEndian.Uint64(e[8:])
	}
	start := uint64(off) + uint64(pos)
	end := start + uint64(ksize) + uint64(vsize)
	if end > uint64(len(p)) {
		return 0, nil, nil, 0, errors.New("element data beyond the page")
	}
	return flags, p[start : start+uint64(ksize)], p[start+uint64(ksize) : end], pgid, nil
}

func readBranch(p []byte) (branchRefs, error) {
	n := int(binary.LittleEndian.Uint16(p[10:]))
	if n == 0 {
		return branchRefs{}, errors.New("empty branch page")
	}
	keys := make([][]byte, n)
	pgids := make([]uint64, n)
	for i := range n {
		_, k, _, id, err := element(p, i, false)
		if err != nil {
			return branchRefs{}, err
		}
		keys[i], pgids[i] = k, id
	}
	// bbolt's search: the last child whose first key is at or below the key (the first child
	// when every key is above).
	lookup := func(key string) uint64 {
		i := sort.Search(n, func(i int) bool { return bytes.Compare(keys[i], []byte(key)) >= 0 })
		if i == n || !bytes.Equal(keys[i], []byte(key)) {
			i = max(i-1, 0)
		}
		return pgids[i]
	}
	return branchRefs{last: pgids[n-1], key: lookup(keyBucket), meta: lookup(metaBucket), compacts: lookup(compactKey)}, nil
}

// readLeaf reads a leaf page (or a bucket's inline page, which is one).
func readLeaf(p []byte) (leafFacts, error) {
	if len(p) < pageHeaderSize {
		return leafFacts{}, errors.New("short page")
	}
	f := leafFacts{count: int(binary.LittleEndian.Uint16(p[10:]))}
	for i := range f.count {
		flags, k, v, _, err := element(p, i, true)
		if err != nil {
			return leafFacts{}, err
		}
		if flags&bucketElement != 0 {
			var ref *bucketRef
			switch string(k) {
			case keyBucket:
				ref = &f.key
			case metaBucket:
				ref = &f.meta
			default:
				continue
			}
			if len(v) < bucketHeader {
				return leafFacts{}, fmt.Errorf("bucket %q: short header", k)
			}
			ref.found, ref.root = true, binary.LittleEndian.Uint64(v)
			if ref.root == 0 {
				inline, err := readLeaf(v[bucketHeader:])
				if err != nil {
					return leafFacts{}, fmt.Errorf("inline bucket %q: %w", k, err)
				}
				ref.lastRev, ref.compact = inline.lastRev, inline.compact
			}
			continue
		}
		if string(k) == compactKey && len(v) >= 8 {
			f.compact, f.hasCompactMark = int64(binary.BigEndian.Uint64(v)), true
		}
		if i == f.count-1 && isRevisionKey(k) {
			f.lastRev, f.hasLastRev = int64(binary.BigEndian.Uint64(k)), true
		}
	}
	return f, nil
}

// isRevisionKey reports whether k is a key of the key bucket: the main revision (8 bytes), '_',
// the sub revision (8 bytes), and 't' for a deletion. Leaves of other buckets (leases, members)
// are not kept for the sake of their last key.
func isRevisionKey(k []byte) bool {
	return (len(k) == 17 || len(k) == 18) && k[8] == '_'
}

// Revision is the snapshot's revision, once the whole database went through Write.
func (s *revisionScanner) Revision() (int64, error) {
	if s.err != nil {
		return 0, s.err
	}
	if len(s.run) != 0 || s.skip != 0 {
		return 0, fmt.Errorf("the stream ends inside page %d", s.pos)
	}
	root, err := s.root()
	if err != nil {
		return 0, err
	}
	key, err := s.bucket(root, keyBucket)
	if err != nil {
		return 0, err
	}
	if !key.found {
		return 0, errors.New("no key bucket: not an etcd v3 snapshot")
	}
	meta, err := s.bucket(root, metaBucket)
	if err != nil {
		return 0, err
	}
	compact, err := s.compaction(meta)
	if err != nil {
		return 0, err
	}
	last, known, err := s.lastRevision(key)
	if err != nil {
		return 0, err
	}
	switch {
	case known:
		return max(last, compact), nil
	case compact >= s.floor:
		// The newest key is below floor, so below the compaction.
		return compact, nil
	}
	return 0, fmt.Errorf("its newest key is below revision %d, which etcd reported before the snapshot", s.floor)
}

// root is the root bucket's page, as the newest valid meta page says.
func (s *revisionScanner) root() (uint64, error) {
	if len(s.metas) == 0 {
		return 0, errors.New("no valid meta page: not a bbolt file")
	}
	m := s.metas[0]
	for _, o := range s.metas[1:] {
		if o.txid > m.txid {
			m = o
		}
	}
	return m.root, nil
}

// maxDepth bounds a descent, so that a corrupt tree that loops ends.
const maxDepth = 64

// descend follows branch pages from page p, choosing a child with next, to a leaf that was
// read.
func (s *revisionScanner) descend(p uint64, what string, next func(branchRefs) uint64) (uint64, error) {
	for range maxDepth {
		b, ok := s.branches[p]
		if !ok {
			break
		}
		p = next(b)
	}
	if !s.isLeaf(p) {
		return 0, fmt.Errorf("page %d of the %s was not read as a page of the tree", p, what)
	}
	return p, nil
}

// bucket finds a bucket of the root bucket, whose root page is root.
func (s *revisionScanner) bucket(root uint64, name string) (bucketRef, error) {
	leaf, err := s.descend(root, "root bucket", func(b branchRefs) uint64 {
		if name == keyBucket {
			return b.key
		}
		return b.meta
	})
	if err != nil {
		return bucketRef{}, err
	}
	if name == keyBucket {
		return s.buckets[leaf].key, nil
	}
	return s.buckets[leaf].meta, nil
}

// lastRevision follows the key bucket down its last children to its last leaf. known is false
// when that leaf's contents were not kept: its last key is below floor.
func (s *revisionScanner) lastRevision(b bucketRef) (rev int64, known bool, err error) {
	if b.root == 0 {
		return b.lastRev, true, nil
	}
	leaf, err := s.descend(b.root, "key bucket", func(b branchRefs) uint64 { return b.last })
	if err != nil {
		return 0, false, err
	}
	rev, known = s.leaves[leaf]
	return rev, known, nil
}

// compaction finds the finished compaction in the meta bucket (0 when there is none).
func (s *revisionScanner) compaction(b bucketRef) (int64, error) {
	if !b.found {
		return 0, nil
	}
	if b.root == 0 {
		return b.compact, nil
	}
	leaf, err := s.descend(b.root, "meta bucket", func(b branchRefs) uint64 { return b.compacts })
	if err != nil {
		return 0, err
	}
	return s.compacts[leaf], nil
}
