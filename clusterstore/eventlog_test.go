package clusterstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/engine"
)

// setFor sets *p to v until the test ends.
func setFor[T any](t *testing.T, p *T, v T) {
	was := *p
	*p = v
	t.Cleanup(func() { *p = was })
}

func event(typ engine.EventType, step, msg string) engine.Event {
	e := engine.Event{Time: time.Now().UTC(), Type: typ, RunID: "r", StepID: step, Message: msg}
	if typ == engine.EventStepProgress {
		e.Progress = &engine.Progress{Done: 1, Unit: "items"}
	}
	return e
}

func eventLine(t *testing.T, e engine.Event) []byte {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// writeEvents writes events through one event log writer, as the engine does (a line a Write),
// and closes it.
func writeEvents(t *testing.T, s *Store, runID string, events ...engine.Event) {
	t.Helper()
	w, err := s.OpenEventLog(runID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if _, err := w.Write(eventLine(t, e)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

func readEvents(t *testing.T, s *Store, runID string, offset int64) ([]string, int64) {
	t.Helper()
	events, next, err := s.ReadEvents(runID, offset)
	if err != nil {
		t.Fatalf("ReadEvents(%s, %d): %v", runID, offset, err)
	}
	return messages(events), next
}

func messages(events []engine.Event) []string {
	out := []string{}
	for _, e := range events {
		out = append(out, e.Message)
	}
	return out
}

// TestEventLog: events written through OpenEventLog are read back from offset 0, and from the
// offset a read returned only those added since, whoever wrote them; a line may come in pieces.
// The log is a ConfigMap owned by the PlanRun (deleted with it), labelled as planrun's; before
// the first event, and for a run without a log, there is nothing to read and no error.
func TestEventLog(t *testing.T) {
	s, _ := open(t, DefaultLeaseDuration)
	createRun(t, s, "ev")
	for _, offset := range []int64{0, 7} {
		if events, next, err := s.ReadEvents("ev", offset); err != nil || len(events) != 0 || next != offset {
			t.Fatalf("ReadEvents before any event from %d = %v, %d, %v", offset, events, next, err)
		}
	}
	if events, next, err := s.ReadEvents("no-such-run", 3); err != nil || len(events) != 0 || next != 3 {
		t.Fatalf("ReadEvents of a run without a log = %v, %d, %v", events, next, err)
	}
	if _, _, err := s.ReadEvents("Not_A_Name", 0); !errors.Is(err, engine.ErrRunNotFound) {
		t.Fatalf("ReadEvents of a bad run id: %v", err)
	}

	w, err := s.OpenEventLog("ev")
	if err != nil {
		t.Fatal(err)
	}
	first := append(eventLine(t, event(engine.EventRunStarted, "", "m0")), eventLine(t, event(engine.EventStepStarted, "a", "m1"))...)
	third := eventLine(t, event(engine.EventStepProgress, "a", "m2"))
	for _, piece := range [][]byte{first[:10], first[10:], third[:5], third[5:]} {
		if n, err := w.Write(piece); n != len(piece) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, next := readEvents(t, s, "ev", 0); !slices.Equal(got, []string{"m0", "m1", "m2"}) || next != 3 {
		t.Fatalf("events %v, next %d", got, next)
	}

	// Another writer (the run resumed): its events follow.
	writeEvents(t, s, "ev", event(engine.EventStepSucceeded, "a", "m3"), event(engine.EventRunFinished, "", "m4"))
	for _, c := range []struct {
		offset int64
		want   []string
		next   int64
	}{
		{0, []string{"m0", "m1", "m2", "m3", "m4"}, 5},
		{3, []string{"m3", "m4"}, 5},
		{4, []string{"m4"}, 5},
		{5, []string{}, 5},
		{9, []string{"m0", "m1", "m2", "m3", "m4"}, 5}, // past the newest: the log was made anew
	} {
		if got, next := readEvents(t, s, "ev", c.offset); !slices.Equal(got, c.want) || next != c.next {
			t.Errorf("from %d: events %v, next %d; want %v, %d", c.offset, got, next, c.want, c.next)
		}
	}
	events, _, _ := s.ReadEvents("ev", 0)
	if events[2].Type != engine.EventStepProgress || events[2].Progress == nil || events[2].StepID != "a" {
		t.Errorf("progress event read back as %+v", events[2])
	}

	cm, err := s.cs.CoreV1().ConfigMaps(s.namespace).Get(t.Context(), "planrun-ev-events", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	run, err := s.runs().Get(t.Context(), "ev", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The test's API server runs no garbage collector: the owner reference is what deletes the
	// log with its PlanRun.
	if refs := cm.OwnerReferences; len(refs) != 1 || refs[0].Kind != "PlanRun" || refs[0].APIVersion != "planrun.dev/v1alpha1" || refs[0].Name != "ev" || refs[0].UID != run.GetUID() {
		t.Errorf("owner references %+v, want the PlanRun (uid %s)", refs, run.GetUID())
	}
	if cm.Labels[managedByLabel] != "planrun" || cm.Labels[runLabel] != "ev" {
		t.Errorf("labels %v", cm.Labels)
	}
	var keys []string
	for k := range cm.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"000000000000", "000000000001", "000000000002", "000000000003", "000000000004"}; !slices.Equal(keys, want) {
		t.Errorf("keys %v, want %v", keys, want)
	}
}

// TestEventLogRing: the ring keeps the newest events within its bounds, dropping the oldest
// first, and the oldest progress first when there is too much of it; a follower whose offset is
// older than the ring's oldest event reads from there.
func TestEventLogRing(t *testing.T) {
	s, _ := open(t, DefaultLeaseDuration)
	warn := func(i int) engine.Event {
		return event(engine.EventStepWarning, "a", fmt.Sprintf("w%02d %s", i, strings.Repeat("x", 100)))
	}
	var warnings [30]engine.Event
	for i := range warnings {
		warnings[i] = warn(i)
	}
	prog := func(from, to int) []engine.Event {
		var out []engine.Event
		for i := from; i < to; i++ {
			out = append(out, event(engine.EventStepProgress, "a", fmt.Sprintf("p%02d", i)))
		}
		return out
	}
	short := func(msgs []string) []string {
		out := []string{}
		for _, m := range msgs {
			out = append(out, strings.Fields(m)[0])
		}
		return out
	}
	for _, c := range []struct {
		name          string
		bytes, progrs int
		writes        [][]engine.Event // one writer each
		want          []string         // from offset 0; nil: the newest, as many as fit
		fromOne       []string         // from offset 1
	}{
		{name: "bytes, over several writes", bytes: 2000, progrs: 300,
			writes: [][]engine.Event{warnings[:10], warnings[10:20], warnings[20:]}},
		{name: "bytes, in one write", bytes: 2000, progrs: 300,
			writes: [][]engine.Event{warnings[:]}},
		{name: "progress", bytes: 512 << 10, progrs: 5,
			writes: [][]engine.Event{
				append([]engine.Event{warnings[0]}, prog(0, 10)...),
				append([]engine.Event{warnings[1]}, prog(10, 20)...),
			},
			want:    []string{"w00", "w01", "p15", "p16", "p17", "p18", "p19"},
			fromOne: []string{"w01", "p15", "p16", "p17", "p18", "p19"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			setFor(t, &maxLogBytes, c.bytes)
			setFor(t, &maxLogProgress, c.progrs)
			id := strings.ReplaceAll(strings.ToLower(c.name), ",", "")
			id = strings.ReplaceAll(id, " ", "-")
			createRun(t, s, id)
			var all []string
			for _, events := range c.writes {
				writeEvents(t, s, id, events...)
				for _, e := range events {
					all = append(all, strings.Fields(e.Message)[0])
				}
			}
			got, next := readEvents(t, s, id, 0)
			got = short(got)
			if c.want != nil && !slices.Equal(got, c.want) {
				t.Fatalf("events %v, want %v", got, c.want)
			}
			if c.want == nil && (len(got) < 5 || len(got) >= len(all) || !slices.Equal(got, all[len(all)-len(got):])) {
				t.Fatalf("events %v: want the newest of %v", got, all)
			}
			fromOne := c.fromOne
			if fromOne == nil {
				// The events kept have the sequence numbers before next.
				if fromOne = got; next-int64(len(got)) == 0 {
					fromOne = got[1:]
				}
			}
			if from, next1 := readEvents(t, s, id, 1); !slices.Equal(short(from), fromOne) || next1 != next {
				t.Fatalf("from offset 1: %v, next %d; want %v, %d", short(from), next1, fromOne, next)
			}
			if again, next2 := readEvents(t, s, id, next); len(again) != 0 || next2 != next {
				t.Fatalf("from the next offset %d: %v, %d", next, again, next2)
			}
			cm, err := s.cs.CoreV1().ConfigMaps(s.namespace).Get(t.Context(), eventLogName(id), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			size := 0
			for k, v := range cm.Data {
				size += len(k) + len(v)
			}
			if size > c.bytes || len(cm.Data) != len(got) {
				t.Fatalf("ring of %d events, %d bytes (bound %d)", len(cm.Data), size, c.bytes)
			}
		})
	}
}

// TestEventLogWriters: a writer whose copy of the ring is stale (a previous writer wrote since)
// reads it again and adds its events after the newest; the log of an earlier run of the same id
// that is still there (the PlanRun deleted and made anew before the log was collected) is taken
// over, its events dropped and its sequence numbers going on.
func TestEventLogWriters(t *testing.T) {
	setFor(t, &flushSoon, 10*time.Millisecond)
	s, _ := open(t, DefaultLeaseDuration)
	createRun(t, s, "two")
	b, err := s.OpenEventLog("two")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(eventLine(t, event(engine.EventStepStarted, "x", "b1"))); err != nil {
		t.Fatal(err)
	}
	waitFor := func(want []string) {
		t.Helper()
		var got []string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if got, _ = readEvents(t, s, "two", 0); slices.Equal(got, want) {
				return
			}
		}
		t.Fatalf("events %v, want %v", got, want)
	}
	waitFor([]string{"b1"}) // b has written, and holds the ring as it wrote it
	writeEvents(t, s, "two", event(engine.EventStepStarted, "x", "a1"))
	if _, err := b.Write(eventLine(t, event(engine.EventStepSucceeded, "x", "b2"))); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got, next := readEvents(t, s, "two", 0); !slices.Equal(got, []string{"b1", "a1", "b2"}) || next != 3 {
		t.Fatalf("events %v, next %d", got, next)
	}

	if err := s.runs().Delete(t.Context(), "two", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	createRun(t, s, "two")
	writeEvents(t, s, "two", event(engine.EventRunStarted, "", "new"))
	if got, next := readEvents(t, s, "two", 0); !slices.Equal(got, []string{"new"}) || next != 4 {
		t.Fatalf("events after the run was made anew: %v, next %d", got, next)
	}
	cm, err := s.cs.CoreV1().ConfigMaps(s.namespace).Get(t.Context(), "planrun-two-events", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	run, err := s.runs().Get(t.Context(), "two", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cm.OwnerReferences) != 1 || cm.OwnerReferences[0].UID != run.GetUID() {
		t.Fatalf("owner references %+v, want the new PlanRun %s", cm.OwnerReferences, run.GetUID())
	}
}

// TestEventLogOfARun: a run through the engine with the cluster store leaves its events in the
// log, run.started to run.finished with the steps' and their progress; another store (another
// machine) follows them while the run goes on.
func TestEventLogOfARun(t *testing.T) {
	s, url := open(t, DefaultLeaseDuration)
	other := openURL(t, url)
	createRun(t, s, "warm-up") // the namespace's first object waits for its cache
	p := loadPlan(t, "  - {id: a, type: clusterstoretest.step, with: {progress: 3}}\n  - {id: b, type: clusterstoretest.step, with: {wait: 3s}}\n  - {id: c, type: clusterstoretest.step}\n")
	done := make(chan error, 1)
	go func() {
		_, err := (&engine.Runner{Store: s}).Apply(t.Context(), p, engine.ApplyOptions{RunID: "logged"})
		done <- err
	}()
	// While b runs, a follower sees it started.
	var live []engine.Event
	var offset int64
	for seen := false; !seen; {
		select {
		case err := <-done:
			t.Fatalf("the run ended (%v) before a follower saw b start; it saw %v", err, eventTypes(live))
		case <-time.After(50 * time.Millisecond):
		}
		events, next, err := other.ReadEvents("logged", offset)
		if err != nil {
			t.Fatal(err)
		}
		offset = next
		live = append(live, events...)
		seen = slices.ContainsFunc(events, func(e engine.Event) bool { return e.Type == engine.EventStepStarted && e.StepID == "b" })
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	events, _, err := other.ReadEvents("logged", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"run.started", "step.started a", "step.progress a", "step.succeeded a", "step.started b", "step.succeeded b", "step.started c", "step.succeeded c", "run.finished"}
	if got := eventTypes(events); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for _, e := range events {
		if e.RunID != "logged" {
			t.Fatalf("event %+v of run %q", e, e.RunID)
		}
	}
	if p := events[2].Progress; p == nil || p.Done != 1 || p.Total != 3 {
		t.Errorf("progress %+v", p)
	}
	if live := eventTypes(live); !slices.Equal(live, want[:len(live)]) {
		t.Errorf("a follower saw %v while the run went on", live)
	}
}

func eventTypes(events []engine.Event) []string {
	out := []string{}
	for _, e := range events {
		out = append(out, strings.TrimSpace(string(e.Type)+" "+e.StepID))
	}
	return out
}

// TestEventLogForbidden: a runner that may not write the log (a Role from before event logs)
// runs its run as if there were none, without waiting at its end.
func TestEventLogForbidden(t *testing.T) {
	s, url := open(t, DefaultLeaseDuration)
	createRun(t, s, "warm-up")
	user := "no-configmaps-" + s.namespace
	cs, err := kubernetes.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "runner"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{Group}, Resources: []string{Resource}, Verbs: []string{"get", "list", "create", "update"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{LeaseResource}, Verbs: []string{"get", "create", "update"}},
	}}
	if _, err := cs.RbacV1().Roles(s.namespace).Create(t.Context(), role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "runner"}, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "runner"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: user}}}
	if _, err := cs.RbacV1().RoleBindings(s.namespace).Create(t.Context(), rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(cp.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	var restricted *Store
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		// The binding takes a moment to be seen by the authorizer.
		if restricted, err = Open(t.Context(), url, Options{Config: cfg, ArtifactDir: t.TempDir()}); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	p := loadPlan(t, "  - {id: a, type: clusterstoretest.step, with: {progress: 2}}\n")
	start := time.Now()
	if _, err := (&engine.Runner{Store: restricted}).Apply(t.Context(), p, engine.ApplyOptions{RunID: "unlogged"}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > closeTimeout/2 {
		t.Errorf("the run took %s", d)
	}
	if events, next, err := s.ReadEvents("unlogged", 0); err != nil || len(events) != 0 || next != 0 {
		t.Errorf("ReadEvents = %v, %d, %v; want no log", events, next, err)
	}
}

// TestEventLogUnreachable: while the API server does not answer, writing events never blocks,
// and Close gives up after closeTimeout.
func TestEventLogUnreachable(t *testing.T) {
	setFor(t, &closeTimeout, 500*time.Millisecond)
	stuck := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stuck:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(stuck)
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{namespace: "runs", where: "namespace runs on nowhere", cs: cs, identity: "test"}
	w, err := s.OpenEventLog("cut-off")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 1000 {
		if _, err := w.Write(eventLine(t, event(engine.EventStepStarted, "a", fmt.Sprint(i)))); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("1000 writes took %s", d)
	}
	start = time.Now()
	if err := w.Close(); err == nil {
		t.Error("Close: no error")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Close took %s (closeTimeout %s)", d, closeTimeout)
	}
}
