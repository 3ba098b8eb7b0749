package engine_test

import (
	"strings"
	"testing"

	"planrun.dev/planrun/engine"
)

// TestClusterTemplates: a cluster's kubeconfig and context may take params (each target of a
// fleet its own), never a step's outputs: clusters are set up before any step runs.
func TestClusterTemplates(t *testing.T) {
	for _, tc := range []struct {
		name, cluster, err string
		set                []string
		kubeconfig, ctx    string
	}{
		{name: "whole", cluster: `{kubeconfig: "${{ params.kc }}", context: admin}`, set: []string{"kc=/k/t1.kubeconfig"}, kubeconfig: "/k/t1.kubeconfig", ctx: "admin"},
		{name: "within text", cluster: `{kubeconfig: "kc/${{ params.kc }}.yaml", context: "${{ params.kc + '-admin' }}"}`, set: []string{"kc=t2"}, kubeconfig: "kc/t2.yaml", ctx: "t2-admin"},
		{name: "a step's output", cluster: `{kubeconfig: "${{ steps.a.outputs.x }}"}`, set: []string{"kc=x"}, err: "is read by a cluster"},
		{name: "not a string", cluster: `{kubeconfig: "${{ [1] }}"}`, set: []string{"kc=x"}, err: "clusters.t.kubeconfig:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: c}\nparams:\n  kc: {type: string}\nclusters:\n  t: " + tc.cluster +
				"\nsteps:\n  - {id: a, type: test.op}\n"
			p, err := engine.Parse("plan.yaml", []byte(body), engine.LoadOptions{Params: engine.ParamValues{Set: tc.set}})
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c := p.Clusters["t"]; c.Kubeconfig != tc.kubeconfig || c.Context != tc.ctx {
				t.Errorf("cluster %+v, want kubeconfig %q context %q", c, tc.kubeconfig, tc.ctx)
			}
		})
	}
}
