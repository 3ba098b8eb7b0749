package main

import (
	"regexp"
	"strings"
	"testing"

	"planrun.dev/planrun/internal/controlplane"
)

// rawKlog matches a line as klog writes it (W1130 12:00:00.000000  123 file.go:42] ...).
var rawKlog = regexp.MustCompile(`(?m)^[IWEF]\d{4} \d\d:\d\d:\d\d`)

// TestAPIWarningsAreStepWarnings: a warning of the API server (listing v1 Endpoints, deprecated
// for EndpointSlices) is the step's warning — a ⚠ line, or a step.warning event with -o json,
// once — and never raw klog text on stderr, where it would cut through a progress line.
func TestAPIWarningsAreStepWarnings(t *testing.T) {
	cp := controlplane.StartForTest(t)
	dir := t.TempDir()
	plan := writePlan(t, dir, "plan.yaml", `apiVersion: planrun.dev/v1alpha1
kind: Plan
metadata: {name: warned}
steps:
  - {id: endpoints, type: kube.list, with: {apiVersion: v1, kind: Endpoints, namespace: default}}
  - {id: again, type: kube.list, with: {apiVersion: v1, kind: Endpoints, namespace: kube-system}}
`)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"text", nil, "⚠ endpoints: API server: v1 Endpoints is deprecated"},
		{"json", []string{"-o", "json"}, `"type":"step.warning"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"apply", plan, "--kubeconfig", cp.Kubeconfig, "--state-dir", t.TempDir()}, tc.args...)
			code, stdout, stderr := runCLI(t, args...)
			if code != exitOK {
				t.Fatalf("apply: exit %d\n%s\n%s", code, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.want) {
				t.Errorf("no warning %q in:\n%s", tc.want, stdout)
			}
			// Told to each step once, whatever the number of requests.
			if n := strings.Count(stdout, "v1 Endpoints is deprecated"); n != 2 {
				t.Errorf("the warning came %d times, want once per step:\n%s", n, stdout)
			}
			if rawKlog.MatchString(stderr) || strings.Contains(stderr, "deprecated") {
				t.Errorf("raw klog output or the warning on stderr:\n%s", stderr)
			}
		})
	}
}
