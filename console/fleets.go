package console

import (
	"context"
	"errors"
	"net/http"
	"time"

	"planrun.dev/planrun/fleet"
)

type fleetRow struct {
	R        *fleet.Record
	Counts   map[fleet.TargetState]int
	Alive    bool
	Duration string
}

type fleetsView struct {
	Fleets []fleetRow
}

type fleetView struct {
	fleetRow
	Targets []targetRow
}

type targetRow struct {
	T        *fleet.TargetRecord
	Duration string
}

var errNoFleets = errors.New("this console was started without a fleet store")

func summarize(r *fleet.Record) fleetRow {
	row := fleetRow{R: r, Counts: map[fleet.TargetState]int{}}
	for _, t := range r.Targets {
		row.Counts[t.State]++
	}
	// A scheduler says it is alive every 15 s; a minute of silence means it is gone.
	row.Alive = r.Scheduler != nil && time.Since(r.Scheduler.Beat) < time.Minute
	return row
}

func (s *Server) fleets(ctx context.Context) (*fleetsView, error) {
	if s.opts.Fleets == nil {
		return nil, errNoFleets
	}
	recs, err := s.opts.Fleets.List(ctx)
	if err != nil {
		return nil, err
	}
	v := &fleetsView{}
	for i := len(recs) - 1; i >= 0; i-- {
		v.Fleets = append(v.Fleets, summarize(recs[i]))
	}
	return v, nil
}

func (s *Server) fleet(ctx context.Context, name string) (*fleetView, error) {
	if s.opts.Fleets == nil {
		return nil, errNoFleets
	}
	r, err := s.opts.Fleets.Load(ctx, name)
	if err != nil {
		return nil, err
	}
	v := &fleetView{fleetRow: summarize(r)}
	now := time.Now()
	for _, t := range r.Targets {
		row := targetRow{T: t}
		if t.Started != nil {
			end := now
			if t.Finished != nil {
				end = *t.Finished
			}
			row.Duration = shortDuration(end.Sub(*t.Started))
		}
		v.Targets = append(v.Targets, row)
	}
	return v, nil
}

func (s *Server) fleetsPage(w http.ResponseWriter, r *http.Request) {
	v, err := s.fleets(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, "fleets", v)
}

func (s *Server) fleetsStream(w http.ResponseWriter, r *http.Request) {
	s.stream(w, r, func(ctx context.Context) (map[string]string, error) {
		v, err := s.fleets(ctx)
		if err != nil {
			return nil, err
		}
		return s.fragments(v, "fleets-rows")
	})
}

func (s *Server) fleetPage(w http.ResponseWriter, r *http.Request) {
	v, err := s.fleet(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, "fleet", v)
}

func (s *Server) fleetStream(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	s.stream(w, r, func(ctx context.Context) (map[string]string, error) {
		v, err := s.fleet(ctx, name)
		if err != nil {
			return nil, err
		}
		return s.fragments(v, "fleet-summary", "fleet-targets")
	})
}
