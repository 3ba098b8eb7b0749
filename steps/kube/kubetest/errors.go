package kubetest

import (
	"testing"

	"planrun.dev/planrun/internal/plantest"
)

// WantRunError fails the test unless the run failed with a one-line error containing every part.
func WantRunError(t testing.TB, run *Run, parts ...string) {
	t.Helper()
	plantest.WantError(t, run.Err, parts...)
}

// ErrorCase is a plan with a step "s" that must fail with an error containing Want.
type ErrorCase struct {
	Name     string
	Clusters map[string]*Cluster // nil: the clusters given to RunErrorCases
	Plan     string
	Want     string
}

// RunErrorCases runs each case in a subtest and checks that it failed with a one-line error
// that says `step "s" failed: ` and contains the case's Want.
func RunErrorCases(t *testing.T, clusters map[string]*Cluster, cases []ErrorCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			cl := tc.Clusters
			if cl == nil {
				cl = clusters
			}
			WantRunError(t, Apply(t, cl, tc.Plan, Options{}), `step "s" failed: `, tc.Want)
		})
	}
}
