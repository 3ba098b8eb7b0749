package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

var funcs = template.FuncMap{
	"ts": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"tsp": func(v any) string {
		t := asTime(v)
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("15:04:05Z")
	},
	"lower": strings.ToLower,
	"pct": func(done, total int64) int64 {
		if total <= 0 {
			return 0
		}
		return min(100, done*100/total)
	},
	"join": strings.Join,
	// pe escapes one path segment (ids may hold '?', '#', '%'); pp each segment of a path.
	"pe": url.PathEscape,
	"pp": func(p string) string {
		parts := strings.Split(p, "/")
		for i := range parts {
			parts[i] = url.PathEscape(parts[i])
		}
		return strings.Join(parts, "/")
	},
	"qe":  url.QueryEscape,
	"rfc": func(t any) string { return asTime(t).UTC().Format(time.RFC3339) },
	"now": func() string { return time.Now().UTC().Format(time.RFC3339Nano) },
}

// asTime takes a time or a pointer to one (the journal has both).
func asTime(v any) time.Time {
	switch t := v.(type) {
	case time.Time:
		return t
	case *time.Time:
		if t != nil {
			return *t
		}
	}
	return time.Time{}
}

// render writes a whole page.
func (s *Server) render(w http.ResponseWriter, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	s.renderTo(w, name, data)
}

func (s *Server) renderTo(w io.Writer, name string, data any) {
	var buf bytes.Buffer
	if err := s.tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		s.log.Error("console template", "template", name, "err", err)
		fmt.Fprintf(w, "template %s: %v", name, err)
		return
	}
	_, _ = buf.WriteTo(w)
}

// fragments renders the named templates, which the page has as elements of those ids.
func (s *Server) fragments(data any, names ...string) (map[string]string, error) {
	out := make(map[string]string, len(names))
	for _, n := range names {
		var buf bytes.Buffer
		if err := s.tmpl.ExecuteTemplate(&buf, n, data); err != nil {
			return nil, err
		}
		out[n] = buf.String()
	}
	return out, nil
}

// heartbeat keeps proxies and the browser from closing a quiet stream.
const heartbeat = 15 * time.Second

// stream sends the fragments render returns as Server-Sent Events, those that changed only,
// every Refresh, until the browser goes. The page replaces the element of each id it receives.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, render func(context.Context) (map[string]string, error)) {
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sent := map[string]string{}
	ctx := r.Context()
	tick := time.NewTicker(s.opts.Refresh)
	defer tick.Stop()
	quiet := time.Now()
	for {
		parts, err := render(ctx)
		changed := map[string]string{}
		if err != nil {
			changed["stream-error"] = template.HTMLEscapeString(err.Error())
		} else {
			changed["stream-error"] = ""
			for k, v := range parts {
				if sent[k] != v {
					changed[k] = v
				}
			}
		}
		if changed["stream-error"] == sent["stream-error"] {
			delete(changed, "stream-error")
		}
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if len(changed) > 0 {
			data, _ := json.Marshal(changed)
			if _, err := fmt.Fprintf(w, "event: fragments\ndata: %s\n\n", data); err != nil {
				return
			}
			for k, v := range changed {
				sent[k] = v
			}
			quiet = time.Now()
		} else if time.Since(quiet) > heartbeat {
			if _, err := io.WriteString(w, ": keep-alive\n\n"); err != nil {
				return
			}
			quiet = time.Now()
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
