package s3test

import (
	"os"
	"testing"

	"planrun.dev/planrun/internal/childproc"
)

// skipEnv is the control plane's switch (controlplane.SkipEnv), read here too so that `make
// unit` skips the S3 tests as well: set to "1" with no $PLANRUN_S3_SERVER, the test helpers skip.
// It is the only way to skip: a missing binary or a server that fails to start fails the test,
// so that CI never passes by silently testing nothing. (Not imported, to keep the control plane
// and its dependencies out of object-storage tests.)
const skipEnv = "PLANRUN_SKIP_CONTROLPLANE"

// StartForTest starts a server (with opts, at most one) that is stopped when the test ends, or
// fails the test. When the test failed, the end of the server's output is logged first.
func StartForTest(t testing.TB, opts ...Options) *Server {
	t.Helper()
	if os.Getenv(skipEnv) == "1" && os.Getenv(BinaryEnv) == "" {
		t.Skipf("%s=1 and no $%s: not starting an S3 server", skipEnv, BinaryEnv)
	}
	var o Options
	switch len(opts) {
	case 0:
	case 1:
		o = opts[0]
	default:
		t.Fatalf("s3test: StartForTest takes at most one Options, got %d", len(opts))
	}
	s, err := Start(o)
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("s3test: end of the output of versitygw on %s (%s):\n%s", s.Endpoint, s.LogPath, childproc.FileTail(s.LogPath))
		}
		if err := s.Stop(); err != nil {
			t.Errorf("s3test: %v", err)
		}
	})
	return s
}
