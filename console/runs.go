package console

import (
	"context"
	"net/http"
	"slices"
	"sort"
	"time"

	"planrun.dev/planrun/engine"
)

// runRow is one run in the runs list.
type runRow struct {
	ID, Plan   string
	Version    int
	Status     string
	Started    time.Time
	Duration   string
	Since      *time.Time // a run going on now: its duration counts up in the page
	Holder     string
	Err        string
	StartedBy  string
	Unreadable bool
}

type runsView struct {
	Rows          []runRow
	Plans         []string
	Statuses      []string
	Status, Plan  string
	Query         string
	Total         int
	FleetsEnabled bool
}

var allStatuses = []string{string(engine.RunPending), string(engine.RunRunning), string(engine.RunSucceeded), string(engine.RunFailed),
	string(engine.RunInterrupted), string(engine.RunRollingBack), string(engine.RunRolledBack), string(engine.RunRollbackFailed)}

// runs lists the runs, newest first, that match the filter.
func (s *Server) runs(ctx context.Context, status, plan string) (*runsView, error) {
	entries, err := s.opts.Store.List(ctx)
	if err != nil {
		return nil, err
	}
	v := &runsView{Statuses: allStatuses, Status: status, Plan: plan, Total: len(entries), FleetsEnabled: s.opts.Fleets != nil}
	plans := map[string]bool{}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		row := runRow{ID: e.RunID, Started: e.Time}
		if e.Journal == nil {
			row.Status, row.Unreadable = "Unreadable", true
			if e.Err != nil {
				row.Err = e.Err.Error()
			}
		} else {
			j := e.Journal
			row.Plan, row.Version, row.Status, row.Started, row.Err = j.Plan.Name, j.Plan.Version, string(j.Status), j.Started, j.Error
			plans[j.Plan.Name] = true
			if len(j.Actions) > 0 {
				row.StartedBy = j.Actions[0].By
			}
			end := j.Updated
			if j.Finished != nil {
				end = *j.Finished
			}
			if mayBeHeld(j.Status) {
				if ls, err := s.opts.Store.LockState(ctx, e.RunID); err == nil && ls.Status == engine.LockHeld {
					row.Holder = ls.Holder.String()
					row.Since = &j.Started
				}
			}
			if row.Since == nil {
				row.Duration = shortDuration(end.Sub(j.Started))
			}
		}
		if (status == "" || row.Status == status) && (plan == "" || row.Plan == plan) {
			v.Rows = append(v.Rows, row)
		}
	}
	for p := range plans {
		v.Plans = append(v.Plans, p)
	}
	sort.Strings(v.Plans)
	if status != "" && !slices.Contains(allStatuses, status) {
		v.Statuses = append(v.Statuses, status)
	}
	return v, nil
}

func (s *Server) runsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v, err := s.runs(r.Context(), q.Get("status"), q.Get("plan"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v.Query = q.Encode()
	s.render(w, "runs", v)
}

func (s *Server) runsStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.stream(w, r, func(ctx context.Context) (map[string]string, error) {
		v, err := s.runs(ctx, q.Get("status"), q.Get("plan"))
		if err != nil {
			return nil, err
		}
		return s.fragments(v, "runs-rows")
	})
}
