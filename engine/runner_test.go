package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
	_ "planrun.dev/planrun/steps"
)

// op is a test step type: it records that it ran, and fails, sleeps or waits as configured.
type op struct {
	Fail      int             `yaml:"fail"`      // fail the first Fail attempts of this invocation
	Always    bool            `yaml:"always"`    // fail every attempt
	Transient bool            `yaml:"transient"` // mark failures transient
	Sleep     engine.Duration `yaml:"sleep"`
	FailIf    string          `yaml:"failIf"` // fail while this file exists
	Out       map[string]any  `yaml:"out"`
}

var journal struct {
	sync.Mutex
	ran      []string
	attempts map[string]int
}

func resetOps() {
	journal.Lock()
	defer journal.Unlock()
	journal.ran = nil
	journal.attempts = map[string]int{}
}

func ran() []string {
	journal.Lock()
	defer journal.Unlock()
	return append([]string(nil), journal.ran...)
}

func (o *op) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	journal.Lock()
	journal.ran = append(journal.ran, rc.StepID)
	journal.attempts[rc.StepID]++
	n := journal.attempts[rc.StepID]
	journal.Unlock()
	if o.Sleep > 0 {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(o.Sleep)):
		}
	}
	fail := o.Always || n <= o.Fail
	if o.FailIf != "" {
		_, err := os.Stat(o.FailIf)
		fail = err == nil
	}
	if fail {
		err := fmt.Errorf("%s failed on attempt %d", rc.StepID, n)
		if o.Transient {
			return nil, engine.Transient(err)
		}
		return nil, err
	}
	out := engine.Outputs{"attempt": n}
	for k, v := range o.Out {
		out[k] = v
	}
	return out, nil
}

func init() {
	engine.Register(engine.StepType{Name: "test.op", Doc: "test step", New: func() engine.Action { return new(op) }})
}

const header = "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: t, version: 1}\n"

func writePlan(t *testing.T, dir, body string) string {
	t.Helper()
	path := filepath.Join(dir, "plan.yaml")
	if err := os.WriteFile(path, []byte(header+body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t *testing.T, path string, params engine.ParamValues) *engine.Plan {
	t.Helper()
	p, err := engine.Load(path, engine.LoadOptions{Params: params})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return p
}

type fixture struct {
	t      *testing.T
	dir    string
	store  *engine.DirStore
	runner *engine.Runner
	events []engine.Event
	mu     sync.Mutex
}

func newFixture(t *testing.T) *fixture {
	resetOps()
	f := &fixture{t: t, dir: t.TempDir()}
	f.store = engine.NewDirStore(filepath.Join(f.dir, "runs"))
	f.runner = &engine.Runner{Store: f.store, Observer: engine.ObserverFunc(func(e engine.Event) {
		f.mu.Lock()
		f.events = append(f.events, e)
		f.mu.Unlock()
	})}
	return f
}

func (f *fixture) apply(body string, opts engine.ApplyOptions) (*engine.Journal, error) {
	p := load(f.t, writePlan(f.t, f.dir, body), engine.ParamValues{})
	if opts.RunID == "" {
		opts.RunID = "run-1"
	}
	return f.runner.Apply(context.Background(), p, opts)
}

func (f *fixture) reload(body string) func(*engine.Journal) (*engine.Plan, error) {
	path := writePlan(f.t, f.dir, body)
	return func(j *engine.Journal) (*engine.Plan, error) {
		return engine.Load(path, engine.LoadOptions{Params: engine.ParamValues{Fixed: j.Params}})
	}
}

func statuses(j *engine.Journal) map[string]engine.StepStatus {
	m := map[string]engine.StepStatus{}
	for _, r := range j.Steps {
		m[r.ID] = r.Status
	}
	return m
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func TestWhenSkipsAndIsRecorded(t *testing.T) {
	f := newFixture(t)
	j, err := f.apply(`
params:
  big: {type: int, default: 2}
steps:
  - {id: a, type: test.op, with: {out: {n: 5}}}
  - {id: b, type: test.op, when: "steps.a.outputs.n > params.big"}
  - {id: c, type: test.op, when: "steps.a.outputs.n < params.big"}
  - {id: d, type: test.op, when: 'steps.c.status == "Skipped"'}
`, engine.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ran(); !equal(got, []string{"a", "b", "d"}) {
		t.Fatalf("ran %v", got)
	}
	st := statuses(j)
	if st["c"] != engine.StepSkipped || st["b"] != engine.StepSucceeded {
		t.Fatalf("statuses %v", st)
	}
	if w := j.Step("c").When; w == nil || *w {
		t.Fatalf("when of c not recorded as false: %v", w)
	}
}

func TestWhenErrorFailsTheStep(t *testing.T) {
	f := newFixture(t)
	// outputs.missing is nil: comparing is fine for expr, but a nil `when` must not be false.
	_, err := f.apply(`
steps:
  - {id: a, type: test.op}
  - {id: b, type: test.op, when: "steps.a.outputs.missing"}
`, engine.ApplyOptions{})
	if err == nil || !strings.Contains(err.Error(), "expected true or false") {
		t.Fatalf("want a when error, got %v", err)
	}
}

func TestHooksRunAroundTheirPhase(t *testing.T) {
	f := newFixture(t)
	_, err := f.apply(`
hooks:
  PreBackup:   [{id: pre-backup, type: test.op}]
  PostBackup:  [{id: post-backup-1, type: test.op}, {id: post-backup-2, type: test.op}]
  PreRestore:  [{id: pre-restore, type: test.op}]
  PostRestore: [{id: post-restore, type: test.op}]
steps:
  - {id: first, type: test.op}
  - {id: backup-1, type: test.op, phase: Backup}
  - {id: backup-2, type: test.op, phase: Backup}
  - {id: between, type: test.op}
  - {id: restore, type: test.op, phase: Restore}
  - {id: last, type: test.op}
`, engine.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"first", "pre-backup", "backup-1", "backup-2", "post-backup-1", "post-backup-2",
		"between", "pre-restore", "restore", "post-restore", "last"}
	if got := ran(); !equal(got, want) {
		t.Fatalf("order\n got %v\nwant %v", got, want)
	}
}

func TestHookOnErrorContinue(t *testing.T) {
	f := newFixture(t)
	j, err := f.apply(`
hooks:
  PreBackup: [{id: notify, type: test.op, onError: continue, with: {always: true}}]
steps:
  - {id: backup, type: test.op, phase: Backup}
`, engine.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if st := statuses(j); st["notify"] != engine.StepFailed || st["backup"] != engine.StepSucceeded {
		t.Fatalf("statuses %v", st)
	}
}

const sagaPlan = `
steps:
  - id: a
    type: test.op
    rollback: [{id: undo-a, type: test.op}]
  - id: b
    type: test.op
    rollback: [{id: undo-b1, type: test.op, with: {failIf: %q}}, {id: undo-b2, type: test.op}]
  - {id: no-undo, type: test.op}
  - id: c
    type: test.op
    rollback: [{id: undo-c, type: test.op, with: {failIf: %q}}]
  - {id: d, type: test.op, with: {always: true}, rollback: [{id: undo-d, type: test.op}]}
  - {id: e, type: test.op}
`

func TestRollbackRunsInReverseOrder(t *testing.T) {
	f := newFixture(t)
	j, err := f.apply(fmt.Sprintf(sagaPlan, "/nonexistent/x", "/nonexistent/y"), engine.ApplyOptions{})
	var re *engine.RunError
	if !errors.As(err, &re) || re.Status != engine.RunRolledBack {
		t.Fatalf("want a rolled back run, got %v", err)
	}
	want := []string{"a", "b", "no-undo", "c", "d", "undo-c", "undo-b1", "undo-b2", "undo-a"}
	if got := ran(); !equal(got, want) {
		t.Fatalf("order\n got %v\nwant %v", got, want)
	}
	st := statuses(j)
	for id, want := range map[string]engine.StepStatus{"a": engine.StepRolledBack, "b": engine.StepRolledBack, "c": engine.StepRolledBack,
		"no-undo": engine.StepSucceeded, "d": engine.StepFailed, "e": engine.StepPending} {
		if st[id] != want {
			t.Errorf("%s: %s, want %s", id, st[id], want)
		}
	}
	if j.Status != engine.RunRolledBack {
		t.Errorf("run status %s", j.Status)
	}
	if _, ok := statuses(j)["undo-d"]; ok {
		t.Errorf("the failed step's own rollback ran")
	}
}

func TestRollbackFailureIsReportedAndRepairable(t *testing.T) {
	f := newFixture(t)
	breakB, breakC := filepath.Join(f.dir, "break-b"), filepath.Join(f.dir, "break-c")
	for _, p := range []string{breakB, breakC} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	body := fmt.Sprintf(sagaPlan, breakB, breakC)
	j, err := f.apply(body, engine.ApplyOptions{})
	var re *engine.RunError
	if !errors.As(err, &re) || re.Status != engine.RunRollbackFailed {
		t.Fatalf("want RollbackFailed, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{`undo "c"`, `undo "b"`, "still to undo: c, b", `step "d" failed`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not say %q:\n%s", want, msg)
		}
	}
	// Both failures were reported and a's rollback still ran.
	if got := ran(); !equal(got, []string{"a", "b", "no-undo", "c", "d", "undo-c", "undo-b1", "undo-a"}) {
		t.Fatalf("ran %v", got)
	}
	if st := statuses(j); st["a"] != engine.StepRolledBack || st["b"] != engine.StepSucceeded || st["c"] != engine.StepSucceeded {
		t.Fatalf("statuses %v", st)
	}
	if j.Step("b").RollbackError == "" {
		t.Errorf("b's rollback error not recorded")
	}
	saved, err := f.store.Load(context.Background(), "run-1")
	if err != nil || saved.Status != engine.RunRollbackFailed {
		t.Fatalf("checkpoint: %v %v", saved, err)
	}

	// The operator repairs one cause, then the other; rollback finishes without redoing undo-a.
	os.Remove(breakC)
	resetOps()
	_, err = f.runner.Rollback(context.Background(), "run-1", f.reload(body))
	if !errors.As(err, &re) || re.Status != engine.RunRollbackFailed || !strings.Contains(err.Error(), "still to undo: b") {
		t.Fatalf("second rollback: %v", err)
	}
	os.Remove(breakB)
	resetOps()
	j, err = f.runner.Rollback(context.Background(), "run-1", f.reload(body))
	if err != nil {
		t.Fatalf("third rollback: %v", err)
	}
	if got := ran(); !equal(got, []string{"undo-b1", "undo-b2"}) {
		t.Fatalf("ran %v", got)
	}
	if j.Status != engine.RunRolledBack {
		t.Fatalf("status %s", j.Status)
	}
}

func TestRetries(t *testing.T) {
	cases := []struct {
		name     string
		step     string
		wantErr  bool
		attempts int
	}{
		{"transient errors are retried", `{fail: 2, transient: true}, retry: {attempts: 3, backoff: 1ms}`, false, 3},
		{"attempts run out", `{fail: 5, transient: true}, retry: {attempts: 3, backoff: 1ms}`, true, 3},
		{"permanent errors are not retried", `{fail: 2}, retry: {attempts: 3, backoff: 1ms}`, true, 1},
		{"on: any retries permanent errors", `{fail: 2}, retry: {attempts: 3, backoff: 1ms, on: any}`, false, 3},
		{"no retry block means one attempt", `{fail: 1, transient: true}`, true, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			j, err := f.apply("steps:\n  - {id: s, type: test.op, with: "+tc.step+"}\n", engine.ApplyOptions{})
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if got := j.Step("s").Attempts; got != tc.attempts {
				t.Fatalf("attempts %d, want %d", got, tc.attempts)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	f := newFixture(t)
	start := time.Now()
	j, err := f.apply(`
steps:
  - {id: slow, type: test.op, with: {sleep: 1m}, timeout: 50ms, retry: {attempts: 2, backoff: 1ms}}
`, engine.ApplyOptions{})
	if err == nil || !strings.Contains(err.Error(), "timed out after 50ms") {
		t.Fatalf("want a timeout, got %v", err)
	}
	if time.Since(start) > 30*time.Second {
		t.Fatalf("timeout not enforced")
	}
	if j.Step("slow").Attempts != 2 {
		t.Fatalf("a timeout is transient and should be retried: %d attempts", j.Step("slow").Attempts)
	}
}

func TestInterruptThenResume(t *testing.T) {
	f := newFixture(t)
	body := `
steps:
  - {id: a, type: test.op, with: {out: {v: first}}}
  - {id: b, type: test.op, with: {sleep: 200ms}}
  - {id: c, type: test.op, when: 'steps.a.outputs.v == "first"'}
`
	p := load(t, writePlan(t, f.dir, body), engine.ParamValues{})
	ctx, cancel := context.WithCancel(context.Background())
	f.runner.Observer = engine.ObserverFunc(func(e engine.Event) {
		if e.Type == engine.EventStepStarted && e.StepID == "b" {
			cancel() // Ctrl-C while b runs
		}
	})
	j, err := f.runner.Apply(ctx, p, engine.ApplyOptions{RunID: "run-1"})
	if !errors.Is(err, engine.ErrInterrupted) {
		t.Fatalf("want interrupted, got %v", err)
	}
	if j.Status != engine.RunInterrupted || j.Step("b").Status != engine.StepRunning {
		t.Fatalf("status %s, b %s", j.Status, j.Step("b").Status)
	}
	resetOps()
	j, err = f.runner.Resume(context.Background(), "run-1", f.reload(body))
	if err != nil {
		t.Fatal(err)
	}
	if got := ran(); !equal(got, []string{"b", "c"}) {
		t.Fatalf("resume ran %v", got)
	}
	if j.Status != engine.RunSucceeded || j.Step("a").Outputs["attempt"] != 1 {
		t.Fatalf("status %s outputs %v", j.Status, j.Step("a").Outputs)
	}
}

func TestResumeRefusesChangedCompletedStep(t *testing.T) {
	f := newFixture(t)
	f.runner.NoRollback = true
	body := `
steps:
  - {id: a, type: test.op, with: {out: {v: 1}}}
  - {id: b, type: test.op, with: {always: true}}
`
	if _, err := f.apply(body, engine.ApplyOptions{}); err == nil {
		t.Fatal("b should fail")
	}
	changedA := strings.Replace(body, "v: 1", "v: 2", 1)
	_, err := f.runner.Resume(context.Background(), "run-1", f.reload(changedA))
	if err == nil || !strings.Contains(err.Error(), `step "a" changed since it completed`) || !strings.Contains(err.Error(), "plan.yaml:6:5") {
		t.Fatalf("want a refusal naming a and its position, got %v", err)
	}
	// Fixing the failed step is how resume is meant to be used.
	fixedB := strings.Replace(body, "always: true", "always: false", 1)
	resetOps()
	j, err := f.runner.Resume(context.Background(), "run-1", f.reload(fixedB))
	if err != nil {
		t.Fatal(err)
	}
	if got := ran(); !equal(got, []string{"b"}) || j.Status != engine.RunSucceeded {
		t.Fatalf("ran %v, status %s", got, j.Status)
	}
}

func TestLockRefusesSecondRunner(t *testing.T) {
	f := newFixture(t)
	f.runner.NoRollback = true
	body := "steps:\n  - {id: a, type: test.op, with: {always: true}}\n"
	if _, err := f.apply(body, engine.ApplyOptions{}); err == nil {
		t.Fatal("a should fail")
	}
	lock, err := f.store.Lock(context.Background(), "run-1", engine.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.runner.Resume(context.Background(), "run-1", f.reload(body))
	var le *engine.LockedError
	if !errors.As(err, &le) || le.State.Status != engine.LockHeld || le.State.Holder.PID != os.Getpid() {
		t.Fatalf("want a live lock error naming this process, got %v", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("error does not name the holder: %v", err)
	}
	lock.Release()
}

func TestStaleLockIsReportedAndCanBeBroken(t *testing.T) {
	f := newFixture(t)
	f.runner.NoRollback = true
	body := "steps:\n  - {id: a, type: test.op, with: {always: true}}\n"
	if _, err := f.apply(body, engine.ApplyOptions{}); err == nil {
		t.Fatal("a should fail")
	}
	// A runner that died holding the lock leaves its record but no flock.
	host, _ := os.Hostname()
	stale := fmt.Sprintf(`{"pid": 999999, "host": %q, "started": "2026-01-01T00:00:00Z"}`, host)
	dir, err := f.store.RunDir("run-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lock"), []byte(stale), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = f.runner.Resume(context.Background(), "run-1", f.reload(body))
	var le *engine.LockedError
	if !errors.As(err, &le) || le.State.Status != engine.LockStale || le.State.Holder.PID != 999999 || !strings.Contains(err.Error(), "--break-lock") {
		t.Fatalf("want a stale lock error, got %v", err)
	}
	f.runner.BreakStaleLock = true
	if _, err := f.runner.Resume(context.Background(), "run-1", f.reload(strings.Replace(body, "always: true", "always: false", 1))); err != nil {
		t.Fatalf("breaking the stale lock: %v", err)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	f := newFixture(t)
	marker := filepath.Join(f.dir, "touched")
	j, err := f.apply(fmt.Sprintf(`
steps:
  - {id: touch, type: exec, with: {command: [touch, %q]}}
  - {id: look, type: exec, with: {command: [sh, -c, 'echo "{\"dry\": $PLANRUN_DRY_RUN}"'], dryRun: true}}
  - {id: check, type: assert, with: {that: 'steps.look.outputs.dry == true'}}
`, marker), engine.ApplyOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("dry run ran a mutating command")
	}
	if j.Status != engine.RunSucceeded || !j.DryRun {
		t.Fatalf("status %s", j.Status)
	}
	if _, err := os.Stat(f.store.Root); err == nil {
		t.Fatal("dry run wrote a checkpoint")
	}
}

// TestSubmitThenResume: a submitted run is recorded Pending with every step pending and runs
// nothing; resume (the runner it was submitted for) runs it whole. A dry run is not submitted.
func TestSubmitThenResume(t *testing.T) {
	f := newFixture(t)
	body := `
steps:
  - {id: a, type: test.op, with: {out: {v: 1}}}
  - {id: b, type: test.op}
`
	p := load(t, writePlan(t, f.dir, body), engine.ParamValues{})
	j, err := f.runner.Submit(context.Background(), p, engine.ApplyOptions{RunID: "sub"})
	if err != nil {
		t.Fatal(err)
	}
	stored, err := f.store.Load(context.Background(), "sub")
	if err != nil || stored.Status != engine.RunPending || stored.Step("a").Status != engine.StepPending || len(ran()) != 0 {
		t.Fatalf("after submit: %v %v, ran %v", stored, err, ran())
	}
	if j.Status != engine.RunPending {
		t.Fatalf("Submit returned status %s", j.Status)
	}
	j, err = f.runner.Resume(context.Background(), "sub", f.reload(body))
	if err != nil || j.Status != engine.RunSucceeded || !equal(ran(), []string{"a", "b"}) {
		t.Fatalf("resume of the submitted run: %v %v, ran %v", j, err, ran())
	}
	if _, err := f.runner.Submit(context.Background(), p, engine.ApplyOptions{RunID: "dry", DryRun: true}); err == nil {
		t.Fatal("a dry run was submitted")
	}
}
