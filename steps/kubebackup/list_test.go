package kubebackup

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/storage"
)

func item(ns, name string) string {
	return fmt.Sprintf(`{"metadata":{"name":%q,"namespace":%q},"data":{"k":"v"}}`, name, ns)
}

// fakeLister serves the given responses to successive list requests of configmaps.
func fakeLister(t *testing.T, responses []func(w http.ResponseWriter, r *http.Request)) (*lister, *[]string) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		i := len(seen)
		seen = append(seen, r.URL.Query().Get("continue"))
		mu.Unlock()
		if r.URL.Path != "/api/v1/configmaps" || r.URL.Query().Get("limit") != "500" || i >= len(responses) {
			http.Error(w, "unexpected request "+r.URL.String(), http.StatusBadRequest)
			return
		}
		responses[i](w, r)
	}))
	t.Cleanup(srv.Close)
	cfg := &rest.Config{Host: srv.URL}
	cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	client, err := rest.UnversionedRESTClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &lister{rest: client}, &seen
}

func page(cont string, items ...string) func(w http.ResponseWriter, r *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"9","continue":%q},"items":[%s]}`, cont, strings.Join(items, ","))
	}
}

func expired(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusGone)
	fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"The provided continue parameter is too old to display a consistent list result.","reason":"Expired","code":410}`)
}

var cmTarget = target{gvr: schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, kind: "ConfigMap", namespaced: true}

// An expired continue token restarts the list from the start, throwing away what it wrote.
func TestListRestartsAfterExpiredContinue(t *testing.T) {
	l, seen := fakeLister(t, []func(http.ResponseWriter, *http.Request){
		page("tok1", item("a", "1"), item("a", "2")),
		expired,
		page("", item("a", "1"), item("b", "3")),
	})
	loc := storage.OpenLocal(t.TempDir())
	j := &job{target: cmTarget}
	prog := &progress{report: func(engine.Progress) {}}
	if err := l.backup(context.Background(), j, listOptions{loc: loc}, prog); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(*seen, ","); got != ",tok1," {
		t.Fatalf("requests with continue %q", got)
	}
	if j.count != 2 || prog.done != 2 || prog.nbytes != j.bytes || len(j.files) != 2 || j.files[0].Namespace != "a" || j.files[0].Count != 1 || j.files[1].Namespace != "b" {
		t.Fatalf("job %+v, progress %d", j, prog.done)
	}
	m := &archive.Manifest{Resources: []archive.Resource{{Version: "v1", Resource: "configmaps", Files: j.files}}}
	if err := archive.WriteManifest(context.Background(), loc, m); err != nil {
		t.Fatal(err)
	}
	if _, err := archive.Verify(context.Background(), loc, nil); err != nil {
		t.Fatal(err)
	}
}

func TestListErrors(t *testing.T) {
	l, _ := fakeLister(t, []func(http.ResponseWriter, *http.Request){page("", item("a", "1"), item("b", "2"), item("a", "3"))})
	err := l.backup(context.Background(), &job{target: cmTarget}, listOptions{loc: storage.OpenLocal(t.TempDir())}, &progress{report: func(engine.Progress) {}})
	if err == nil || err.Error() != `list configmaps: objects of namespace "a" came out of order` {
		t.Fatalf("got %v", err)
	}

	l, _ = fakeLister(t, []func(http.ResponseWriter, *http.Request){expired, expired, expired, expired, expired, expired})
	err = l.backup(context.Background(), &job{target: cmTarget}, listOptions{loc: storage.OpenLocal(t.TempDir())}, &progress{report: func(engine.Progress) {}})
	if err == nil || !strings.Contains(err.Error(), "list configmaps: The provided continue parameter is too old") {
		t.Fatalf("got %v", err)
	}

	truncated := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"ConfigMapList","items":[`+item("a", "1")+`,{"meta`)
	}
	l, _ = fakeLister(t, []func(http.ResponseWriter, *http.Request){truncated})
	err = l.backup(context.Background(), &job{target: cmTarget}, listOptions{loc: storage.OpenLocal(t.TempDir())}, &progress{report: func(engine.Progress) {}})
	if err == nil || !engine.IsTransient(err) || !strings.Contains(err.Error(), "list configmaps: reading the response: ") {
		t.Fatalf("got %v", err)
	}
}

// The total of progress: each list's size from its first page on (what it read and what the
// server says remains), exact once finished; none while a list of unknown size is under way
// before any was known; never gone once known, never below what was read.
func TestProgressEstimates(t *testing.T) {
	var got []engine.Progress
	p := &progress{report: func(pr engine.Progress) { got = append(got, pr) }}
	n := func(v int64) *int64 { return &v }
	a, b, c, d := &job{}, &job{}, &job{}, &job{}
	step := func(j *job, objects int64, remaining *int64, last bool) {
		j.count += objects
		j.bytes += objects * 10
		p.page(j, objects, objects*10, remaining, last)
	}
	step(a, 0, nil, true)          // an empty list: no report
	step(b, 5, nil, false)         // a selector: size unknown
	step(c, 10, n(90), false)      // 100 in all
	step(b, 5, nil, true)          // b finished: 10
	step(c, 10, n(80), false)      // 20 of 100 read
	step(d, 3, n(1000), false)     // d: an upper bound (objects left out)
	p.restart(d)                   // d's continue token expired
	j := &job{count: 7, bytes: 70} // finished by an earlier attempt
	p.resumed(j)
	step(c, 80, nil, true)
	want := []engine.Progress{
		{Done: 5, Bytes: 50},
		{Done: 15, Bytes: 150},
		{Done: 20, Total: 110, Bytes: 200},
		{Done: 30, Total: 110, Bytes: 300},
		{Done: 33, Total: 1113, Bytes: 330},
		{Done: 30, Total: 110, Bytes: 300},
		{Done: 37, Total: 117, Bytes: 370},
		{Done: 117, Total: 117, Bytes: 1170},
	}
	for i := range want {
		want[i].Unit = "objects"
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("reports\n%+v\nwant\n%+v", got, want)
	}

	// Back to nothing after a total was known: the total stays.
	got = nil
	p = &progress{report: func(pr engine.Progress) { got = append(got, pr) }}
	a = &job{}
	step(a, 4, n(6), false)
	p.restart(a)
	a.count, a.bytes = 0, 0
	if want := []engine.Progress{{Done: 4, Total: 10, Bytes: 40, Unit: "objects"}, {Done: 0, Total: 10, Unit: "objects"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("reports %+v, want %+v", got, want)
	}
}
