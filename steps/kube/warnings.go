package kube

import "sync"

// warningRouter hands the API server's warnings (a deprecated API, a field it ignored) to the
// step that is using the client, as planrun warnings (⚠ on the terminal, step.warning events):
// client-go's default writes them through klog, as raw text across the progress line. Each
// warning is told once per step.
type warningRouter struct {
	mu    sync.Mutex
	owner any // the step's RunContext: a step that takes the client again keeps its seen
	warn  func(string)
	seen  map[string]bool
}

// HandleWarningHeader implements rest.WarningHandler.
func (w *warningRouter) HandleWarningHeader(code int, _ string, text string) {
	if code != 299 || text == "" {
		return // 299 is the only code a Warning header of the API server carries
	}
	w.mu.Lock()
	warn, seen := w.warn, w.seen[text]
	w.seen[text] = true
	w.mu.Unlock()
	if warn != nil && !seen {
		warn("API server: " + text)
	}
}

// to sends the warnings to warn from now on: the step (owner) that took the shared client.
func (w *warningRouter) to(owner any, warn func(string)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if owner == w.owner {
		return
	}
	w.owner, w.warn, w.seen = owner, warn, map[string]bool{}
}
