package main

import (
	"context"
	"errors"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"planrun.dev/planrun/engine"
)

// TestRunnerExitCodes: a runner pod ends with a code that fails its Job at once when another pod
// would fail the same way (the run ended, a bad argument, a missing permission), and with 75,
// which the Job retries, when the next try may go through.
func TestRunnerExitCodes(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Group: "planrun.dev", Resource: "planruns"}, "r", errors.New("no"))
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, exitOK},
		{"the run failed", &engine.RunError{RunID: "r", Status: engine.RunRolledBack, Err: errors.New("boom")}, exitRunFailed},
		{"a rollback failed", &engine.RunError{RunID: "r", Status: engine.RunRollbackFailed, Err: errors.New("boom")}, exitRollbackFailed},
		{"a bad argument", usagef("runner takes one run id"), exitUsage},
		{"a missing permission, wrapped", fmt.Errorf("reading PlanRun r: %w", forbidden), exitRunFailed},
		{"no such run", fmt.Errorf("%w: r", engine.ErrRunNotFound), exitRunFailed},
		{"the API server unavailable", apierrors.NewServiceUnavailable("etcd"), exitTempFail},
		{"a lock not yet expired", &engine.LockedError{RunID: "r"}, exitTempFail},
		{"interrupted", fmt.Errorf("%w: SIGTERM", engine.ErrInterrupted), exitInterrupted},
		{"a timeout", context.DeadlineExceeded, exitTempFail},
	} {
		if got := exitCode(retryable(tc.err)); got != tc.want {
			t.Errorf("%s: exit %d, want %d", tc.name, got, tc.want)
		}
	}
}
