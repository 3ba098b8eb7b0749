package console

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sort"
	"time"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/fleet"
	"planrun.dev/planrun/internal/stepfiles"
)

// runView is what the run page shows.
type runView struct {
	J        *engine.Journal
	Lock     engine.LockState
	Live     bool // a runner holds the run now
	Duration string
	Holder   string
	Can      map[string]bool // the actions offered
	Progress []progressLine
	Timeline svgTimeline
	HasLog   bool
	Steps    []stepView
	Plan     []planLine
	Params   []paramView
	Step     string // the step highlighted in the plan
	Flash    string
	Actions  []engine.OperatorAction
	// StopPending is a stop request the runner has not acted on yet.
	StopPending *engine.OperatorAction
}

type stepView struct {
	Rec      *engine.StepRecord
	Label    string
	Duration string
	Since    *time.Time // a step running now: its duration counts up in the page
	When     string
	Outputs  string
	Files    []string
	PlanLine int
}

type paramView struct{ Name, Value string }

// maxShownOutputs bounds the outputs shown inline; the journal has them whole.
const maxShownOutputs = 64 << 10

// view builds the run page's data from a followed run.
func (s *Server) view(ctx context.Context, rs *runState, step string) (*runView, error) {
	j, ls, err := rs.load(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	v := &runView{J: j, Lock: ls, Live: ls.Status == engine.LockHeld, Step: step, HasLog: rs.hasLog}
	v.Holder = runnerText(ls)
	end := j.Updated
	switch {
	case j.Finished != nil:
		end = *j.Finished
	case v.Live:
		end = now
	}
	v.Duration = shortDuration(end.Sub(j.Started))
	v.Can = s.allowed(j, ls)
	if sr, ok := s.opts.Store.(engine.StopRequester); ok && v.Live {
		if req, err := sr.StopRequest(ctx, j.RunID); err == nil && req != nil {
			v.StopPending = req
			v.Can[engine.ActionCancel] = false // asked already: the runner stops at its next safe point
		}
	}
	v.Actions = j.Actions

	tl := &rs.timeline
	if !rs.hasLog {
		tl = fromJournal(j)
	}
	var order []string
	labels := map[string]string{}
	for _, r := range j.Steps {
		if r.RollbackOf != "" {
			continue
		}
		key, label := laneKey(engine.Event{StepID: r.ID, Hook: r.Hook})
		order = append(order, key)
		labels[key] = label
	}
	v.Timeline = tl.layout(order, labels, j.Started, end)
	if v.Live {
		for _, p := range rs.progress {
			v.Progress = append(v.Progress, p)
		}
		sort.Slice(v.Progress, func(a, b int) bool { return v.Progress[a].Label < v.Progress[b].Label })
	}

	src, _ := s.opts.Store.PlanSource(ctx, j.RunID)
	lines, positions := planSource(src, step)
	v.Plan = lines
	for _, r := range j.Steps {
		sv := stepView{Rec: r, Label: r.ID, PlanLine: positions[r.ID]}
		if r.Hook != "" {
			sv.Label = fmt.Sprintf("[%s] %s", r.Hook, r.ID)
		}
		if r.RollbackOf != "" {
			sv.Label = fmt.Sprintf("%s (undoes %s)", r.ID, r.RollbackOf)
		}
		if r.Started != nil {
			switch {
			case r.Finished != nil:
				sv.Duration = shortDuration(r.Finished.Sub(*r.Started))
			case v.Live && r.Status == engine.StepRunning:
				sv.Since = r.Started
			default:
				sv.Duration = shortDuration(j.Updated.Sub(*r.Started))
			}
		}
		if r.When != nil {
			sv.When = fmt.Sprint(*r.When)
		}
		if len(r.Outputs) > 0 {
			sv.Outputs = prettyJSON(r.Outputs)
		}
		sv.Files = s.stepFiles(j.RunID, r)
		v.Steps = append(v.Steps, sv)
	}
	names := make([]string, 0, len(j.Params))
	for k := range j.Params {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v.Params = append(v.Params, paramView{Name: k, Value: compactJSON(j.Params[k])})
	}
	return v, nil
}

// stepFiles lists a step's files, for steps that ran: ArtifactDir makes the folder, and a
// console only looks.
func (s *Server) stepFiles(runID string, r *engine.StepRecord) []string {
	if r.Started == nil {
		return nil
	}
	dir, err := s.opts.Store.ArtifactDir(runID, r.ID)
	if err != nil {
		return nil
	}
	names, _ := stepfiles.List(dir)
	return names
}

func prettyJSON(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprint(v)
	}
	if len(b) > maxShownOutputs {
		return string(b[:maxShownOutputs]) + "\n… (cut; planrun status RUN -o json has it whole)"
	}
	return string(b)
}

func compactJSON(v any) string {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // html/template escapes
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	return string(bytes.TrimSpace(buf.Bytes()))
}

// allowed says which actions the run's state admits now.
func (s *Server) allowed(j *engine.Journal, ls engine.LockState) map[string]bool {
	held := ls.Status == engine.LockHeld
	_, stoppable := s.opts.Store.(engine.StopRequester)
	can := map[string]bool{engine.ActionCancel: held && stoppable}
	if s.opts.Launcher != nil && !held && ls.Status != engine.LockForeign && !j.DryRun {
		switch j.Status {
		// Not Pending: a submitted run is its in-cluster Job's to run. Not RollingBack: a
		// rollback stopped half-way is finished by rolling back.
		case engine.RunRunning, engine.RunInterrupted, engine.RunFailed:
			can[engine.ActionResume] = true
		}
		if j.Status != engine.RunRolledBack {
			can[engine.ActionRollback] = true
		}
	}
	return can
}

// runnerText says who holds the run: a live runner, one that died (its lock is stale), or none.
func runnerText(ls engine.LockState) string {
	switch ls.Status {
	case engine.LockHeld:
		return ls.Holder.String()
	case engine.LockStale:
		if ls.Garbled {
			return "none: a runner died (its lock record is unreadable); resume or roll back takes its lock over"
		}
		return "none: the runner (" + ls.Holder.String() + ") died; resume or roll back takes its lock over"
	case engine.LockForeign:
		return "unknown: the lock is held from another host (" + ls.Holder.String() + "); check there"
	}
	return ""
}

func (s *Server) runPage(w http.ResponseWriter, r *http.Request) {
	rs := newRunState(s.opts.Store, r.PathValue("id"))
	v, err := s.view(r.Context(), rs, r.URL.Query().Get("step"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v.Flash = flashes[r.URL.Query().Get("done")]
	s.render(w, "run", v)
}

// runFragments are the parts of the run page that change, rendered.
func (s *Server) runFragments(ctx context.Context, rs *runState, step string) (map[string]string, error) {
	v, err := s.view(ctx, rs, step)
	if err != nil {
		return nil, err
	}
	return s.fragments(v, "run-summary", "run-progress", "run-timeline", "run-steps")
}

func (s *Server) runStream(w http.ResponseWriter, r *http.Request) {
	rs := newRunState(s.opts.Store, r.PathValue("id"))
	step := r.URL.Query().Get("step")
	s.stream(w, r, func(ctx context.Context) (map[string]string, error) {
		return s.runFragments(ctx, rs, step)
	})
}

// stepFile shows one file of a step (as text, never as a page of its own: a command's output
// must not run as script in the console's origin), or downloads it.
func (s *Server) stepFile(w http.ResponseWriter, r *http.Request) {
	runID, stepID, name := r.PathValue("id"), r.PathValue("step"), r.PathValue("name")
	j, err := s.opts.Store.Load(r.Context(), runID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if j.Step(stepID) == nil {
		s.fail(w, r, fmt.Errorf("run %s has no step %q: %w", runID, stepID, os.ErrNotExist))
		return
	}
	dir, err := s.opts.Store.ArtifactDir(runID, stepID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f, st, err := stepfiles.OpenListed(dir, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "sandbox")
	if r.URL.Query().Has("download") {
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", downloadName(runID, stepID, name)))
	}
	http.ServeContent(w, r, "", st.ModTime(), f)
}

// downloadName is a file name without anything a browser could read as a path.
func downloadName(parts ...string) string {
	var b []byte
	for i, p := range parts {
		if i > 0 {
			b = append(b, '_')
		}
		for _, c := range []byte(p) {
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.':
				b = append(b, c)
			default:
				b = append(b, '_')
			}
		}
	}
	return string(b)
}

// fail answers with a status that matches the error and its one line.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, engine.ErrRunNotFound), errors.Is(err, os.ErrNotExist), errors.Is(err, stepfiles.ErrNotListed), errors.Is(err, fleet.ErrNotFound), errors.Is(err, errNoSuchAction), errors.Is(err, errNoFleets):
		code = http.StatusNotFound
	case errors.Is(err, engine.ErrNotRunning):
		code = http.StatusConflict
	}
	if code == http.StatusInternalServerError {
		s.log.Warn("console request failed", "path", r.URL.Path, "err", err)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	s.renderTo(w, "error", map[string]any{"Code": code, "Text": http.StatusText(code), "Err": err.Error()})
}
