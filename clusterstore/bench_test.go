package clusterstore

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
)

// benchRuns numbers the benchmark's runs across its calls (one store per namespace).
var benchRuns atomic.Int64

// BenchmarkStepOverhead runs a plan of 100 steps that do nothing, through the engine, with runs
// kept in the cluster (PlanRun and Lease in a local kube-apiserver) and, as the baseline in the
// same run, in a local folder; it reports the milliseconds per step of each and the difference
// (target: the cluster store adds less than 20 ms per step).
func BenchmarkStepOverhead(b *testing.B) {
	const steps = 100
	var body strings.Builder
	for i := range steps {
		fmt.Fprintf(&body, "  - {id: s%03d, type: clusterstoretest.step}\n", i)
	}
	s, _ := open(b, DefaultLeaseDuration)
	p := loadPlan(b, body.String())
	// The first object made in a namespace just created waits for the API server's namespace
	// cache (about 2 s): a namespace that holds runs exists long before.
	createRun(b, s, "warm-up")
	dir := engine.NewDirStore(filepath.Join(b.TempDir(), "runs"))
	var cluster, local time.Duration
	b.ResetTimer()
	for range b.N {
		for _, st := range []struct {
			store engine.Store
			total *time.Duration
		}{{s, &cluster}, {dir, &local}} {
			start := time.Now()
			if _, err := (&engine.Runner{Store: st.store}).Apply(b.Context(), p, engine.ApplyOptions{RunID: fmt.Sprintf("bench-%d", benchRuns.Add(1))}); err != nil {
				b.Fatal(err)
			}
			*st.total += time.Since(start)
		}
	}
	perStep := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 / float64(b.N*steps) }
	b.ReportMetric(perStep(cluster), "cluster-ms/step")
	b.ReportMetric(perStep(local), "folder-ms/step")
	b.ReportMetric(perStep(cluster)-perStep(local), "added-ms/step")
	fmt.Printf("BenchmarkStepOverhead: %d no-op steps: cluster store %.2f ms/step, local folder %.2f ms/step: the cluster adds %.2f ms/step (target < 20)\n",
		steps, perStep(cluster), perStep(local), perStep(cluster)-perStep(local))
}
