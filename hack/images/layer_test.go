package main

import (
	"archive/tar"
	"io"
	"testing"
)

// TestTreeLayer checks what ctr and runc rely on: every folder comes before what it holds, modes
// (the sticky bit of /tmp included) and owners are as given, and the same tree gives the same
// digest however the map iterates.
func TestTreeLayer(t *testing.T) {
	build := func() tree {
		tr := tree{}
		tr.file("usr/bin/tool", 0o755, []byte("#!/bin/sh\n"))
		tr.symlink("bin/sh", "/usr/bin/tool")
		tr.dir("tmp", 0o1777, 0, 0)
		tr.dir("home/nonroot", 0o700, 65532, 65532)
		return tr
	}
	l1, err := build().layer()
	if err != nil {
		t.Fatal(err)
	}
	l2, err := build().layer()
	if err != nil {
		t.Fatal(err)
	}
	d1, _ := l1.Digest()
	d2, _ := l2.Digest()
	if d1 != d2 {
		t.Errorf("same tree, two digests: %s, %s", d1, d2)
	}

	rc, err := l1.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got []string
	hdrs := map[string]*tar.Header{}
	r := tar.NewReader(rc)
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h.Name)
		hdrs[h.Name] = h
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s: time %v, want %v", h.Name, h.ModTime, epoch)
		}
	}
	want := []string{"bin/", "bin/sh", "home/", "home/nonroot/", "tmp/", "usr/", "usr/bin/", "usr/bin/tool"}
	if len(got) != len(want) {
		t.Fatalf("entries %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("entries %q, want %q", got, want)
		}
	}
	if h := hdrs["tmp/"]; h.Mode != 0o1777 {
		t.Errorf("tmp/: mode %o, want 1777", h.Mode)
	}
	if h := hdrs["home/nonroot/"]; h.Uid != 65532 || h.Gid != 65532 || h.Mode != 0o700 {
		t.Errorf("home/nonroot/: %d:%d %o, want 65532:65532 700", h.Uid, h.Gid, h.Mode)
	}
	if h := hdrs["bin/sh"]; h.Typeflag != tar.TypeSymlink || h.Linkname != "/usr/bin/tool" {
		t.Errorf("bin/sh: type %c -> %q", h.Typeflag, h.Linkname)
	}
}
