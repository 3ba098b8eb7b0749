package controlplane

import (
	"io"

	"planrun.dev/planrun/internal/childproc"
)

// The programs of a complete cluster that are not envtest's (kube-controller-manager,
// kube-scheduler, containerd, the kubelet) run through childproc.Start. envtest runs only
// kube-apiserver and etcd, and keeps no log; these programs fail in ways worth reading
// afterwards, so their output goes to a log file in the cluster's folder as well as to a tail
// quoted in errors.

// processOutput returns the writer for the output of a process that envtest runs: the tail, plus
// extra when set. envtest drops process output by default, which turns a bad flag into a bare
// "timeout waiting for process"; the tail, quoted in the start error, says why.
func processOutput(t *childproc.Tail, extra io.Writer) io.Writer {
	if extra == nil {
		return t
	}
	return io.MultiWriter(t, extra)
}
