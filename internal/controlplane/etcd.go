package controlplane

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"planrun.dev/planrun/internal/childproc"
)

// Timeouts for each process. envtest's 20 s start default is tight when several test packages
// start control planes on a loaded CI machine; a healthy start takes a few seconds.
const (
	startTimeout = 60 * time.Second
	stopTimeout  = 20 * time.Second
)

// Etcd is a running etcd. Start runs one per control plane by itself; StartEtcd runs one that
// outlives or is shared by API servers (see Options.EtcdURL).
type Etcd struct {
	// URL is the client URL, e.g. "http://127.0.0.1:34567".
	URL string

	etcd     *envtest.Etcd
	dir      string
	stopOnce sync.Once
	stopErr  error
}

// StartEtcd starts an etcd with its data in a fresh temporary folder. binaryDir holds the etcd
// binary; empty means FindBinaries. output, if not nil, receives etcd's output.
func StartEtcd(ctx context.Context, binaryDir string, output io.Writer) (*Etcd, error) {
	if binaryDir == "" {
		var err error
		if binaryDir, err = FindBinaries(ctx); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "planrun-etcd-")
	if err != nil {
		return nil, fmt.Errorf("creating a folder for etcd: %w", err)
	}
	e, err := startEtcd(binaryDir, dir, output)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	e.dir = dir
	return e, nil
}

// startEtcd starts etcd with its data in dataDir, which the caller owns.
func startEtcd(binaryDir, dataDir string, output io.Writer) (*Etcd, error) {
	// etcd refuses a data folder that others can read.
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating etcd data folder: %w", err)
	}
	for attempt := 1; ; attempt++ {
		out := &childproc.Tail{}
		e := &envtest.Etcd{
			Path:         filepath.Join(binaryDir, "etcd"),
			DataDir:      dataDir,
			StartTimeout: startTimeout,
			StopTimeout:  stopTimeout,
			Out:          processOutput(out, output),
			Err:          processOutput(out, output),
		}
		err := e.Start()
		if err == nil {
			return &Etcd{URL: e.URL.String(), etcd: e}, nil
		}
		_ = e.Stop() // a timed-out start leaves the process running
		// envtest picks free ports and etcd binds them a moment later: another process (a test
		// running beside) may take one in between. etcd fails on its listeners before it touches
		// the data folder, so it is tried again with fresh ports, a few times.
		if attempt < 3 && strings.Contains(out.String(), "address already in use") {
			continue
		}
		return nil, childproc.WithTail(fmt.Errorf("starting etcd %s in %s: %w", e.Path, dataDir, err), "etcd", out)
	}
}

// Stop stops etcd and removes its data (unless the data folder belongs to a ControlPlane, which
// removes it itself). It is safe to call more than once.
func (e *Etcd) Stop() error {
	e.stopOnce.Do(func() {
		if err := e.etcd.Stop(); err != nil {
			e.stopErr = fmt.Errorf("stopping etcd at %s: %w", e.URL, err)
		}
		if e.dir != "" {
			if err := os.RemoveAll(e.dir); err != nil && e.stopErr == nil {
				e.stopErr = fmt.Errorf("removing etcd data folder: %w", err)
			}
		}
	})
	return e.stopErr
}
