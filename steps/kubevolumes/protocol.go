package kubevolumes

import (
	"context"
	"fmt"
	"time"

	"planrun.dev/planrun/steps/mover"
)

// The mover's side of the contract is steps/mover's: `planrun mover backup|restore|verify`
// prints mover.Events as JSON lines on stdout, and writes its last one (a result, or the
// failure) to /dev/termination-log.

// isResult reports whether ev is a result (of any phase).
func isResult(ev mover.Event) bool {
	switch ev.(type) {
	case *mover.BackupResult, *mover.RestoreResult, *mover.VerifyResult:
		return true
	}
	return false
}

// runMover runs a mover pod to its end (runner.runPod) and returns its result, which must be
// an R: the result of the pod's role.
func runMover[R mover.Event](ctx context.Context, r *runner, p *moverPod, deadline time.Time) (R, error) {
	var zero R
	ev, err := r.runPod(ctx, p, deadline)
	if err != nil {
		return zero, err
	}
	res, ok := ev.(R)
	if !ok {
		return zero, fmt.Errorf("mover pod %s/%s on %s gave %T as its result, not the result of a %s", p.namespace, p.name, p.cl, ev, p.role)
	}
	return res, nil
}
