package controlplane

import (
	"errors"
	"os"
	"sync"
	"testing"
)

// SkipEnv, set to "1", makes the test helpers skip instead of starting a control plane. It is the
// only way to skip: a control plane that fails to start fails the test, so that CI never passes
// by silently testing nothing.
const SkipEnv = "PLANRUN_SKIP_CONTROLPLANE"

// StartForTest starts a control plane that is stopped when the test ends, or fails the test.
func StartForTest(t testing.TB, opts ...Option) *ControlPlane {
	t.Helper()
	return StartManyForTest(t, 1, opts...)[0]
}

// StartManyForTest starts n independent control planes in parallel (each with its own etcd
// unless WithEtcdURL is given), stopped when the test ends, or fails the test.
func StartManyForTest(t testing.TB, n int, opts ...Option) []*ControlPlane {
	t.Helper()
	skipIfAsked(t)
	var o Options
	for _, opt := range opts {
		opt(&o)
	}
	if n < 1 {
		t.Fatalf("controlplane: asked for %d control planes", n)
	}
	if n > 1 && o.KubeconfigPath != "" {
		t.Fatalf("controlplane: %d control planes cannot share the kubeconfig path %s", n, o.KubeconfigPath)
	}
	if o.BinaryDir == "" {
		// Once for all n, so that a cold cache is not built by n scripts at the same time.
		dir, err := FindBinaries(t.Context())
		if err != nil {
			t.Fatalf("controlplane: %v", err)
		}
		o.BinaryDir = dir
	}

	cps := make([]*ControlPlane, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { cps[i], errs[i] = Start(t.Context(), o) })
	}
	wg.Wait()
	for _, cp := range cps {
		if cp != nil {
			// A Ctrl-C would otherwise end the test binary before any cleanup runs.
			StopOnInterrupt(cp)
			t.Cleanup(func() {
				if err := cp.Stop(); err != nil {
					t.Errorf("controlplane: %v", err)
				}
			})
		}
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("controlplane: starting %d control plane(s): %v", n, err)
	}
	return cps
}

// StartEtcdForTest starts a standalone etcd (see StartEtcd) that is stopped when the test ends, or
// fails the test. Cleanups run last-registered first, so API servers started on it later in the
// test are stopped before it.
func StartEtcdForTest(t testing.TB) *Etcd {
	t.Helper()
	skipIfAsked(t)
	e, err := StartEtcd(t.Context(), "", nil)
	if err != nil {
		t.Fatalf("controlplane: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Errorf("controlplane: %v", err)
		}
	})
	return e
}

func skipIfAsked(t testing.TB) {
	t.Helper()
	if os.Getenv(SkipEnv) == "1" {
		t.Skipf("%s=1: not starting a control plane", SkipEnv)
	}
}
