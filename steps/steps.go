// Package steps links every step type into the binary. Each step type lives in its own package
// and registers itself with the engine from init, as Caddy modules do; importing this package
// (for its side effects) makes them all available to plans.
package steps

import (
	_ "planrun.dev/planrun/steps/assert"       // type: assert
	_ "planrun.dev/planrun/steps/etcdcopy"     // types: etcd.copy, etcd.verify
	_ "planrun.dev/planrun/steps/etcdsnapshot" // types: etcd.snapshot, etcd.restore
	_ "planrun.dev/planrun/steps/exec"         // type: exec
	_ "planrun.dev/planrun/steps/files"        // type: files.copy
	_ "planrun.dev/planrun/steps/kubeapply"    // types: kube.apply, kube.patch, kube.delete
	_ "planrun.dev/planrun/steps/kubebackup"   // types: kube.backup, kube.verifyBackup
	_ "planrun.dev/planrun/steps/kubefreeze"   // types: kube.blockWrites, kube.unblockWrites
	_ "planrun.dev/planrun/steps/kubeget"      // types: kube.get, kube.list
	_ "planrun.dev/planrun/steps/kubejob"      // type: kube.job
	_ "planrun.dev/planrun/steps/kuberestore"  // type: kube.restore
	_ "planrun.dev/planrun/steps/kubescale"    // types: kube.scale, kube.quiesce
	_ "planrun.dev/planrun/steps/kubevolumes"  // types: kube.copyVolumes, kube.verifyVolumes
	_ "planrun.dev/planrun/steps/kubewait"     // type: kube.wait
	_ "planrun.dev/planrun/steps/set"          // type: set
)
