package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/ko/pkg/build"
	"github.com/google/ko/pkg/publish"
)

const (
	planrunRepo    = "planrun.local" // + "/planrun", the last element of the import path
	planrunPackage = "planrun.dev/planrun/cmd/planrun"
	versionPackage = "planrun.dev/planrun/internal/version"
	// planrunBaseRef names the base only in the image's annotations: nothing is pulled.
	planrunBaseRef = "planrun.local/planrun-base:nonroot"
	caBundle       = "/etc/ssl/certs/ca-certificates.crt"
	nonroot        = 65532 // distroless's nonroot user, which kubelet's runAsNonRoot accepts
)

// buildPlanrun builds cmd/planrun into an image with ko used as a library: ko's CLI knows base
// images only from registries and the docker daemon, neither of which exists here, whereas its
// build package takes the base from a function (build.WithBaseImages) that returns the one made
// by planrunBase. ko puts the binary at /ko-app/planrun and makes it the entrypoint.
//
// No cache: planrun's sources change all the time, and `git describe --dirty` does not tell one
// uncommitted change from the next. ko runs go build, whose cache makes an unchanged rebuild
// take seconds, and fixed times (epoch) make it the same image, digest included.
func buildPlanrun(ctx context.Context, j *job, out string) error {
	version, err := git(ctx, j.repoDir, "describe", "--always", "--dirty")
	if err != nil {
		return errorf("planrun", "%v", err)
	}
	commit, err := git(ctx, j.repoDir, "rev-parse", "HEAD")
	if err != nil {
		return errorf("planrun", "%v", err)
	}
	base, err := planrunBase()
	if err != nil {
		return errorf("planrun", "%v", err)
	}
	baseRef, err := name.ParseReference(planrunBaseRef)
	if err != nil {
		return errorf("planrun", "%v", err)
	}

	builder, err := build.NewGo(ctx, j.repoDir,
		build.WithBaseImages(func(context.Context, string) (name.Reference, build.Result, error) {
			return baseRef, base, nil
		}),
		build.WithPlatforms("linux/"+runtime.GOARCH),
		build.WithConfig(map[string]build.Config{planrunPackage: {
			// Static, so that it runs on a base without libc, whatever CGO_ENABLED the caller set.
			Env: []string{"CGO_ENABLED=0"},
			// ko runs these through text/template; git describe output has no braces.
			Ldflags: []string{"-s", "-w",
				"-X", versionPackage + ".Version=" + version,
				"-X", versionPackage + ".Commit=" + commit},
		}}),
		build.WithTrimpath(true),
		build.WithCreationTime(v1.Time{Time: epoch}),
		build.WithKoDataCreationTime(v1.Time{Time: epoch}),
		build.WithLabel("org.opencontainers.image.version", version),
		build.WithLabel("org.opencontainers.image.revision", commit),
		// An SBOM is attached for registries to serve; a tarball has nowhere to put it.
		build.WithDisabledSBOM(),
	)
	if err != nil {
		return errorf("planrun", "ko: %v", err)
	}
	result, err := builder.Build(ctx, planrunPackage)
	if err != nil {
		return errorf("planrun", "ko build: %v", err)
	}
	namer := func(base, importpath string) string { return base + "/" + path.Base(importpath) }
	err = atomicWrite(out, func(tmp string) error {
		p := publish.NewTarball(tmp, planrunRepo, namer, []string{version, "latest"})
		if _, err := p.Publish(ctx, result, planrunPackage); err != nil {
			return err
		}
		return p.Close()
	})
	if err != nil {
		return errorf("planrun", "writing %s: %v", out, err)
	}
	return nil
}

// planrunBase is the base of the planrun image: no shell, no libc, only what a Go client of
// Kubernetes reads from the file system: /etc/passwd and /etc/group with root, nonroot (65532) and
// nobody; the host's CA bundle, for TLS to API servers with public certificates; /tmp (1777); and
// /home/nonroot, the working folder, so that the default state folder (.planrun/runs) is writable.
// It runs as nonroot, so pods with runAsNonRoot: true accept it.
func planrunBase() (v1.Image, error) {
	ca, err := os.ReadFile(caBundle)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s not found: install Debian's ca-certificates", caBundle)
	}
	if err != nil {
		return nil, err
	}
	t := tree{}
	t.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\n"+
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"))
	t.file("etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\nnobody:x:65534:\n"))
	t.file(strings.TrimPrefix(caBundle, "/"), 0o644, ca)
	t.dir("tmp", 0o1777, 0, 0)
	t.dir("home/nonroot", 0o700, nonroot, nonroot)
	l, err := t.layer()
	if err != nil {
		return nil, err
	}
	return newImage(l, "hack/images: planrun base (passwd, group, CA bundle, /tmp, /home/nonroot)", v1.Config{
		User:       fmt.Sprintf("%d:%d", nonroot, nonroot),
		WorkingDir: "/home/nonroot",
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/home/nonroot"},
	})
}

// git runs git in dir and returns its output, trimmed.
func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", &cmdError{cmd: "git " + strings.Join(args, " "), err: err, stderr: strings.TrimSpace(stderr.String())}
	}
	return strings.TrimSpace(string(out)), nil
}
