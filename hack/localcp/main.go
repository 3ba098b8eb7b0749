// Command localcp runs one local Kubernetes cluster (kube-apiserver and etcd; with --node also
// the controllers, the scheduler and a node that runs pods; see internal/controlplane) for
// `make demo`: it writes an admin kubeconfig, reports
//
//	control plane ready: kubeconfig=PATH server=URL
//
// on stderr, and runs until SIGINT or SIGTERM, when it stops both processes. On Linux it also
// stops when its parent (such as `go run`) dies.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"planrun.dev/planrun/internal/controlplane"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(logger, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2) // the usage has been printed already
		}
		logger.Error("localcp failed", "err", err)
		os.Exit(1)
	}
}

func run(logger *slog.Logger, args []string) error {
	// A flag set of our own: controller-runtime registers --kubeconfig on the global one, which
	// would show up in our usage and mean nothing here.
	flags := flag.NewFlagSet("localcp", flag.ContinueOnError)
	kubeconfigOut := flags.String("kubeconfig-out", "", "write the admin kubeconfig to this `path` (required)")
	contextName := flags.String("context", controlplane.DefaultContextName, "`name` of the kubeconfig context")
	node := flags.Bool("node", false, "also run the controllers, the scheduler and a node (needs root and hack/install-node-deps.sh)")
	if err := flags.Parse(args); err != nil {
		return flag.ErrHelp // the flag set has printed the problem and the usage
	}
	if *kubeconfigOut == "" || flags.NArg() > 0 {
		flags.Usage()
		return flag.ErrHelp
	}
	// Absolute, so that the reported path works from any folder.
	kubeconfig, err := filepath.Abs(*kubeconfigOut)
	if err != nil {
		return fmt.Errorf("--kubeconfig-out %s: %w", *kubeconfigOut, err)
	}

	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	if err := stopWithParent(); err != nil {
		return err
	}

	started := time.Now()
	cp, err := controlplane.Start(ctx, controlplane.Options{KubeconfigPath: kubeconfig, ContextName: *contextName, Node: *node})
	if err != nil {
		return err
	}
	logger.Info("control plane started", "elapsed", time.Since(started).Round(time.Millisecond), "etcd", cp.EtcdURL, "node", *node)
	fmt.Fprintf(os.Stderr, "control plane ready: kubeconfig=%s server=%s\n", cp.Kubeconfig, cp.Config.Host)

	<-ctx.Done()
	// Further signals stay caught and ignored until we return: dying halfway would leave
	// kube-apiserver or etcd running, and the parent-death signal can arrive several times.
	// Stop is bounded anyway: a process that ignores SIGTERM is killed after a timeout.
	logger.Info("stopping control plane", "signal", context.Cause(ctx))
	if err := cp.Stop(); err != nil {
		return err
	}
	logger.Info("control plane stopped")
	return nil
}
