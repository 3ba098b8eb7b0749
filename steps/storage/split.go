package storage

import (
	"fmt"
	"path"
	"path/filepath"
	"strings"
)

// SplitFile splits the location of one file (an etcd snapshot, say) into the location of the
// folder that holds it and the file's name, so that the files beside it (its manifest) are
// reached through the same Location: "/backups/etcd.db" gives "/backups" and "etcd.db",
// "s3://bucket/a/etcd.db?region=r" gives "s3://bucket/a?region=r" and "etcd.db" (a file://
// URL gives a plain path). A location that names a folder (a trailing slash, "/", a bucket
// without a key) has no file name and is refused.
func SplitFile(raw string) (dir, name string, err error) {
	t, err := parse(raw)
	if err != nil {
		return "", "", err
	}
	if t.local != "" {
		clean := filepath.Clean(t.local)
		name := filepath.Base(clean)
		if strings.HasSuffix(t.local, "/") || name == "/" || name == "." || name == ".." {
			return "", "", fmt.Errorf("%s names a folder, want a file", Redact(raw))
		}
		return filepath.Dir(clean), name, nil
	}
	if t.prefix == "" || strings.HasSuffix(t.u.Path, "/") {
		return "", "", fmt.Errorf("%s names a folder, want a file (%s://bucket/path/file)", Redact(raw), t.u.Scheme)
	}
	u := *t.u
	u.Path, u.RawPath = "", ""
	if d := path.Dir(t.prefix); d != "." {
		u.Path = "/" + d
	}
	return u.String(), path.Base(t.prefix), nil
}

// JoinFile is the location of the file name in the folder location dir, in dir's form (a path,
// or a URL with dir's options): the inverse of SplitFile. name is a single name, not a path.
func JoinFile(dir, name string) string {
	if IsLocal(dir) {
		if t, err := parse(dir); err == nil {
			dir = t.local
		}
		return filepath.Join(dir, name)
	}
	t, err := parse(dir)
	if err != nil {
		return dir + "/" + name
	}
	u := *t.u
	u.Path, u.RawPath = "/"+name, ""
	if t.prefix != "" {
		u.Path = "/" + t.prefix + "/" + name
	}
	return u.String()
}
