// Command pause is the pod sandbox process of planrun's local test nodes (the image
// planrun.local/pause:3.10): it holds the pod's namespaces open by staying alive, exits 0 on
// SIGTERM or SIGINT, and reaps the zombies it inherits as pid 1 of a pod that shares its process
// namespace (shareProcessNamespace: true), as the upstream pause program does.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			fmt.Fprintf(os.Stderr, "pause: %v: shutting down\n", sig)
			os.Exit(0)
		}
		// One SIGCHLD may stand for several exits: collect every child that has exited.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if err == syscall.EINTR {
				continue
			}
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
