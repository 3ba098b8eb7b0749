package console

import (
	"strings"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
)

func TestTimelineFromEvents(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	events := []engine.Event{
		{Type: engine.EventRunStarted, Time: at(0)},
		{Type: engine.EventStepStarted, StepID: "a", Attempt: 1, Time: at(0)},
		{Type: engine.EventStepRetrying, StepID: "a", Attempt: 1, Time: at(2), Error: "boom"},
		{Type: engine.EventStepStarted, StepID: "a", Attempt: 2, Time: at(4)},
		{Type: engine.EventStepSucceeded, StepID: "a", Attempt: 2, Time: at(6)},
		{Type: engine.EventStepSkipped, StepID: "s", Time: at(6), Message: "when: false"},
		{Type: engine.EventStepStarted, StepID: "h", Hook: "PreBackup", Attempt: 1, Time: at(6)},
		{Type: engine.EventStepSucceeded, StepID: "h", Hook: "PreBackup", Time: at(7)},
		{Type: engine.EventStepStarted, StepID: "b", Attempt: 1, Time: at(7)},
		{Type: engine.EventRunFinished, Time: at(9)}, // stopped at a safe point: b stays to run again
		{Type: engine.EventRunStarted, Time: at(20)}, // resumed
		{Type: engine.EventStepStarted, StepID: "b", Attempt: 1, Time: at(20)},
		{Type: engine.EventStepFailed, StepID: "b", Attempt: 1, Time: at(21), Error: "no"},
		{Type: engine.EventStepStarted, StepID: "a", Rollback: true, Attempt: 1, Time: at(21)},
		{Type: engine.EventStepSucceeded, StepID: "a", Rollback: true, Time: at(22)},
		{Type: engine.EventStepStarted, StepID: "c", Attempt: 1, Time: at(22)}, // still running
	}
	var tl timeline
	for _, e := range events {
		tl.add(e)
	}
	got := map[string]string{}
	for _, l := range tl.lanes {
		var parts []string
		for _, s := range l.Spans {
			end := "open"
			if !s.End.IsZero() {
				end = s.End.Sub(t0).String()
			}
			parts = append(parts, s.Start.Sub(t0).String()+"-"+end+":"+s.Outcome)
		}
		got[l.Label] = strings.Join(parts, " ")
	}
	want := map[string]string{
		"a":             "0s-2s:retried 4s-6s:succeeded",
		"s":             "6s-6s:skipped",
		"[PreBackup] h": "6s-7s:succeeded",
		"b":             "7s-9s:interrupted 20s-21s:failed",
		"undo a":        "21s-22s:succeeded",
		"c":             "22s-open:running",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("lane %q: %s, want %s", k, got[k], w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("lanes %v", got)
	}

	// Laid out on the plan's order, with a step that never started, and the undo lane after.
	svg := tl.layout([]string{"a", "s", "h", "b", "c", "never"}, map[string]string{"never": "never"}, t0, at(30))
	var labels []string
	for _, r := range svg.Rows {
		labels = append(labels, r.Label)
	}
	if strings.Join(labels, ",") != "a,s,[PreBackup] h,b,c,never,undo a" {
		t.Fatalf("rows %q", labels)
	}
	a := svg.Rows[0].Bars
	if len(a) != 2 || a[0].X != tlLabels || a[1].X <= a[0].X+a[0].W || !strings.Contains(a[0].Title, "attempt 1: retried") || !strings.Contains(a[0].Title, "boom") {
		t.Fatalf("bars of a: %+v", a)
	}
	if c := svg.Rows[4].Bars[0]; c.X+c.W != tlWidth-10 {
		t.Errorf("a running attempt reaches the end of the axis: %+v", c)
	}
	if len(svg.Axis) < 3 || len(svg.Axis) > 9 || svg.Axis[0].Label != "start" {
		t.Errorf("axis %+v", svg.Axis)
	}
}

func TestTickEvery(t *testing.T) {
	for _, tc := range []struct {
		span, want time.Duration
	}{
		{3 * time.Second, time.Second},
		{45 * time.Second, 10 * time.Second},
		{7 * time.Minute, time.Minute},
		{5 * time.Hour, time.Hour},
		{30 * 24 * time.Hour, 30 * 24 * time.Hour / 8},
	} {
		if got := tickEvery(tc.span); got != tc.want {
			t.Errorf("tickEvery(%s) = %s, want %s", tc.span, got, tc.want)
		}
	}
}

func TestPlanSourceHighlightsTheStep(t *testing.T) {
	src := []byte("kind: Plan\nsteps:\n  - id: a\n    type: exec\n    with:\n      command: [x]\n  - {id: b, type: assert}\nhooks:\n  PreBackup:\n    - id: h\n      type: exec\n")
	lines, pos := planSource(src, "a")
	if pos["a"] != 3 || pos["b"] != 7 || pos["h"] != 10 {
		t.Fatalf("positions %v", pos)
	}
	var hi []int
	for _, l := range lines {
		if l.Hi {
			hi = append(hi, l.N)
		}
	}
	if len(lines) != 11 || len(hi) != 4 || hi[0] != 3 || hi[3] != 6 {
		t.Fatalf("%d lines, highlighted %v", len(lines), hi)
	}
	if _, pos := planSource([]byte("steps: [unclosed"), ""); len(pos) != 0 {
		t.Fatalf("a plan that does not parse has no positions: %v", pos)
	}
}
