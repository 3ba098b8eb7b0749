package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"planrun.dev/planrun/internal/childproc"
)

// StartEtcdCluster starts an etcd cluster of n members on loopback (plain http), each with its
// own data folder, and returns them in member order (names m0, m1...). The members start
// together: none is healthy before a quorum is up. binaryDir empty means FindBinaries.
func StartEtcdCluster(ctx context.Context, binaryDir string, n int, output io.Writer) ([]*Etcd, error) {
	if binaryDir == "" {
		var err error
		if binaryDir, err = FindBinaries(ctx); err != nil {
			return nil, err
		}
	}
	type member struct {
		name         string
		client, peer string
		dir          string
		out          *childproc.Tail
		etcd         *envtest.Etcd
		started      bool
	}
	members := make([]*member, n)
	var initial []string
	for i := range members {
		cport, err := freePort()
		if err != nil {
			return nil, err
		}
		pport, err := freePort()
		if err != nil {
			return nil, err
		}
		dir, err := os.MkdirTemp("", "planrun-etcd-member-")
		if err != nil {
			return nil, fmt.Errorf("creating a folder for etcd: %w", err)
		}
		m := &member{name: fmt.Sprintf("m%d", i), client: fmt.Sprintf("http://127.0.0.1:%d", cport), peer: fmt.Sprintf("http://127.0.0.1:%d", pport), dir: dir, out: &childproc.Tail{}}
		members[i] = m
		initial = append(initial, m.name+"="+m.peer)
	}
	stopAll := func() {
		for _, m := range members {
			if m.etcd != nil {
				_ = m.etcd.Stop()
			}
			_ = os.RemoveAll(m.dir)
		}
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, m := range members {
		u, _ := url.Parse(m.client)
		m.etcd = &envtest.Etcd{
			URL:          u,
			Path:         filepath.Join(binaryDir, "etcd"),
			DataDir:      filepath.Join(m.dir, "data"),
			StartTimeout: startTimeout,
			StopTimeout:  stopTimeout,
			Out:          processOutput(m.out, output),
			Err:          processOutput(m.out, output),
		}
		if err := os.MkdirAll(m.etcd.DataDir, 0o700); err != nil {
			stopAll()
			return nil, fmt.Errorf("creating etcd data folder: %w", err)
		}
		args := m.etcd.Configure()
		args.Set("name", m.name)
		args.Set("listen-peer-urls", m.peer)
		args.Set("initial-advertise-peer-urls", m.peer)
		args.Set("initial-cluster", strings.Join(initial, ","))
		args.Set("initial-cluster-state", "new")
		args.Set("initial-cluster-token", "planrun-test")
		wg.Go(func() {
			if err := m.etcd.Start(); err != nil {
				errs[i] = childproc.WithTail(fmt.Errorf("starting etcd member %s in %s: %w", m.name, m.dir, err), "etcd "+m.name, m.out)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		stopAll()
		return nil, err
	}
	out := make([]*Etcd, n)
	for i, m := range members {
		out[i] = &Etcd{URL: m.client, etcd: m.etcd, dir: m.dir}
	}
	return out, nil
}

// StartEtcdClusterForTest starts an etcd cluster of n members (see StartEtcdCluster), stopped
// when the test ends, or fails the test.
func StartEtcdClusterForTest(t testing.TB, n int) []*Etcd {
	t.Helper()
	skipIfAsked(t)
	members, err := StartEtcdCluster(t.Context(), "", n, nil)
	if err != nil {
		t.Fatalf("controlplane: %v", err)
	}
	t.Cleanup(func() {
		for _, m := range members {
			if err := m.Stop(); err != nil {
				t.Errorf("controlplane: %v", err)
			}
		}
	})
	return members
}
