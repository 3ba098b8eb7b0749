package fleet

import (
	"slices"
	"strings"
	"testing"
)

// TestParse: a targets file is a list of targets or a mapping with targets and rollout; every
// mistake is one error at its place.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		targets    []string
		rollout    string // maxParallel/waves/budget/gate, as "%d %v %s %s"
		err        string
	}{
		{name: "a list", body: "- {name: a, params: {x: 1}}\n- {name: b}\n", targets: []string{"a", "b"}},
		{name: "with a rollout", body: "rollout: {maxParallel: 3, waves: [1, 25%], failureBudget: 10%, gate: 'failed == 0'}\ntargets:\n  - {name: a}\n",
			targets: []string{"a"}, rollout: "3 [1 25%] 10% failed == 0"},
		{name: "duplicate", body: "- {name: a}\n- {name: b}\n- {name: a}\n", err: `t.yaml:3:3: target "a" is already listed at t.yaml:1:3`},
		{name: "not a mapping", body: "- {name: a}\n- just-a-name\n", err: "t.yaml:2:3: a target must be a mapping"},
		{name: "no name", body: "- {params: {x: 1}}\n", err: "t.yaml:1:3: a target needs a name"},
		{name: "a name that cannot name a run", body: "- {name: A_1}\n", err: `t.yaml:1:10: target name "A_1"`},
		{name: "params not a mapping", body: "- {name: a, params: [1]}\n", err: "t.yaml:1:21: params must be a mapping"},
		{name: "unknown field", body: "- {name: a, parms: {}}\n", err: `t.yaml:1:13: unknown field "parms" in a target`},
		{name: "unknown top field", body: "targets: []\nrolout: {}\n", err: `t.yaml:2:1: unknown field "rolout"`},
		{name: "empty list", body: "targets: []\n", err: "t.yaml:1:10: no targets"},
		{name: "bad wave", body: "rollout: {waves: [1, 0]}\ntargets: [{name: a}]\n", err: `t.yaml:1:18: waves: "0": a wave has at least one target`},
		{name: "bad percentage", body: "rollout: {failureBudget: 150%}\ntargets: [{name: a}]\n", err: "t.yaml:1:26: failureBudget:"},
		{name: "bad gate", body: "rollout: {gate: 'failed +'}\ntargets: [{name: a}]\n", err: "t.yaml:1:17: gate:"},
		{name: "not YAML", body: "- {name: a\n", err: "t.yaml:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("t.yaml", []byte(tc.body))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %v, want one line with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, tg := range f.Targets {
				names = append(names, tg.Name)
			}
			if !slices.Equal(names, tc.targets) {
				t.Errorf("targets %v, want %v", names, tc.targets)
			}
			if tc.rollout != "" {
				r := f.Rollout
				if got := strings.Join([]string{itoa(r.MaxParallel), "[" + strings.Join(r.WaveSizes, " ") + "]", r.Budget, r.Gate}, " "); got != tc.rollout {
					t.Errorf("rollout %q, want %q", got, tc.rollout)
				}
			}
		})
	}
}

func itoa(n int) string { return Size{N: n}.String() }

// TestWaves: wave sizes in order, the last repeating; percentages of the fleet round up.
func TestWaves(t *testing.T) {
	for _, tc := range []struct {
		waves []string
		total int
		want  []int
	}{
		{nil, 4, []int{0, 0, 0, 0}},
		{[]string{"1", "2", "100%"}, 8, []int{0, 1, 1, 2, 2, 2, 2, 2}},
		{[]string{"1", "25%"}, 8, []int{0, 1, 1, 2, 2, 3, 3, 4}},
		{[]string{"1", "5", "25%"}, 3, []int{0, 1, 1}},
		{[]string{"10%"}, 5, []int{0, 1, 2, 3, 4}},
	} {
		var r Rollout
		if err := r.SetWaves(tc.waves); err != nil {
			t.Fatal(err)
		}
		if got := r.waveOf(tc.total); !slices.Equal(got, tc.want) {
			t.Errorf("waves %v over %d: %v, want %v", tc.waves, tc.total, got, tc.want)
		}
	}
}

// TestBudgetAndGate: a budget tolerates a count, or a percentage rounded down; a gate sees the
// finished targets.
func TestBudgetAndGate(t *testing.T) {
	for _, tc := range []struct {
		budget string
		total  int
		want   int
	}{{"", 10, 0}, {"2", 10, 2}, {"10%", 50, 5}, {"10%", 9, 0}} {
		var r Rollout
		if tc.budget != "" {
			if err := r.SetBudget(tc.budget); err != nil {
				t.Fatal(err)
			}
		}
		if got := r.tolerated(tc.total); got != tc.want {
			t.Errorf("budget %q of %d tolerates %d, want %d", tc.budget, tc.total, got, tc.want)
		}
	}
	vars := GateVars{Succeeded: 2, Failed: 1, Total: 5, Runs: []GateRun{{Name: "a", Status: "Succeeded"}, {Name: "b", Status: "RolledBack"}}}
	for src, want := range map[string]bool{
		"":                                   true,
		"failed == 0":                        false,
		"succeeded >= 2 && total == 5":       true,
		`any(runs, .status == "RolledBack")`: true,
	} {
		if got, err := gateHolds(src, vars); err != nil || got != want {
			t.Errorf("gate %q: %v, %v; want %v", src, got, err, want)
		}
	}
}
