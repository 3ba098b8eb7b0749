package clusterstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
)

// One control plane (kube-apiserver and etcd) for the package's tests; each test has its own
// namespace.
var (
	cpOnce sync.Once
	cp     *controlplane.ControlPlane
	cpErr  error
	nsN    atomic.Int64
)

func TestMain(m *testing.M) {
	code := m.Run()
	if cp != nil {
		cp.Stop()
	}
	os.Exit(code)
}

// open returns a store in a new namespace of the package's control plane, with a short lease.
func open(t testing.TB, lease time.Duration) (*Store, string) {
	t.Helper()
	if os.Getenv(controlplane.SkipEnv) == "1" {
		t.Skip("control plane tests skipped ($" + controlplane.SkipEnv + ")")
	}
	cpOnce.Do(func() { cp, cpErr = controlplane.Start(context.Background(), controlplane.Options{}) })
	if cpErr != nil {
		t.Fatal(cpErr)
	}
	ns := fmt.Sprintf("runs-%d", nsN.Add(1))
	url := fmt.Sprintf("k8s://%s/%s?lease=%s", cp.ContextName, ns, lease)
	if _, err := Open(t.Context(), url, Options{Kubeconfig: cp.Kubeconfig}); err == nil || !strings.Contains(err.Error(), "namespace "+ns+" does not exist") {
		t.Fatalf("Open on a missing namespace: %v", err)
	}
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return openURL(t, url), url
}

func openURL(t testing.TB, url string) *Store {
	t.Helper()
	s, err := Open(t.Context(), url, Options{Kubeconfig: cp.Kubeconfig, ArtifactDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testStep is a step that waits (wait) or ends at once, recording that it ran, reporting
// progress when asked.
type testStep struct {
	Wait     engine.Duration `yaml:"wait"`
	Progress int64           `yaml:"progress"` // reports this many items done, one by one
}

var ranSteps struct {
	sync.Mutex
	ids []string
}

func (s *testStep) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	ranSteps.Lock()
	ranSteps.ids = append(ranSteps.ids, rc.StepID)
	ranSteps.Unlock()
	for i := range s.Progress {
		rc.Progress(engine.Progress{Done: i + 1, Total: s.Progress, Unit: "items"})
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(time.Duration(s.Wait)):
	}
	return engine.Outputs{"step": rc.StepID}, nil
}

func init() {
	engine.Register(engine.StepType{Name: "clusterstoretest.step", Doc: "test step", New: func() engine.Action { return new(testStep) }})
}

func loadPlan(t testing.TB, body string) *engine.Plan {
	t.Helper()
	path := filepath.Join(t.TempDir(), "plan.yaml")
	src := "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: stored, version: 2}\nsteps:\n" + body
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := engine.Load(path, engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRunInTheCluster: a run through the engine keeps its journal, plan and lock in the
// namespace; another store (another machine) lists it, reads it, resumes it.
func TestRunInTheCluster(t *testing.T) {
	s, url := open(t, 6*time.Second)
	p := loadPlan(t, "  - {id: a, type: clusterstoretest.step}\n  - {id: b, type: clusterstoretest.step, with: {wait: 5s}}\n  - {id: c, type: clusterstoretest.step}\n")
	ctx, cancel := context.WithCancel(t.Context())
	r := &engine.Runner{Store: s, Observer: engine.ObserverFunc(func(e engine.Event) {
		if e.Type == engine.EventStepStarted && e.StepID == "b" {
			cancel() // Ctrl-C while b runs
		}
	})}
	if _, err := r.Apply(ctx, p, engine.ApplyOptions{RunID: "stored-1"}); !errors.Is(err, engine.ErrInterrupted) {
		t.Fatalf("apply: %v; want interrupted", err)
	}

	other := openURL(t, url)
	runs, err := other.List(t.Context())
	if err != nil || len(runs) != 1 || runs[0].RunID != "stored-1" || runs[0].Journal == nil {
		t.Fatalf("List = %+v, %v", runs, err)
	}
	j := runs[0].Journal
	if j.Status != engine.RunInterrupted || j.Step("a").Status != engine.StepSucceeded || j.Step("b").Status != engine.StepRunning {
		t.Fatalf("journal: run %s, a %s, b %s", j.Status, j.Step("a").Status, j.Step("b").Status)
	}
	src, err := other.PlanSource(t.Context(), "stored-1")
	if err != nil || !strings.Contains(string(src), "name: stored") {
		t.Fatalf("PlanSource = %q, %v", src, err)
	}
	if st, err := other.LockState(t.Context(), "stored-1"); err != nil || st.Status != engine.LockFree {
		t.Fatalf("LockState after the run = %+v, %v; want free", st, err)
	}
	obj, err := other.runs().Get(t.Context(), "stored-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"phase": "Interrupted", "progress": "1/3", "step": "b", "plan": "stored v2"} {
		if got, _, _ := unstructured.NestedString(obj.Object, "status", path); got != want {
			t.Errorf("status.%s = %q, want %q", path, got, want)
		}
	}

	ranSteps.Lock()
	ranSteps.ids = nil
	ranSteps.Unlock()
	r2 := &engine.Runner{Store: other}
	j, err = r2.Resume(t.Context(), "stored-1", func(*engine.Journal) (*engine.Plan, error) { return p, nil })
	if err != nil || j.Status != engine.RunSucceeded {
		t.Fatalf("resume from another store: %v, %v", j, err)
	}
	if got := strings.Join(ranSteps.ids, ","); got != "b,c" {
		t.Errorf("resume ran %s, want b,c", got)
	}
	if _, err := other.Load(t.Context(), "nope"); !errors.Is(err, engine.ErrRunNotFound) {
		t.Errorf("Load of an unknown run: %v", err)
	}
	if err := s.Create(t.Context(), j, nil); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("Create of an existing run: %v", err)
	}
}

// TestLockRace: runners racing for one run: exactly one holds it; the others are told who.
func TestLockRace(t *testing.T) {
	s, url := open(t, 6*time.Second)
	createRun(t, s, "race")
	const n = 6
	stores := []*Store{s}
	for range n - 1 {
		stores = append(stores, openURL(t, url))
	}
	var won atomic.Int64
	var wg sync.WaitGroup
	locks := make([]engine.Lock, n)
	errs := make([]error, n)
	for i, st := range stores {
		wg.Go(func() { locks[i], errs[i] = st.Lock(t.Context(), "race", engine.LockOptions{BreakStale: true}) })
	}
	wg.Wait()
	for i := range n {
		var le *engine.LockedError
		switch {
		case errs[i] == nil:
			won.Add(1)
			defer locks[i].Release()
		case !errors.As(errs[i], &le) || le.State.Status != engine.LockHeld:
			t.Errorf("runner %d: %v; want held by the winner", i, errs[i])
		}
	}
	if won.Load() != 1 {
		t.Fatalf("%d runners hold the run", won.Load())
	}
}

// TestLeaseTakeover: a runner cut off from the API server stops by itself before its Lease
// expires; once it has expired, another runner takes the run over (only when told to break a
// stale lock), and the first one's checkpoints are refused from then on.
func TestLeaseTakeover(t *testing.T) {
	lease := 6 * time.Second
	s, url := open(t, lease)
	j := createRun(t, s, "cut-off")
	l, err := s.Lock(t.Context(), "cut-off", engine.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	ll := l.(engine.LosableLock)

	// The API server cannot be reached for renewals.
	var cut atomic.Bool
	cut.Store(true)
	// Renewals hang until they time out, as requests to an unreachable server do.
	renewFault = func(ctx context.Context, runID string) error {
		if runID == "cut-off" && cut.Load() {
			<-ctx.Done()
			return fmt.Errorf("connection timed out: %w", ctx.Err())
		}
		return nil
	}
	defer func() { renewFault = nil }()
	start := time.Now()
	select {
	case <-ll.Lost():
	case <-time.After(2 * lease):
		t.Fatal("the runner did not notice it could not renew its Lease")
	}
	if took := time.Since(start); took >= lease {
		t.Errorf("lost after %s: later than the lease (%s), when another runner may have taken it", took, lease)
	}
	if !errors.Is(ll.Err(), engine.ErrLockLost) || !strings.Contains(ll.Err().Error(), "could not renew") {
		t.Errorf("Err = %v", ll.Err())
	}
	if err := s.Save(t.Context(), j); !errors.Is(err, engine.ErrLockLost) {
		t.Errorf("Save after the loss: %v", err)
	}

	other := openURL(t, url)
	for time.Since(start) < lease+time.Second {
		time.Sleep(100 * time.Millisecond)
	}
	var le *engine.LockedError
	if _, err := other.Lock(t.Context(), "cut-off", engine.LockOptions{}); !errors.As(err, &le) || le.State.Status != engine.LockStale || !strings.Contains(err.Error(), "--break-lock") {
		t.Fatalf("Lock of an expired Lease without BreakStale: %v; want stale", err)
	}
	l2, err := other.Lock(t.Context(), "cut-off", engine.LockOptions{BreakStale: true})
	if err != nil {
		t.Fatalf("taking over the expired Lease: %v", err)
	}
	defer l2.Release()
	if st, err := s.LockState(t.Context(), "cut-off"); err != nil || st.Status != engine.LockHeld || st.Holder.PID != os.Getpid() {
		t.Errorf("LockState = %+v, %v; want held", st, err)
	}
	j2, err := other.Load(t.Context(), "cut-off")
	if err != nil {
		t.Fatal(err)
	}
	j2.Error = "saved by the new holder"
	if err := other.Save(t.Context(), j2); err != nil {
		t.Fatalf("Save by the new holder: %v", err)
	}
}

// TestFencing: a runner that does not know it lost its run (its renewals stopped an instant
// ago) cannot write it: the new holder fenced the PlanRun when it took the lock.
func TestFencing(t *testing.T) {
	s, url := open(t, 3*time.Second)
	j := createRun(t, s, "fenced")
	l, err := s.Lock(t.Context(), "fenced", engine.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old := l.(*leaseLock)
	// As if the old runner's renewals had silently stopped long enough for the Lease to expire,
	// without it noticing yet: stop them, then age the Lease.
	close(old.stop)
	<-old.done
	lease, err := s.leases().Get(t.Context(), leaseName("fenced"), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	past := metav1.NewMicroTime(time.Now().Add(-time.Minute))
	lease.Spec.RenewTime = &past
	if _, err := s.leases().Update(t.Context(), lease, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	other := openURL(t, url)
	l2, err := other.Lock(t.Context(), "fenced", engine.LockOptions{BreakStale: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Release()
	j.Error = "written by the old runner"
	err = s.Save(t.Context(), j)
	if !errors.Is(err, engine.ErrLockLost) || !errors.Is(err, engine.ErrInterrupted) || !strings.Contains(err.Error(), "changed by another runner") {
		t.Fatalf("Save by the fenced-off runner: %v", err)
	}
	got, err := other.Load(t.Context(), "fenced")
	if err != nil || got.Error == j.Error {
		t.Fatalf("the fenced-off runner's checkpoint was written: %v", err)
	}
}

// TestBadStateURLs: bad URLs and run ids are one-line errors saying what is wrong.
func TestBadStateURLs(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"k8s://ctx", "no namespace"},
		{"k8s://ctx/Bad_NS", `namespace "Bad_NS"`},
		{"k8s://ctx/ns?lease=1s", "at least 3s"},
		{"k8s://ctx/ns?lease=3.5s", "whole seconds"},
		{"k8s://ctx/ns?color=red", `unknown option "color"`},
		{"s3://bucket/x", "not a k8s:// URL"},
		{"k8s://ctx/", "no namespace"},
		{"k8s://ctx/ns#x", "no fragment"},
		{"k8s://ctx/ns?lease=%zz", "invalid URL escape"},
	} {
		_, _, _, err := ParseURL(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("ParseURL(%q) = %v; want one line with %q", tc.url, err, tc.want)
		}
	}
	for _, tc := range []struct{ url, context, namespace string }{
		{"k8s://kind-a/runs", "kind-a", "runs"},
		{"k8s:///runs?lease=10s", "", "runs"},
		{"k8s://arn:aws:eks:eu-west-1:123456789012:cluster/prod/planrun", "arn:aws:eks:eu-west-1:123456789012:cluster/prod", "planrun"},
		{"k8s://my%20ctx/runs", "my ctx", "runs"},
	} {
		c, ns, _, err := ParseURL(tc.url)
		if err != nil || c != tc.context || ns != tc.namespace {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q", tc.url, c, ns, err, tc.context, tc.namespace)
		}
	}
	s, _ := open(t, 6*time.Second)
	j := &engine.Journal{RunID: "Not_A_Name", Status: engine.RunRunning}
	if err := s.Create(t.Context(), j, nil); err == nil || !strings.Contains(err.Error(), "cannot name a PlanRun") {
		t.Errorf("Create with a bad run id: %v", err)
	}
}

func createRun(t testing.TB, s *Store, id string) *engine.Journal {
	t.Helper()
	now := time.Now().UTC()
	j := &engine.Journal{Version: 1, RunID: id, Plan: engine.PlanRecord{Name: "p"}, Status: engine.RunRunning, Started: now, Updated: now}
	if err := s.Create(t.Context(), j, []byte("plan")); err != nil {
		t.Fatal(err)
	}
	return j
}

// TestRunnerStopsWhenCutOff: a runner that cannot renew its Lease stops the step under way and
// starts no other, before anyone else may take the run; the journal keeps its last checkpoint.
func TestRunnerStopsWhenCutOff(t *testing.T) {
	s, _ := open(t, 6*time.Second)
	renewFault = func(ctx context.Context, runID string) error {
		if runID == "cut" {
			return errors.New("network unreachable")
		}
		return nil
	}
	defer func() { renewFault = nil }()
	ranSteps.Lock()
	ranSteps.ids = nil
	ranSteps.Unlock()
	p := loadPlan(t, "  - {id: a, type: clusterstoretest.step}\n  - {id: b, type: clusterstoretest.step, with: {wait: 1m}}\n  - {id: c, type: clusterstoretest.step}\n")
	_, err := (&engine.Runner{Store: s}).Apply(t.Context(), p, engine.ApplyOptions{RunID: "cut"})
	if !errors.Is(err, engine.ErrLockLost) || !strings.Contains(err.Error(), "network unreachable") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("apply cut off from the API server: %v; want one line saying why", err)
	}
	if got := strings.Join(ranSteps.ids, ","); got != "a,b" {
		t.Errorf("ran %s; want a, then b stopped", got)
	}
	j, err := s.Load(t.Context(), "cut")
	if err != nil || j.Status != engine.RunRunning || j.Step("b").Status != engine.StepRunning {
		t.Fatalf("journal after the cut: %v %v", j, err)
	}
}

// TestCheckpointAnswerLost: a checkpoint the API server applied but whose answer was lost
// (a timeout) leaves the runner with an older version of the PlanRun; its next checkpoint finds
// its own write there and goes on, instead of taking it for another runner's.
func TestCheckpointAnswerLost(t *testing.T) {
	s, _ := open(t, 6*time.Second)
	j := createRun(t, s, "lost-answer")
	l, err := s.Lock(t.Context(), "lost-answer", engine.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	ll := l.(*leaseLock)
	ll.writeMu.Lock()
	before := ll.obj
	ll.writeMu.Unlock()
	j.Error = "first"
	if err := s.Save(t.Context(), j); err != nil {
		t.Fatal(err)
	}
	ll.writeMu.Lock()
	ll.obj = before // as if the answer to that update had been lost
	ll.writeMu.Unlock()
	j.Error = "second"
	if err := s.Save(t.Context(), j); err != nil {
		t.Fatalf("Save after a lost answer: %v", err)
	}
	if got, err := s.Load(t.Context(), "lost-answer"); err != nil || got.Error != "second" {
		t.Fatalf("Load = %v, %v", got, err)
	}
	if ll.Err() != nil {
		t.Fatalf("the lock was taken for lost: %v", ll.Err())
	}
}
