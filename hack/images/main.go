// Command images builds the container images of planrun's local test clusters as tarballs that
// `ctr -n k8s.io images import FILE` loads into a node's containerd. Nothing is pulled: there is
// no registry to pull from here, so every image is made from files on this machine.
//
//	go -C hack/images run . -out DIR [busybox|pause|planrun ...]   (default: all three)
//
// writes DIR/NAME.tar for each image and prints its path on stdout; progress and errors go to
// stderr. The images:
//
//	busybox  planrun.local/busybox:1.35  /bin/busybox (Debian's busybox-static) and its applets
//	pause    planrun.local/pause:3.10    the pod sandbox: a small Go program (pause/)
//	planrun  planrun.local/planrun:VERSION and :latest, built with ko as a library
//
// This is its own module so that ko's and go-containerregistry's dependencies stay out of
// planrun's go.mod.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// builder makes one image tarball at path (see output.go for the cache and the atomic write).
type builder func(ctx context.Context, j *job, path string) error

// builders in the order they are built when none is named.
var builders = []struct {
	name  string
	build builder
}{
	{"busybox", buildBusybox},
	{"pause", buildPause},
	{"planrun", buildPlanrun},
}

// logf reports progress on stderr. ko reports its steps through the standard logger, which main
// sets to say "images: ko: ".
var logf = log.New(os.Stderr, "images: ", 0).Printf

func main() {
	log.SetFlags(0)
	log.SetPrefix("images: ko: ")
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	out := fs.String("out", "", "folder for the NAME.tar files (created if missing)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go -C hack/images run . -out DIR [busybox|pause|planrun ...]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		fs.Usage()
		return flag.ErrHelp
	}
	names := fs.Args()
	if len(names) == 0 {
		for _, b := range builders {
			names = append(names, b.name)
		}
	}
	var todo []string
	for _, name := range names {
		if lookup(name) == nil {
			return fmt.Errorf("unknown image %q (known: busybox, pause, planrun)", name)
		}
		if !slices.Contains(todo, name) {
			todo = append(todo, name)
		}
	}
	dir, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("output folder: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	j, err := newJob()
	if err != nil {
		return err
	}
	for _, name := range todo {
		path := filepath.Join(dir, name+".tar")
		start := time.Now()
		if err := lookup(name)(ctx, j, path); err != nil {
			return err
		}
		logf("%s: %s (%.1fs)", name, path, time.Since(start).Seconds())
		fmt.Println(path)
	}
	return nil
}

func lookup(name string) builder {
	for _, b := range builders {
		if b.name == name {
			return b.build
		}
	}
	return nil
}

// job is what every builder shares.
type job struct {
	// imagesDir is this module's folder (for go build ./pause); repoDir is planrun's.
	imagesDir, repoDir string
	// self is the sha256 of this program's source, part of every cache key (sources.go).
	self string
}

func newJob() (*job, error) {
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	imagesDir, err := findModule(wd, "planrun.dev/build/images")
	if err != nil {
		return nil, fmt.Errorf("run this from hack/images (go -C hack/images run .): %w", err)
	}
	repoDir, err := findModule(filepath.Dir(imagesDir), "planrun.dev/planrun")
	if err != nil {
		return nil, err
	}
	self, err := sourcesDigest()
	if err != nil {
		return nil, fmt.Errorf("hashing this program's source for the cache key: %w", err)
	}
	return &job{imagesDir: imagesDir, repoDir: repoDir, self: self}, nil
}

// errorf prefixes an error with the image it is about, as in "busybox image: ...".
func errorf(image, format string, args ...any) error {
	return fmt.Errorf("%s image: %s", image, strings.TrimSpace(fmt.Sprintf(format, args...)))
}
