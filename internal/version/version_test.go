package version

import (
	"runtime/debug"
	"testing"
)

func TestGetFallsBackToBuildInfo(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	vcs := func(modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	cases := []struct {
		name            string
		version, commit string
		bi              *debug.BuildInfo
		want            Info
	}{
		{"linker wins over build info", "v1.2.3-4-gabcdef0-dirty", "abc",
			&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v9.9.9"}, Settings: vcs("false")},
			Info{Version: "v1.2.3-4-gabcdef0-dirty", Commit: "abc", GoVersion: "go1.26.8"}},
		{"go install @version", "", "",
			&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.0.0"}},
			Info{Version: "v1.0.0", Commit: Unknown, GoVersion: "go1.26.8"}},
		{"checkout with vcs stamping, clean", "", "",
			&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs("false")},
			Info{Version: "0123456", Commit: rev, GoVersion: "go1.26.8"}},
		{"checkout with vcs stamping, dirty", "", "",
			&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs("true")},
			Info{Version: "0123456-dirty", Commit: rev, GoVersion: "go1.26.8"}},
		{"-buildvcs=false", "", "",
			&debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			Info{Version: Unknown, Commit: Unknown, GoVersion: "go1.26.8"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := get(tc.version, tc.commit, tc.bi); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}

	if got := get("", "", nil); got.Version != Unknown || got.Commit != Unknown || got.GoVersion == "" {
		t.Errorf("no build info: %+v", got)
	}
}
