package images

import "testing"

func TestPlanrunImageFor(t *testing.T) {
	for version, want := range map[string]string{
		"":                   "planrun.local/planrun:latest",
		"v0.3.0-12-gabc1234": "planrun.local/planrun:v0.3.0-12-gabc1234",
	} {
		if got := PlanrunImageFor(version); got != want {
			t.Errorf("PlanrunImageFor(%q) = %q, want %q", version, got, want)
		}
	}
}
