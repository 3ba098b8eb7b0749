package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
)

// TestResumeWaitsForTheLock: with LockWait, resume waits for a lock a live runner holds and runs
// once it is released; without it, or when the lock stays held past it, resume fails with the
// holder's LockedError and runs nothing.
func TestResumeWaitsForTheLock(t *testing.T) {
	for _, tc := range []struct {
		name      string
		wait      time.Duration
		releaseIn time.Duration // 0: never
		wantRun   bool
	}{
		{"no wait", 0, 500 * time.Millisecond, false},
		{"released while waiting", time.Minute, 1500 * time.Millisecond, true},
		{"held past the wait", 1500 * time.Millisecond, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			body := "steps:\n  - {id: a, type: test.op}\n"
			p := load(t, writePlan(t, f.dir, body), engine.ParamValues{})
			if _, err := f.runner.Submit(context.Background(), p, engine.ApplyOptions{RunID: "run-1"}); err != nil {
				t.Fatal(err)
			}
			held, err := f.store.Lock(context.Background(), "run-1", engine.LockOptions{})
			if err != nil {
				t.Fatal(err)
			}
			released := make(chan struct{})
			if tc.releaseIn > 0 {
				time.AfterFunc(tc.releaseIn, func() { held.Release(); close(released) })
			} else {
				t.Cleanup(func() { held.Release() })
			}
			f.runner.LockWait = tc.wait
			j, err := f.runner.Resume(context.Background(), "run-1", f.reload(body))
			var le *engine.LockedError
			switch {
			case tc.wantRun && err != nil:
				t.Fatalf("resume: %v", err)
			case tc.wantRun && j.Status != engine.RunSucceeded:
				t.Fatalf("run %s, want succeeded", j.Status)
			case !tc.wantRun && !errors.As(err, &le):
				t.Fatalf("resume: %v, want a LockedError", err)
			}
			if got := ran(); tc.wantRun != equal(got, []string{"a"}) {
				t.Errorf("ran %v", got)
			}
			if tc.releaseIn > 0 {
				<-released
			}
		})
	}
}
