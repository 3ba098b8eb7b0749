package console

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"unicode"

	"planrun.dev/planrun/engine"
)

// What each action does, as the confirmation page says it.
var actionText = map[string]struct{ Title, Explain, Button string }{
	engine.ActionResume:   {"Resume", "A new runner on the console's machine continues the run from where it stopped: steps that completed are not run again; the step that was running runs again.", "Resume the run"},
	engine.ActionRollback: {"Roll back", "A new runner undoes the run's completed steps in reverse order, with their rollback steps. What the run changed is changed back; the run ends RolledBack.", "Roll the run back"},
	engine.ActionCancel:   {"Cancel", "The run's runner is asked to stop at its next safe point, as Ctrl-C in its terminal would: the running step is stopped and stays to be run again; nothing is rolled back. Resume continues the run; roll back undoes it.", "Stop the run"},
}

// flashes are the notes a run page shows after an action.
var flashes = map[string]string{
	engine.ActionResume:   "A runner took the run up: it continues.",
	engine.ActionRollback: "A runner took the run up to roll it back.",
	engine.ActionCancel:   "Stop requested: the run stops at its next safe point.",
}

type confirmView struct {
	J      *engine.Journal
	Action string
	Text   struct{ Title, Explain, Button string }
	By     string
	Err    string
	Holder string
}

func (s *Server) confirmPage(w http.ResponseWriter, r *http.Request) {
	s.confirm(w, r, http.StatusOK, "", s.opts.Actor)
}

func (s *Server) confirm(w http.ResponseWriter, r *http.Request, code int, errText, by string) {
	action := r.PathValue("action")
	text, ok := actionText[action]
	if !ok {
		s.fail(w, r, fmt.Errorf("no action %q: %w", action, errNoSuchAction))
		return
	}
	ctx := r.Context()
	j, err := s.opts.Store.Load(ctx, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v := confirmView{J: j, Action: action, Text: text, By: by, Err: errText}
	if ls, err := s.opts.Store.LockState(ctx, j.RunID); err == nil {
		v.Holder = runnerText(ls)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	s.renderTo(w, "confirm", v)
}

// act carries out a confirmed action, on behalf of the name the operator gave.
func (s *Server) act(w http.ResponseWriter, r *http.Request) {
	action, runID := r.PathValue("action"), r.PathValue("id")
	if _, ok := actionText[action]; !ok {
		s.fail(w, r, fmt.Errorf("no action %q: %w", action, errNoSuchAction))
		return
	}
	// The journal says who asked and where from: the name typed, and the console's own user.
	by := s.opts.Actor + " (console)"
	if name := cleanName(r.PostFormValue("by")); name != "" && name != s.opts.Actor {
		by = name + " (console of " + s.opts.Actor + ")"
	}
	if !s.claim(runID) {
		s.confirm(w, r, http.StatusConflict, fmt.Sprintf("an action on run %s is being carried out; wait for it", runID), r.PostFormValue("by"))
		return
	}
	defer s.release(runID)
	ctx := r.Context()
	j, err := s.opts.Store.Load(ctx, runID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ls, err := s.opts.Store.LockState(ctx, runID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !s.allowed(j, ls)[action] {
		s.confirm(w, r, http.StatusConflict, fmt.Sprintf("run %s is %s%s: it cannot be %s now", runID, j.Status, heldNote(ls), pastTense[action]), r.PostFormValue("by"))
		return
	}
	if action == engine.ActionCancel {
		err = engine.CancelRun(ctx, s.opts.Store, runID, by)
	} else {
		err = s.opts.Launcher.Launch(ctx, LaunchRequest{Action: action, RunID: runID, By: by, BreakStaleLock: ls.Status == engine.LockStale})
	}
	if err != nil {
		s.log.Warn("console action failed", "action", action, "run", runID, "err", err)
		s.confirm(w, r, http.StatusConflict, err.Error(), r.PostFormValue("by"))
		return
	}
	s.log.Info("console action", "action", action, "run", runID, "by", by)
	http.Redirect(w, r, "/runs/"+url.PathEscape(runID)+"?done="+action, http.StatusSeeOther)
}

var pastTense = map[string]string{engine.ActionResume: "resumed", engine.ActionRollback: "rolled back", engine.ActionCancel: "cancelled"}

func heldNote(ls engine.LockState) string {
	if ls.Status == engine.LockHeld {
		return " and a runner holds it (" + ls.Holder.String() + ")"
	}
	return " and no runner holds it"
}

var errNoSuchAction = fmt.Errorf("unknown action")

// cleanName keeps a name the operator typed to one short line of printable text.
func cleanName(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > 80 {
		s = s[:80]
	}
	return strings.ToValidUTF8(s, "")
}
