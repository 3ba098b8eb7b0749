package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"

	"planrun.dev/planrun/internal/parallel"
	"planrun.dev/planrun/steps/storage"
)

// VerifyResult sums up a verification.
type VerifyResult struct {
	Files   int   `json:"files"`
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
}

// verifyWorkers is how many files are checked at once: an object store answers each read after
// a round trip, which reading several files at once hides.
const verifyWorkers = 8

// Verify rechecks every file of a backup against its manifest: present, same size, same sha256
// of the stored bytes and, for an uncompressed file, the same number of objects (a compressed
// file whose sha256 matches holds what was counted when it was written: it is not decompressed).
// Every problem is reported, in one line, naming the file. A failure to read that is not about
// the backup (the location unreachable) is returned as it is.
func Verify(ctx context.Context, loc storage.Location, progress func(done, total int64)) (VerifyResult, error) {
	m, err := ReadManifest(ctx, loc)
	if err != nil {
		return VerifyResult{}, err
	}
	var files []File
	var res VerifyResult
	for _, r := range m.Resources {
		for _, f := range r.Files {
			files = append(files, f)
			res.Files++
			res.Objects += f.Count
			res.Bytes += f.Bytes
		}
	}
	problems := make([]string, len(files))
	var mu sync.Mutex
	var done int64
	idx := make([]int, len(files))
	for i := range idx {
		idx[i] = i
	}
	err = parallel.Each(ctx, verifyWorkers, idx, func(ctx context.Context, i int) error {
		f := files[i]
		problem, err := checkFile(ctx, loc, m.Compression, f)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		problems[i] = problem
		done += f.Bytes
		if progress != nil {
			progress(done, m.Bytes)
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	var found []string
	for _, p := range problems {
		if p != "" {
			found = append(found, p)
		}
	}
	if len(found) > 0 {
		return res, &VerifyError{Backup: loc.String(), Problems: found}
	}
	return res, nil
}

// VerifyError lists the damaged files of a backup. It matches ErrDamaged.
type VerifyError struct {
	Backup   string   // the location, without credentials
	Problems []string // "path: reason", in manifest order
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("backup %s is damaged (%d problems): %s", e.Backup, len(e.Problems), strings.Join(e.Problems, "; "))
}

// Is makes a VerifyError match ErrDamaged.
func (e *VerifyError) Is(target error) bool { return target == ErrDamaged }

// checkFile reads one file to its end: its problem ("path: reason"), or "" when it matches its
// manifest entry, or an error when it could not be read for another reason than being damaged
// or absent.
func checkFile(ctx context.Context, loc storage.Location, c Compression, f File) (string, error) {
	raw, err := openFile(ctx, loc, f.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return f.Path + ": missing", nil
	case errors.Is(err, ErrNotRegular), errors.Is(err, storage.ErrNotRegular):
		return fmt.Sprintf("%s: %v", f.Path, err), nil
	case err != nil:
		return "", located(loc, f.Path, err)
	}
	defer raw.Close()
	in := newCheckedReader(raw, f.Bytes)
	var lines int64
	buf := make([]byte, 256<<10)
	for {
		n, rerr := in.Read(buf)
		if c == None {
			lines += int64(bytes.Count(buf[:n], []byte{'\n'}))
		}
		if rerr == io.EOF {
			break
		}
		if rerr == errTooLarge {
			return fmt.Sprintf("%s: more than the %d bytes the manifest says", f.Path, f.Bytes), nil
		}
		if rerr != nil {
			return "", located(loc, f.Path, rerr)
		}
	}
	if problem := in.check(f); problem != "" {
		return f.Path + ": " + problem, nil
	}
	if c == None && lines != f.Count {
		return fmt.Sprintf("%s: %d objects, the manifest says %d", f.Path, lines, f.Count), nil
	}
	return "", nil
}
