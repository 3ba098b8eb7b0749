package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/fleet"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
)

// fleetPlan sleeps, then fails when its target's flag file exists.
const fleetPlan = `apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: work}
params:
  flag: {type: string, required: true}
  sleep: {type: string, default: "0.4"}
steps:
  - {id: work, type: exec, with: {command: [sh, -c, "sleep ${{ params.sleep }}; test ! -e ${{ params.flag }}"]}}
`

type fleetDir struct {
	dir, plan, state string
}

func newFleetDir(t *testing.T) *fleetDir {
	d := &fleetDir{dir: t.TempDir()}
	d.plan = writePlan(t, d.dir, "plan.yaml", fleetPlan)
	d.state = filepath.Join(d.dir, "runs")
	return d
}

// targets writes a targets file of n targets t01..tNN, with the given extra params each.
func (d *fleetDir) targets(t *testing.T, n int, rollout, sleep string) string {
	var sb strings.Builder
	if rollout != "" {
		sb.WriteString("rollout: " + rollout + "\n")
	}
	sb.WriteString("targets:\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&sb, "  - {name: t%02d, params: {flag: %q, sleep: %q}}\n", i, d.flag(i), sleep)
	}
	return writePlan(t, d.dir, "targets.yaml", sb.String())
}

func (d *fleetDir) flag(i int) string { return filepath.Join(d.dir, fmt.Sprintf("fail-%02d", i)) }

func (d *fleetDir) fail(t *testing.T, i int) {
	if err := os.WriteFile(d.flag(i), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (d *fleetDir) cli(t *testing.T, args ...string) (int, string, string) {
	return runCLI(t, append(args, "--state-dir", d.state)...)
}

// journals are the runs of the state folder, by id.
func (d *fleetDir) journals(t *testing.T) map[string]*engine.Journal {
	t.Helper()
	entries, err := engine.NewDirStore(d.state).List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*engine.Journal{}
	for _, e := range entries {
		if e.Journal != nil {
			out[e.RunID] = e.Journal
		}
	}
	return out
}

func fleetRecord(t *testing.T, d *fleetDir, name string) *fleet.Record {
	t.Helper()
	r, err := (&fleet.DirStore{Dir: filepath.Join(d.state, ".fleets")}).Load(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestFleetWaves: ten targets in waves of 1, 2 and the rest, three at a time: the journals show
// never more than three runs at once, and no wave starting before the one before it finished.
func TestFleetWaves(t *testing.T) {
	d := newFleetDir(t)
	targets := d.targets(t, 10, "{maxParallel: 3, waves: [1, 2, 100%]}", "0.4")
	code, stdout, stderr := d.cli(t, "apply", d.plan, "--targets", targets, "--fleet", "waves")
	if code != exitOK {
		t.Fatalf("apply --targets: exit %d\n%s\n%s", code, stdout, stderr)
	}
	js := d.journals(t)
	if len(js) != 10 {
		t.Fatalf("%d runs, want 10", len(js))
	}
	if most := plantest.MostAtOnce(slices.Collect(maps.Values(js))); most > 3 || most < 2 {
		t.Errorf("%d runs at once, want 3 at most (and more than one)", most)
	}
	waveEnd := func(ids ...int) time.Time {
		var end time.Time
		for _, i := range ids {
			if f := *js[fmt.Sprintf("waves.t%02d", i)].Finished; f.After(end) {
				end = f
			}
		}
		return end
	}
	waveStart := func(ids ...int) time.Time {
		start := js[fmt.Sprintf("waves.t%02d", ids[0])].Started
		for _, i := range ids {
			if s := js[fmt.Sprintf("waves.t%02d", i)].Started; s.Before(start) {
				start = s
			}
		}
		return start
	}
	if waveStart(2, 3).Before(waveEnd(1)) || waveStart(4, 5, 6, 7, 8, 9, 10).Before(waveEnd(2, 3)) {
		t.Errorf("a wave started before the one before it finished")
	}
	for _, want := range []string{"wave 1 starts", "wave 3 starts", "fleet waves finished: 10 succeeded"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = d.cli(t, "fleet", "status", "waves", "-o", "json")
	var view struct {
		Counts  fleet.Counts `json:"counts"`
		Targets []struct {
			State string `json:"state"`
			Wave  int    `json:"wave"`
		} `json:"targets"`
	}
	if code != exitOK || json.Unmarshal([]byte(stdout), &view) != nil || view.Counts.Succeeded != 10 || view.Targets[9].Wave != 2 {
		t.Errorf("fleet status -o json: exit %d: %s", code, stdout)
	}
}

// TestFleetFailureBudgetAndRerun: with a budget of one failure, the second failure stops new
// starts (the rest are skipped, nothing starts after it); run again, the fleet skips the targets
// that succeeded and runs the others, the failed ones in new runs.
func TestFleetFailureBudgetAndRerun(t *testing.T) {
	d := newFleetDir(t)
	targets := d.targets(t, 8, "{maxParallel: 1, failureBudget: 1}", "0.1")
	d.fail(t, 2)
	d.fail(t, 4)
	code, stdout, stderr := d.cli(t, "apply", d.plan, "--targets", targets, "--fleet", "budget")
	if code != exitRunFailed || !strings.Contains(stderr, "2 of 8 targets failed, more than the failure budget (1)") {
		t.Fatalf("apply --targets: exit %d\n%s\n%s", code, stdout, stderr)
	}
	js := d.journals(t)
	if len(js) != 4 {
		t.Fatalf("%d runs, want t01 to t04, then none after the second failure: %v", len(js), keys(js))
	}
	c := fleetRecord(t, d, "budget").Count()
	if c.Succeeded != 2 || c.Failed != 2 || c.Skipped != 4 {
		t.Errorf("counts %+v", c)
	}
	firstRun := js["budget.t01"].Started

	os.Remove(d.flag(2))
	os.Remove(d.flag(4))
	code, stdout, stderr = d.cli(t, "apply", d.plan, "--targets", targets, "--fleet", "budget", "--parallel", "4")
	if code != exitOK {
		t.Fatalf("rerun: exit %d\n%s\n%s", code, stdout, stderr)
	}
	js = d.journals(t)
	if !js["budget.t01"].Started.Equal(firstRun) || strings.Contains(stdout, "t01") {
		t.Errorf("the rerun ran t01 again:\n%s", stdout)
	}
	for _, id := range []string{"budget.t02.2", "budget.t04.2", "budget.t08"} {
		if j := js[id]; j == nil || j.Status != engine.RunSucceeded {
			t.Errorf("run %s after the rerun: %v", id, j)
		}
	}
	if c := fleetRecord(t, d, "budget").Count(); c.Succeeded != 8 {
		t.Errorf("after the rerun: %+v", c)
	}
}

// TestFleetPauseResumeCancel: a paused fleet starts no new target while its running one goes on;
// resumed, it goes on; cancelled, it starts nothing more and ends once its running targets did.
func TestFleetPauseResumeCancel(t *testing.T) {
	d := newFleetDir(t)
	targets := d.targets(t, 6, "{maxParallel: 1}", "1")
	type result struct {
		code           int
		stdout, stderr string
	}
	done := make(chan result, 1)
	go func() {
		code, stdout, stderr := d.cli(t, "apply", d.plan, "--targets", targets, "--fleet", "ctl")
		done <- result{code, stdout, stderr}
	}()
	started := func() int {
		return len(d.journals(t))
	}
	waitFor(t, done, time.Minute, "the first target to start", func() bool { return started() >= 1 })
	if code, out, errOut := d.cli(t, "fleet", "pause", "ctl"); code != exitOK {
		t.Fatalf("fleet pause: exit %d %s %s", code, out, errOut)
	}
	time.Sleep(3 * time.Second) // three times a target's run: a fleet that was not paused would start more
	if n := started(); n > 2 {
		t.Fatalf("%d targets started while paused", n)
	}
	if code, out, _ := d.cli(t, "fleet", "status"); code != exitOK || !strings.Contains(out, "paused") {
		t.Errorf("fleet status while paused: %s", out)
	}
	paused := started()
	if code, out, errOut := d.cli(t, "fleet", "resume", "ctl"); code != exitOK || !strings.Contains(out, "resumed") {
		t.Fatalf("fleet resume: exit %d %s %s", code, out, errOut)
	}
	waitFor(t, done, time.Minute, "a target to start after the resume", func() bool { return started() > paused })
	if code, out, errOut := d.cli(t, "fleet", "cancel", "ctl"); code != exitOK {
		t.Fatalf("fleet cancel: exit %d %s %s", code, out, errOut)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the cancelled fleet did not end")
	}
	if r.code != exitRunFailed || !strings.Contains(r.stderr, "cancelled") {
		t.Errorf("apply of the cancelled fleet: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	c := fleetRecord(t, d, "ctl").Count()
	if c.Running != 0 || c.Skipped == 0 || c.Succeeded+c.Skipped != 6 {
		t.Errorf("after cancel: %+v", c)
	}
	if code, _, stderr := d.cli(t, "fleet", "resume", "ctl"); code == exitOK || !strings.Contains(stderr, "cancelled") {
		t.Errorf("resume of a cancelled fleet: exit %d %s", code, stderr)
	}
}

// TestFleetBadInput: mistakes in a targets file, or params a target gives the plan, are one line
// each with their place, before any run starts.
func TestFleetBadInput(t *testing.T) {
	d := newFleetDir(t)
	for _, tc := range []struct {
		name, body, want string
	}{
		{"duplicate target", "- {name: a, params: {flag: x}}\n- {name: a, params: {flag: y}}\n", `:2:3: target "a" is already listed at`},
		{"malformed entry", "- {name: a, params: {flag: x}}\n- [a]\n", ":2:3: a target must be a mapping"},
		{"a param of the wrong type", "- {name: a, params: {flag: [x]}}\n", `target a (`},
		{"a param the plan lacks", "- {name: a, params: {flag: x, colour: red}}\n", `the plan has no param "colour"`},
		{"a missing file", "", "targets file:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(d.dir, "missing.yaml")
			if tc.body != "" {
				file = writePlan(t, d.dir, "bad.yaml", tc.body)
			}
			code, stdout, stderr := d.cli(t, "apply", d.plan, "--targets", file)
			if code != exitUsage || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("exit %d, stderr %q (stdout %q); want exit 2 and one line with %q", code, stderr, stdout, tc.want)
			}
			if js := d.journals(t); len(js) != 0 {
				t.Errorf("runs started: %v", keys(js))
			}
		})
	}
}

// TestFleetForEach: --for-each makes a fleet of the objects of a resource that match a selector,
// each target's params from expressions over its object; mistakes are one line each.
func TestFleetForEach(t *testing.T) {
	cp := controlplane.StartForTest(t)
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	ctx := t.Context()
	for _, ns := range []string{"blue", "green"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for i, fleetLabel := range []string{"yes", "yes", "no"} {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%d", i), Labels: map[string]string{"fleet": fleetLabel}}, Data: map[string]string{"size": fmt.Sprint(i + 1)}}
			if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	dir := t.TempDir()
	plan := writePlan(t, dir, "plan.yaml", `apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: each}
params:
  ns: {type: string, required: true}
  cm: {type: string, required: true}
  size: {type: int, required: true}
steps:
  - {id: get, type: kube.get, with: {apiVersion: v1, kind: ConfigMap, namespace: "${{ params.ns }}", name: "${{ params.cm }}"}}
  - {id: check, type: assert, with: {that: "int(steps.get.outputs.object.data.size) == params.size"}}
`)
	common := []string{"--kubeconfig", cp.Kubeconfig, "--state-dir", filepath.Join(dir, "runs")}
	each := []string{"apply", plan, "--for-each", "configmaps", "-l", "fleet=yes", "--target-param", "ns=object.metadata.namespace",
		"--target-param", "cm=object.metadata.name", "--target-param", "size=int(object.data.size)", "--parallel", "2"}
	code, stdout, stderr := runCLI(t, append(each, common...)...)
	if code != exitOK || !strings.Contains(stdout, "4 succeeded") {
		t.Fatalf("apply --for-each: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, id := range []string{"each-configmaps.blue-app-0", "each-configmaps.blue-app-1", "each-configmaps.green-app-0", "each-configmaps.green-app-1"} {
		if !strings.Contains(stdout, id) {
			t.Errorf("no run %s:\n%s", id, stdout)
		}
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"a bad expression", []string{"--target-param", "ns=object.metadata.("}, `--target-param ns "object.metadata.(":`},
		{"an unknown resource", []string{"--for-each", "widgets.example.com"}, `unknown resource "widgets.example.com"`},
		{"no match", []string{"-l", "fleet=maybe"}, `no objects match (selector "fleet=maybe")`},
		{"a param of the wrong type", []string{"--target-param", "size=object.data.size"}, `param "size"`},
		{"names that clash", []string{"--target-name", "object.metadata.name"}, `target name "app-0" is also`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append(append([]string(nil), each...), tc.args...), common...)
			args = append(args, "--fleet", "bad")
			code, _, stderr := runCLI(t, args...)
			if code == exitOK || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("exit %d, stderr %q; want one line with %q", code, stderr, tc.want)
			}
		})
	}
}
