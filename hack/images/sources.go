package main

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
)

// sources is this program's own source. Its digest is part of every cache key (job.self): a
// change to how an image is put together must outdate the tarballs made the old way. The source,
// not the executable, is hashed because the executable differs between checkouts (go run embeds
// the checkout's path), and the key, a label in the image, would make the digest differ too.
//
//go:embed *.go pause/*.go go.mod go.sum
var sources embed.FS

// sourcesDigest hashes every embedded file's name and content, in fs.WalkDir's (sorted) order.
func sourcesDigest() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(sources, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := sources.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", path, len(data))
		h.Write(data)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), err
}
