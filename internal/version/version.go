// Package version says which planrun a binary is. Builds from this repository set Version and
// Commit with the linker, as make build and the planrun image (hack/images) do:
//
//	go build -ldflags "-X planrun.dev/planrun/internal/version.Version=$(git describe --always --dirty) \
//	  -X planrun.dev/planrun/internal/version.Commit=$(git rev-parse HEAD)" ./cmd/planrun
//
// Other builds fall back to what the Go toolchain stamped into the binary (runtime/debug): the
// module version of `go install planrun.dev/planrun/cmd/planrun@vX.Y.Z`, and the git revision when
// the build ran in a checkout with VCS stamping on (-buildvcs).
package version

import (
	"runtime"
	"runtime/debug"
)

// Set with -ldflags -X; empty means "ask the build info".
var (
	Version string
	Commit  string
)

// Unknown stands in for a field that neither the linker nor the build info filled.
const Unknown = "unknown"

// Info is what `planrun version` prints; the JSON names follow `kubectl version -o json`.
type Info struct {
	Version   string `json:"version"`
	GoVersion string `json:"goVersion"`
	Commit    string `json:"commit"`
}

// Get returns this binary's version information.
func Get() Info {
	bi, _ := debug.ReadBuildInfo()
	return get(Version, Commit, bi)
}

// get fills what the linker left empty from bi (which may be nil: a binary built without module
// support has no build info).
func get(version, commit string, bi *debug.BuildInfo) Info {
	info := Info{Version: version, Commit: commit, GoVersion: runtime.Version()}
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		var revision, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if info.Commit == "" {
			info.Commit = revision
		}
		if info.Version == "" {
			switch {
			case bi.Main.Version != "" && bi.Main.Version != "(devel)":
				// `go install ...@vX.Y.Z`, or a VCS-stamped pseudo-version (Go 1.24+).
				info.Version = bi.Main.Version
			case revision != "":
				// Short like git describe --always, so that both kinds of build read alike.
				info.Version = revision[:min(len(revision), 7)]
				if modified == "true" {
					info.Version += "-dirty"
				}
			}
		}
	}
	if info.Version == "" {
		info.Version = Unknown
	}
	if info.Commit == "" {
		info.Commit = Unknown
	}
	return info
}
