package mover

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kopia/kopia/repo"
	"golang.org/x/sys/unix"
)

// VerifyOptions say what Verify compares.
type VerifyOptions struct {
	// Dir is the folder to check.
	Dir string
	// Snapshot is the ID of a complete snapshot made by Backup.
	Snapshot string
	// Events receives progress; nil: none.
	Events func(Event)
	// Parallel is how many files are read at once (0: the number of CPUs).
	Parallel int
}

// VerifyResult is what Verify checked; it is also the "result" event of a verification.
type VerifyResult struct {
	Snapshot string `json:"snapshot"`
	// Entries counts everything compared: files, folders, symlinks.
	Entries int64 `json:"entries"`
	// Files and Bytes are the regular files read and their size.
	Files   int64   `json:"files"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// Mismatch is one difference Verify found.
type Mismatch struct {
	Path    string
	Problem string // "sha256 differs", "missing", "mode 0600, snapshot has 0644"…
}

// VerifyError says that a folder is not the snapshot: how many entries differ, and the first
// ones in path order.
type VerifyError struct {
	Snapshot string
	// Entries is how many entries (files, folders, symlinks) the snapshot and the folder hold.
	Entries int64
	// Count is how many differ; First holds the first of them (at most 10), in path order.
	Count int
	First []Mismatch
}

// Error is one line: "verify: 2 of 10,421 entries differ from snapshot k1f2…: data/f0042
// (sha256 differs), data/big (missing)".
func (e *VerifyError) Error() string {
	return fmt.Sprintf("verify: %s of %s entries differ from snapshot %s: %s",
		thousands(int64(e.Count)), thousands(e.Entries), e.Snapshot, listMismatches(e.First, e.Count))
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// Verify reads every regular file in opts.Dir and compares its sha256 with the snapshot's
// index; it also compares every entry's type, size, mode, owner, mtime, symlink target and
// hard-link grouping, and finds entries the snapshot does not have. A difference is a
// *VerifyError.
func Verify(ctx context.Context, rep repo.Repository, opts VerifyOptions) (VerifyResult, error) {
	start := time.Now()
	res, err := verifyRun(ctx, rep, opts)
	if err != nil {
		return VerifyResult{}, err
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func verifyRun(ctx context.Context, rep repo.Repository, opts VerifyOptions) (VerifyResult, error) {
	man, idx, err := snapshotWithIndex(ctx, rep, opts.Snapshot)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify: %w", err)
	}
	root, err := filepath.EvalSymlinks(opts.Dir)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify: %w", err)
	}
	if opts.Parallel <= 0 {
		opts.Parallel = runtime.NumCPU()
	}
	rp := startReporter(PhaseVerify, opts.Events)
	defer rp.stop()
	if s := man.RootEntry.DirSummary; s != nil {
		rp.filesTotal.Store(s.TotalFileCount)
		rp.bytesTotal.Store(s.TotalFileSize)
	}
	ir, err := openIndex(ctx, rep, idx)
	if err != nil {
		return VerifyResult{}, fmt.Errorf("verify: %w", err)
	}
	defer ir.Close()

	v := &verifier{root: root, rp: rp, groups: map[int]inode{}, shared: map[inode]sharedName{}}
	jobs := make(chan hashJob, 4*opts.Parallel)
	var wg sync.WaitGroup
	for range opts.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				v.hash(j)
			}
		}()
	}
	walkErr := mergeWalk(ctx, root, ir, func(rel string, st *unix.Stat_t, rec *record) (bool, error) {
		return v.compare(rel, st, rec, jobs), nil
	})
	close(jobs)
	wg.Wait()
	if walkErr != nil {
		return VerifyResult{}, fmt.Errorf("verify: %w", walkErr)
	}
	if err := ctx.Err(); err != nil {
		return VerifyResult{}, err
	}
	rp.stop()
	if n := v.bad.len(); n > 0 {
		return VerifyResult{}, verifyError(&v.bad, opts.Snapshot, v.entries)
	}
	return VerifyResult{Snapshot: opts.Snapshot, Entries: v.entries, Files: v.files, Bytes: v.bytes}, nil
}

type hashJob struct {
	rel  string
	sum  [32]byte
	size int64
	// problems are those compare found in the file's metadata, reported with the hash's.
	problems []string
}

type sharedName struct {
	path  string
	group int
}

type verifier struct {
	root    string
	rp      *reporter
	entries int64
	files   int64
	bytes   int64
	groups  map[int]inode        // hard-link group → the inode of its first name on disk
	shared  map[inode]sharedName // files with several names on disk → the first name seen
	bad     problemList
}

// compare checks one entry's metadata and queues regular files for hashing; it says whether to
// walk into a folder. An entry's problems are reported together, once (a hashed file's with its
// sha256's), so that the error counts entries, not problems.
func (v *verifier) compare(rel string, st *unix.Stat_t, rec *record, jobs chan<- hashJob) bool {
	switch {
	case st == nil:
		v.entries++
		v.bad.add(rel, "missing")
		return false
	case rec == nil:
		v.bad.add(rel, "unexpected "+statTypeName(st))
		return false
	}
	v.entries++
	if lt := localType(st); lt != rec.Type {
		v.bad.add(rel, fmt.Sprintf("is a %s, snapshot has a %s", statTypeName(st), rec.typeName()))
		return false
	}
	var problems []string
	if rec.Type != typeSymlink && st.Mode&0o7777 != rec.Mode {
		problems = append(problems, fmt.Sprintf("mode %04o, snapshot has %04o", st.Mode&0o7777, rec.Mode))
	}
	if st.Uid != rec.UID || st.Gid != rec.GID {
		problems = append(problems, fmt.Sprintf("owner %d:%d, snapshot has %d:%d", st.Uid, st.Gid, rec.UID, rec.GID))
	}
	if !sameTime(st.Mtim.Nano(), rec.MTime) {
		problems = append(problems, fmt.Sprintf("mtime %s, snapshot has %s", fmtNano(st.Mtim.Nano()), fmtNano(rec.MTime)))
	}
	switch rec.Type {
	case typeSymlink:
		target, err := os.Readlink(localPath(v.root, rel))
		if err != nil {
			problems = append(problems, err.Error())
		} else if target != rec.Target {
			problems = append(problems, fmt.Sprintf("symlink to %q, snapshot has %q", target, rec.Target))
		}
	case typeFile:
		v.files++
		v.bytes += rec.Size
		n := inode{st.Dev, st.Ino}
		if rec.Link != 0 {
			if first, seen := v.groups[rec.Link]; !seen {
				v.groups[rec.Link] = n
			} else if first != n {
				problems = append(problems, "not a hard link of the other names of its group")
			}
		}
		if st.Nlink > 1 {
			if other, seen := v.shared[n]; !seen {
				v.shared[n] = sharedName{rel, rec.Link}
			} else if other.group == 0 || other.group != rec.Link {
				problems = append(problems, fmt.Sprintf("hard link of %s, snapshot has them apart", other.path))
			}
		}
		if st.Size != rec.Size {
			problems = append(problems, fmt.Sprintf("size %d, snapshot has %d", st.Size, rec.Size))
		} else {
			jobs <- hashJob{rel: rel, sum: rec.Sum, size: rec.Size, problems: problems}
			return false
		}
	}
	if len(problems) > 0 {
		v.bad.add(rel, strings.Join(problems, "; "))
	}
	return rec.Type == typeDir
}

func fmtNano(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }

func (v *verifier) hash(j hashJob) {
	problems := j.problems
	defer func() {
		if len(problems) > 0 {
			v.bad.add(j.rel, strings.Join(problems, "; "))
		}
	}()
	p := localPath(v.root, j.rel)
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		problems = append(problems, err.Error())
		return
	}
	defer f.Close()
	h := sha256.New()
	bp := copyBuffers.Get().(*[]byte)
	n, err := io.CopyBuffer(struct{ io.Writer }{h}, struct{ io.Reader }{f}, *bp)
	copyBuffers.Put(bp)
	v.rp.files.Add(1)
	v.rp.bytes.Add(n)
	if err != nil {
		problems = append(problems, err.Error())
		return
	}
	var sum [32]byte
	if h.Sum(sum[:0]); sum != j.sum {
		problems = append(problems, "sha256 differs")
	}
}

func verifyError(l *problemList, snap string, entries int64) *VerifyError {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &VerifyError{Snapshot: snap, Entries: entries, Count: l.count, First: slices.Clone(l.first)}
}
