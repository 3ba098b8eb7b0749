package archive

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// VerifyResult sums up a verification.
type VerifyResult struct {
	Files   int   `json:"files"`
	Objects int64 `json:"objects"`
	Bytes   int64 `json:"bytes"`
}

// Verify rechecks every file of a backup against its manifest: present, same size, same sha256,
// same number of objects. Every problem is reported, one per line, naming the file.
func Verify(dir string, progress func(done, total int64)) (VerifyResult, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return VerifyResult{}, err
	}
	var res VerifyResult
	var problems []string
	for _, r := range m.Resources {
		for _, f := range r.Files {
			n, lines, sum, err := hashFile(dir, f.Path)
			switch {
			case err != nil:
				problems = append(problems, fmt.Sprintf("%s: %v", f.Path, err))
			case n != f.Bytes:
				problems = append(problems, fmt.Sprintf("%s: %d bytes, the manifest says %d", f.Path, n, f.Bytes))
			case sum != f.SHA256:
				problems = append(problems, fmt.Sprintf("%s: sha256 %s, the manifest says %s", f.Path, sum, f.SHA256))
			case lines != f.Count:
				problems = append(problems, fmt.Sprintf("%s: %d objects, the manifest says %d", f.Path, lines, f.Count))
			}
			res.Files++
			res.Objects += f.Count
			res.Bytes += f.Bytes
			if progress != nil {
				progress(res.Bytes, m.Bytes)
			}
		}
	}
	if len(problems) > 0 {
		return res, fmt.Errorf("backup %s is damaged (%d problems): %s", dir, len(problems), strings.Join(problems, "; "))
	}
	return res, nil
}

func hashFile(dir, rel string) (n, lines int64, sum string, err error) {
	f, err := openEntry(dir, rel)
	if err != nil {
		return 0, 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for {
		k, rerr := f.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			n += int64(k)
			for _, b := range buf[:k] {
				if b == '\n' {
					lines++
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return n, lines, "", rerr
		}
	}
	return n, lines, hex.EncodeToString(h.Sum(nil)), nil
}
