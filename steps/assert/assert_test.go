package assert_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
	_ "planrun.dev/planrun/steps/assert"
)

func TestAssert(t *testing.T) {
	cases := []struct {
		name     string
		with     string
		dryRun   bool
		wantErr  string         // "" : the step succeeds
		wantOut  map[string]any // outputs of the step (JSON-compared)
		wantWarn string         // the step.warning event's message, "" : none
	}{
		{name: "holds", with: `{that: params.n < 3}`, wantOut: map[string]any{}},
		{name: "fails", with: `{that: params.n > 3}`, wantErr: `step "s" failed: assertion failed: params.n > 3`},
		{name: "fails with message", with: `{that: params.n > 3, message: "n is ${{ params.n }}"}`, wantErr: `step "s" failed: assertion failed: n is 2 (params.n > 3)`},
		{name: "warn holds", with: `{that: params.n < 3, warn: true, message: never}`, wantOut: map[string]any{"ok": true}},
		{name: "warn", with: `{that: params.n > 3, warn: true, message: "Pod limit: 3 exceeded, found: ${{ params.n }}"}`,
			wantOut:  map[string]any{"ok": false, "warning": "Pod limit: 3 exceeded, found: 2 (params.n > 3)"},
			wantWarn: "Pod limit: 3 exceeded, found: 2 (params.n > 3)"},
		{name: "warn without message", with: `{that: params.n > 3, warn: true}`,
			wantOut: map[string]any{"ok": false, "warning": "params.n > 3"}, wantWarn: "params.n > 3"},
		{name: "warn in a dry run", with: `{that: params.n > 3, warn: true}`, dryRun: true,
			wantOut: map[string]any{"ok": false, "warning": "params.n > 3"}, wantWarn: "params.n > 3"},
		{name: "not a boolean", with: `{that: params.n, warn: true}`, wantErr: `step "s" failed`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := plantest.Load(t, "params:\n  n: {type: int, default: 2}\nsteps:\n  - {id: s, type: assert, with: "+tc.with+"}\n  - {id: after, type: assert, with: {that: 'true'}}\n", plantest.Options{})
			if err != nil {
				if tc.wantErr != "" && strings.Contains(err.Error(), "that") {
					return // refused at load time: an expression that cannot be a boolean
				}
				t.Fatal(err)
			}
			var warnings []string
			r := &engine.Runner{Store: engine.NewDirStore(filepath.Join(t.TempDir(), "runs")),
				Observer: engine.ObserverFunc(func(e engine.Event) {
					if e.Type == engine.EventStepWarning {
						warnings = append(warnings, e.StepID+": "+e.Message)
					}
				})}
			j, err := r.Apply(context.Background(), p, engine.ApplyOptions{RunID: "r", DryRun: tc.dryRun})
			if tc.wantErr != "" {
				plantest.WantError(t, err, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			rec := j.Step("s")
			if rec.Status != engine.StepSucceeded || j.Step("after").Status != engine.StepSucceeded {
				t.Fatalf("steps %s, %s; want both Succeeded", rec.Status, j.Step("after").Status)
			}
			if got, want := asJSON(rec.Outputs), asJSON(tc.wantOut); got != want {
				t.Errorf("outputs %s, want %s", got, want)
			}
			var want []string
			if tc.wantWarn != "" {
				want = []string{"s: " + tc.wantWarn}
			}
			if strings.Join(warnings, "\n") != strings.Join(want, "\n") {
				t.Errorf("warning events %q, want %q", warnings, want)
			}
		})
	}
}

func asJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
