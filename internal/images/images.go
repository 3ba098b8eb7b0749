// Package images builds the container images of planrun's local test clusters as tarballs for
// `ctr -n k8s.io images import`: nothing can be pulled here, so every image is made from files
// on this machine. The work is done by the command in hack/images, a module of its own so that
// ko's and go-containerregistry's dependencies stay out of planrun's go.mod; Build runs it.
package images

import "strings"

// The names Build takes, one per image.
const (
	Busybox = "busybox"
	Pause   = "pause"
	Planrun = "planrun"
)

// The references the tarballs import as. Build(Planrun) also tags the planrun image with
// `git describe --always --dirty` of the checkout.
const (
	// BusyboxImage is Debian's static busybox with a symlink per applet, /tmp, and root and
	// nobody in /etc/passwd; its default command is sh.
	BusyboxImage = "planrun.local/busybox:1.35"
	// PauseImage is the pod sandbox image, the sandbox_image of a test node's containerd.
	PauseImage = "planrun.local/pause:3.10"
	// PlanrunImage runs planrun as uid 65532; the entrypoint is the planrun binary.
	PlanrunImage = "planrun.local/planrun:latest"
)

// PlanrunImageFor is the planrun image built from the same checkout as a planrun binary whose
// version the linker set (make build and make image stamp the same `git describe`): tagged with
// that version, so that a binary and its image agree. A binary without a linker-set version (go
// test, go run, a plain go build) gets PlanrunImage.
func PlanrunImageFor(version string) string {
	if version == "" {
		return PlanrunImage
	}
	return strings.TrimSuffix(PlanrunImage, ":latest") + ":" + version
}
