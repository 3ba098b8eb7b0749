package controlplane

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Running control planes are stopped on SIGINT and SIGTERM before the process ends. Without
// this, a Ctrl-C during `go test` kills the test binary at once: kube-apiserver and etcd would
// keep running, and a node's pods, mounts and bridge would stay behind.
var running = struct {
	sync.Mutex
	cps     map[*ControlPlane]struct{}
	watched bool
}{cps: map[*ControlPlane]struct{}{}}

// StopOnInterrupt makes a SIGINT or SIGTERM stop cp (and every other control plane registered
// so) before the process dies of the signal. Test helpers call it; a program with its own signal
// handling (hack/localcp) stops its control planes itself instead.
func StopOnInterrupt(cp *ControlPlane) {
	running.Lock()
	defer running.Unlock()
	running.cps[cp] = struct{}{}
	if running.watched {
		return
	}
	running.watched = true
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-signals
		stopAllRunning()
		// Then die of the signal as if no handler had been installed, so the exit status
		// tells the caller what happened.
		signal.Reset(sig)
		if p, err := os.FindProcess(os.Getpid()); err == nil {
			_ = p.Signal(sig)
		}
	}()
}

// forget drops a stopped control plane from those StopOnInterrupt stops.
func forget(cp *ControlPlane) {
	running.Lock()
	defer running.Unlock()
	delete(running.cps, cp)
}

// stopAllRunning stops every tracked control plane, in parallel.
func stopAllRunning() {
	running.Lock()
	cps := make([]*ControlPlane, 0, len(running.cps))
	for cp := range running.cps {
		cps = append(cps, cp)
	}
	running.Unlock()
	var wg sync.WaitGroup
	for _, cp := range cps {
		wg.Go(func() { _ = cp.Stop() })
	}
	wg.Wait()
}
