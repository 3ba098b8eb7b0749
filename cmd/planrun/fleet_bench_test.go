package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkFleet runs a fleet of 50 targets, at most 10 at a time, here (--parallel), and as
// the baseline in the same run a fleet of one of the same targets: it reports the wall time of
// each and the fleet's efficiency, 50 × one target's time / 10 over the fleet's time (1.0: the
// scheduler costs nothing; the issue asks for the figure). Two kinds of targets: no-op (an
// assert: what the scheduler itself costs) and a 200 ms command (closer to a real step).
func BenchmarkFleet(b *testing.B) {
	for _, tc := range []struct {
		name, step string
	}{
		{"noop", "{id: work, type: assert, with: {that: 'true'}}"},
		{"sleep200ms", "{id: work, type: exec, with: {command: [sleep, '0.2']}}"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			dir := b.TempDir()
			plan := filepath.Join(dir, "plan.yaml")
			write(b, plan, "apiVersion: planrun.dev/v1alpha1\nkind: Plan\nmetadata: {name: bench}\nparams:\n  n: {type: int}\nsteps:\n  - "+tc.step+"\n")
			targets := func(n int) string {
				var sb strings.Builder
				for i := range n {
					fmt.Fprintf(&sb, "- {name: t%02d, params: {n: %d}}\n", i, i)
				}
				path := filepath.Join(dir, fmt.Sprintf("targets-%d.yaml", n))
				write(b, path, sb.String())
				return path
			}
			one, fifty := targets(1), targets(50)
			var single, fleet time.Duration
			b.ResetTimer()
			for i := range b.N {
				state := filepath.Join(dir, fmt.Sprintf("state-%d", i))
				single += timeFleet(b, plan, one, state, "one", 1)
				fleet += timeFleet(b, plan, fifty, state, "fifty", 10)
			}
			t1 := single.Seconds() / float64(b.N)
			t50 := fleet.Seconds() / float64(b.N)
			ideal := 50 * t1 / 10
			b.ReportMetric(t1*1e3, "one-target-ms")
			b.ReportMetric(t50*1e3, "fleet-ms")
			b.ReportMetric(ideal/t50, "efficiency")
			fmt.Printf("BenchmarkFleet/%s: 50 targets, 10 at a time: %.0f ms; one target alone %.0f ms; efficiency %.2f (50 × one / 10 = %.0f ms)\n",
				tc.name, t50*1e3, t1*1e3, ideal/t50, ideal*1e3)
		})
	}
}

func timeFleet(b *testing.B, plan, targets, state, name string, parallel int) time.Duration {
	var stderr bytes.Buffer
	start := time.Now()
	code := run([]string{"apply", plan, "--targets", targets, "--fleet", name, "--parallel", fmt.Sprint(parallel), "--state-dir", state}, io.Discard, &stderr)
	d := time.Since(start)
	if code != exitOK {
		b.Fatalf("fleet %s: exit %d: %s", name, code, stderr.String())
	}
	return d
}

func write(b *testing.B, path, body string) {
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		b.Fatal(err)
	}
}
