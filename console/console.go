// Package console is planrun's operator console in the browser: the runs of a store, one run's
// timeline, live progress, files and plan, and the actions an operator takes (resume, rollback,
// cancel), plus fleets. It is one room with one door: New returns an http.Handler. It reads the
// same state the CLI does, through engine.Store and fleet.Store, and knows nothing of Kubernetes.
package console

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/fleet"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Launcher starts a runner for a run on an operator's behalf: resume or rollback, in a process
// of its own that outlives the request and the console. It returns once the runner has the run
// (or failed to start: its one-line error).
type Launcher interface {
	Launch(ctx context.Context, req LaunchRequest) error
}

// LaunchRequest is what an operator asked a runner to do.
type LaunchRequest struct {
	Action string // engine.ActionResume or engine.ActionRollback
	RunID  string
	By     string
	// BreakStaleLock takes over the lock of a runner that died (the operator confirmed it).
	BreakStaleLock bool
}

// Options configure a console.
type Options struct {
	// Store is where runs are kept.
	Store engine.Store
	// Fleets is where fleets are kept; nil hides the fleet view.
	Fleets fleet.Store
	// Token is the access token: every request must carry it (the URL's ?token=, which sets a
	// cookie, the cookie, or Authorization: Bearer). Required: the console starts and stops runs.
	Token string
	// Launcher starts resume and rollback runners; nil offers only cancel.
	Launcher Launcher
	// Actor is who acts, as the journal records it, unless the operator names themselves.
	Actor string
	// Refresh is how often live views look for changes (default 1s).
	Refresh time.Duration
	Logger  *slog.Logger
}

// Server is the console.
type Server struct {
	opts Options
	tmpl *template.Template
	mux  *http.ServeMux
	log  *slog.Logger
	// busy are the runs an action is being carried out on: a second click (or a second
	// operator) must not start a second runner while the first one starts.
	busyMu sync.Mutex
	busy   map[string]bool
	cookie string
}

// New builds the console.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("console: no store")
	}
	if len(opts.Token) < 16 {
		return nil, errors.New("console: the access token must have at least 16 characters")
	}
	if opts.Refresh <= 0 {
		opts.Refresh = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Actor == "" {
		opts.Actor = engine.CurrentActor()
	}
	tmpl, err := template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(opts.Token))
	s := &Server{opts: opts, tmpl: tmpl, mux: http.NewServeMux(), log: opts.Logger, busy: map[string]bool{},
		// Cookies ignore ports: two consoles on one host each keep their own.
		cookie: "planrun_console_" + hex.EncodeToString(sum[:4])}
	s.routes()
	return s, nil
}

func (s *Server) routes() {
	static, _ := fs.Sub(staticFS, "static")
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/runs", http.StatusSeeOther)
	})
	s.mux.HandleFunc("GET /runs", s.runsPage)
	s.mux.HandleFunc("GET /runs/stream", s.runsStream)
	s.mux.HandleFunc("GET /runs/{id}", s.runPage)
	s.mux.HandleFunc("GET /runs/{id}/stream", s.runStream)
	s.mux.HandleFunc("GET /runs/{id}/files/{step}/{name...}", s.stepFile)
	s.mux.HandleFunc("GET /runs/{id}/confirm/{action}", s.confirmPage)
	s.mux.HandleFunc("POST /runs/{id}/{action}", s.act)
	s.mux.HandleFunc("GET /fleets", s.fleetsPage)
	s.mux.HandleFunc("GET /fleets/stream", s.fleetsStream)
	s.mux.HandleFunc("GET /fleets/{name}", s.fleetPage)
	s.mux.HandleFunc("GET /fleets/{name}/stream", s.fleetStream)
}

// ServeHTTP implements http.Handler: every request is checked for the token, every write for
// its origin.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// Nothing is loaded from elsewhere (air-gapped sites), and nothing may frame the console.
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if !s.authorized(w, r) {
		return
	}
	crossOrigin.Handler(s.mux).ServeHTTP(w, r)
}

// crossOrigin refuses writes that a page of another origin makes the browser send.
var crossOrigin = http.NewCrossOriginProtection()

// claim marks a run busy with an action; false if it already is.
func (s *Server) claim(runID string) bool {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	if s.busy[runID] {
		return false
	}
	s.busy[runID] = true
	return true
}

func (s *Server) release(runID string) {
	s.busyMu.Lock()
	defer s.busyMu.Unlock()
	delete(s.busy, runID)
}
