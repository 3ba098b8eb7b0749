package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"planrun.dev/planrun/console"
	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/fleet"
	_ "planrun.dev/planrun/steps" // the plan's step types
)

const token = "test-token-0123456789"

// newConsole serves a console over a state folder holding one finished run whose step wrote
// a file, on a real loopback server.
func newConsole(t *testing.T) (*httptest.Server, *engine.DirStore) {
	t.Helper()
	dir := t.TempDir()
	plan := filepath.Join(dir, "plan.yaml")
	body := "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: web, version: 2}\nparams:\n  who: {type: string, default: '<b>x</b>'}\nsteps:\n" +
		"  - {id: say, type: exec, with: {command: [sh, -c, 'echo \"<script>alert(1)</script>\"']}}\n"
	if err := os.WriteFile(plan, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	store := engine.NewDirStore(filepath.Join(dir, "runs"))
	p, err := engine.Load(plan, engine.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (&engine.Runner{Store: store, Actor: "alice"}).Apply(context.Background(), p, engine.ApplyOptions{RunID: "r1"}); err != nil {
		t.Fatal(err)
	}
	srv, err := console.New(console.Options{Store: store, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts, store
}

func TestTokenRequired(t *testing.T) {
	ts, _ := newConsole(t)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, hdr map[string]string) *http.Response {
		req, _ := http.NewRequest("GET", ts.URL+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	cases := []struct {
		name string
		path string
		hdr  map[string]string
		code int
	}{
		{"no token", "/runs", nil, http.StatusUnauthorized},
		{"no token, a run", "/runs/r1", nil, http.StatusUnauthorized},
		{"no token, a file", "/runs/r1/files/say/stdout.log", nil, http.StatusUnauthorized},
		{"no token, static", "/static/console.css", nil, http.StatusUnauthorized},
		{"wrong token", "/runs?token=nope", nil, http.StatusUnauthorized},
		{"wrong bearer", "/runs", map[string]string{"Authorization": "Bearer nope"}, http.StatusUnauthorized},
		{"bearer", "/runs", map[string]string{"Authorization": "Bearer " + token}, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if resp := get(tc.path, tc.hdr); resp.StatusCode != tc.code {
				t.Fatalf("%s: %d, want %d", tc.path, resp.StatusCode, tc.code)
			}
		})
	}
	// The token in the URL becomes a cookie, and the URL loses it.
	resp := get("/runs/r1?token="+token+"&step=say", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/runs/r1?step=say" {
		t.Fatalf("token URL: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := get("//evil.example/x?token="+token, nil); resp.Header.Get("Location") != "/" {
		t.Fatalf("a token URL whose path names another host redirects to %q", resp.Header.Get("Location"))
	}
	c := resp.Cookies()
	if len(c) != 1 || c[0].Value != token || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode || !strings.HasPrefix(c[0].Name, "planrun_console_") {
		t.Fatalf("cookie %+v", c)
	}
	if resp := get("/runs/r1", map[string]string{"Cookie": c[0].Name + "=" + token}); resp.StatusCode != http.StatusOK {
		t.Fatalf("with the cookie: %d", resp.StatusCode)
	}
	if resp := get("/runs/r1", map[string]string{"Cookie": c[0].Name + "=nope"}); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("with a wrong cookie: %d", resp.StatusCode)
	}
}

func TestPagesAndFiles(t *testing.T) {
	ts, store := newConsole(t)
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	get := func(path string) (int, http.Header, string) {
		resp, err := client.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	if code, _, _ := get("/?token=" + token); code != http.StatusOK {
		t.Fatalf("login: %d", code)
	}
	code, _, body := get("/runs")
	if code != 200 || !strings.Contains(body, `href="/runs/r1"`) || !strings.Contains(body, "Succeeded") || !strings.Contains(body, "alice") {
		t.Fatalf("runs: %d\n%s", code, body)
	}
	if _, _, body := get("/runs?status=Failed"); strings.Contains(body, `href="/runs/r1"`) || !strings.Contains(body, "No runs match the filter (1 in all)") {
		t.Fatalf("filtered runs:\n%s", body)
	}
	code, hdr, body := get("/runs/r1?step=say")
	if code != 200 || !strings.Contains(hdr.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("run page: %d %v", code, hdr)
	}
	for _, want := range []string{`class="line hi"`, "apply by alice", `<code>&#34;&lt;b&gt;x&lt;/b&gt;&#34;</code>`, `href="/runs/r1/files/say/stdout.log"`, `class="bar o-succeeded"`} {
		if !strings.Contains(body, want) {
			t.Errorf("run page lacks %s", want)
		}
	}
	if strings.Contains(body, "<b>x</b>") || strings.Contains(body, "action-cancel") || strings.Contains(body, "action-rollback") {
		t.Errorf("run page shows a param unescaped, cancel for a finished run, or rollback with no launcher")
	}

	// A step's file is text, in a sandbox, whatever it holds.
	code, hdr, body = get("/runs/r1/files/say/stdout.log")
	if code != 200 || hdr.Get("Content-Type") != "text/plain; charset=utf-8" || hdr.Get("Content-Security-Policy") != "sandbox" || !strings.HasSuffix(body, "\n<script>alert(1)</script>\n") {
		t.Fatalf("file: %d %v %q", code, hdr, body)
	}
	if _, hdr, _ := get("/runs/r1/files/say/stdout.log?download=1"); hdr.Get("Content-Disposition") != `attachment; filename="r1_say_stdout.log"` {
		t.Fatalf("download: %v", hdr)
	}
	// Names that leave the folder, links planted in it, unknown steps and runs: 404.
	dir, _ := store.ArtifactDir("r1", "say")
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/runs/r1/files/say/link", "/runs/r1/files/say/" + url.PathEscape("../../plan.yaml"), "/runs/r1/files/say/..%2f..%2fjournal.json", "/runs/r1/files/nope/stdout.log", "/runs/nope", "/runs/r1/confirm/explode", "/fleets"} {
		if code, _, body := get(p); code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404\n%.300s", p, code, body)
		}
	}

	// Writes from another origin are refused; a cancel of a run nobody runs is a conflict.
	req, _ := http.NewRequest("POST", ts.URL+"/runs/r1/cancel", strings.NewReader("by=mallory"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "http://evil.example")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if resp, err := client.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site POST: %v %v", resp.StatusCode, err)
	}
	resp, err := client.PostForm(ts.URL+"/runs/r1/cancel", url.Values{"by": {"bob"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(b), "run r1 is Succeeded and no runner holds it: it cannot be cancelled now") {
		t.Fatalf("cancel of a finished run: %d\n%s", resp.StatusCode, b)
	}
}

func TestFleetView(t *testing.T) {
	dir := t.TempDir()
	fleets := &fleet.DirStore{Dir: filepath.Join(dir, ".fleets")}
	now := time.Now().UTC()
	rec := &fleet.Record{Name: "tenants", Plan: "kamaji.yaml", PlanName: "kamaji-datastore-migration", Created: now,
		Targets: []*fleet.TargetRecord{
			{Name: "t-00", Wave: 0, RunID: "tenants.t-00", State: fleet.Succeeded, Status: "Succeeded", Started: &now, Finished: &now},
			{Name: "t-01", Wave: 1, RunID: "tenants.t-01", State: fleet.Failed, Status: "RolledBack", Error: "step \"move\" failed: <boom>", Started: &now, Finished: &now},
			{Name: "t-02", Wave: 1, State: fleet.Waiting},
		}}
	if err := fleets.Create(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	srv, err := console.New(console.Options{Store: engine.NewDirStore(filepath.Join(dir, "runs")), Fleets: fleets, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	get := func(path string) (int, string) {
		req, _ := http.NewRequest("GET", ts.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/fleets"); code != 200 || !strings.Contains(body, `href="/fleets/tenants"`) || !strings.Contains(body, "kamaji-datastore-migration") {
		t.Fatalf("fleets: %d\n%s", code, body)
	}
	code, body := get("/fleets/tenants")
	for _, want := range []string{`href="/runs/tenants.t-00"`, "(RolledBack)", "&lt;boom&gt;", ">t-02<", "Waiting"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("fleet page (%d) lacks %s", code, want)
		}
	}
	if code, _ := get("/fleets/nope"); code != http.StatusNotFound {
		t.Errorf("unknown fleet: %d", code)
	}
}

// TestPendingStopShown: while its runner has not acted on a stop request yet, the run page says
// who asked and offers no second cancel.
func TestPendingStopShown(t *testing.T) {
	ts, store := newConsole(t)
	lock, err := store.Lock(context.Background(), "r1", engine.LockOptions{}) // a live runner
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	j, err := store.Load(context.Background(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	j.Status = engine.RunRunning // as a resumed run is
	if err := store.Save(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	page := func() string {
		req, _ := http.NewRequest("GET", ts.URL+"/runs/r1", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if body := page(); !strings.Contains(body, `id="action-cancel"`) || strings.Contains(body, "stop-pending") {
		t.Fatalf("a held run without a request:\n%s", body)
	}
	if err := engine.CancelRun(context.Background(), store, "r1", "bob"); err != nil {
		t.Fatal(err)
	}
	if body := page(); strings.Contains(body, `id="action-cancel"`) || !strings.Contains(body, "requested by bob at") {
		t.Fatalf("a held run with a request:\n%s", body)
	}
}
