package kuberestore

import (
	"context"
	"net/http"
	"time"

	"planrun.dev/planrun/steps/kube"
)

// Objects carry no mark of the restore. Two annotations on every object (backup and run) made
// each stored object about a tenth larger, with its managedFields, and the restore that much
// slower, for a question the API server already answers: an object this step created has a
// managedFields entry of planrun's field manager and a creationTimestamp not before the step
// first started. That start is taken from the API server's clock (the Date of a response, so
// that a skewed local clock does not matter) and kept in the step's state, so that a resumed
// run recognises what its first attempt created before it died.

// stepState is what kube.restore checkpoints: when the step first started, by the server clock.
type stepState struct {
	Since time.Time `json:"since"`
}

// loadSince sets x.since from the step state, or from the server clock on the first attempt.
func (x *restorer) loadSince(ctx context.Context) error {
	var st stepState
	if ok, err := x.rc.LoadState(&st); err != nil {
		return err
	} else if ok && !st.Since.IsZero() {
		x.since = st.Since
		return nil
	}
	st.Since = x.serverNow(ctx)
	x.since = st.Since
	if x.rc.DryRun {
		return nil
	}
	return x.rc.SaveState(ctx, st)
}

// serverNow is the API server's time, to the second (creationTimestamp has no finer grain), or
// the local time a minute ago when the server sends no Date.
func (x *restorer) serverNow(ctx context.Context) time.Time {
	fallback := time.Now().Add(-time.Minute).Truncate(time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, x.rest.Get().AbsPath("/version").URL().String(), nil)
	if err != nil {
		return fallback
	}
	resp, err := x.rest.Client.Do(req)
	if err != nil {
		return fallback
	}
	resp.Body.Close()
	t, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return fallback
	}
	return t.UTC()
}

// createdHere reports whether the live object with metadata meta was created by this step.
func (x *restorer) createdHere(meta map[string]any) bool {
	ts, _ := meta["creationTimestamp"].(string)
	created, err := time.Parse(time.RFC3339, ts)
	if err != nil || created.Before(x.since) {
		return false
	}
	fields, _ := meta["managedFields"].([]any)
	for _, f := range fields {
		if m, ok := f.(map[string]any); ok && m["manager"] == kube.FieldManager {
			return true
		}
	}
	return false
}
