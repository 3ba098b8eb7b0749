package engine_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"planrun.dev/planrun/engine"
)

// benchPlan generates a plan of n main steps: exec steps with ${{ }} templates, `when:`
// conditions on earlier steps, assert steps, retries and timeouts, rollback blocks, and hooks
// around a Backup and a Restore phase.
func benchPlan(n int) []byte {
	var b strings.Builder
	b.WriteString(ltHeader)
	b.WriteString(`params:
  ns: {type: string, default: apps}
  replicas: {type: int, default: 3}
  clusters: {type: list, default: [east, west]}
  labels: {type: map, default: {app: web}}
hooks:
  PreBackup:
    - {id: pre-backup-1, type: exec, with: {command: [echo, "quiesce ${{ params.ns }}"]}}
    - {id: pre-backup-2, type: assert, with: {that: "params.replicas > 0"}}
  PostBackup:
    - {id: post-backup, type: exec, with: {command: [echo, "resume ${{ params.ns }}"]}}
  PreRestore:
    - {id: pre-restore, type: exec, when: 'steps["pre-backup-1"].status == "Succeeded"', with: {command: [echo, pre]}}
  PostRestore:
    - {id: post-restore, type: exec, with: {command: [echo, post], env: {NS: "${{ params.ns }}"}}}
steps:
`)
	id := func(i int) string { return fmt.Sprintf("s%04d", i) }
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - id: %s\n", id(i))
		switch {
		case i >= n/5 && i < 2*n/5:
			b.WriteString("    phase: Backup\n")
		case i >= 3*n/5 && i < 4*n/5:
			b.WriteString("    phase: Restore\n")
		}
		if i > 0 && i%3 == 0 {
			fmt.Fprintf(&b, "    when: steps.%s.status == \"Succeeded\" && len(params.clusters) > 1\n", id(i-1))
		}
		if i > 0 && i%5 == 0 {
			fmt.Fprintf(&b, "    type: assert\n    with:\n      that: steps.%s.outputs.count >= params.replicas\n      message: \"too few in ${{ params.ns }}\"\n", id(i-1))
			continue
		}
		b.WriteString("    type: exec\n")
		if i%4 == 0 {
			b.WriteString("    retry: {attempts: 3, backoff: 2s, on: any}\n    timeout: 5m\n")
		}
		b.WriteString("    with:\n")
		fmt.Fprintf(&b, "      command: [kubectl, -n, \"${{ params.ns }}\", scale, \"deploy/%s\", \"--replicas=${{ params.replicas }}\"]\n", id(i))
		if i > 0 {
			fmt.Fprintf(&b, "      env: {PREV: \"${{ steps.%s.status }}\", APP: \"${{ params.labels.app }}\"}\n", id(i-1))
		}
		if i%10 == 0 {
			fmt.Fprintf(&b, "    rollback:\n      - {id: %s-undo, type: exec, with: {command: [kubectl, -n, \"${{ params.ns }}\", rollout, undo, \"deploy/%s\"]}}\n", id(i), id(i))
		}
	}
	return []byte(b.String())
}

func BenchmarkLoad500Steps(b *testing.B) {
	data := benchPlan(500)
	p, err := engine.Parse("plan.yaml", data, engine.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if got := len(p.Order()); got != 505 {
		b.Fatalf("%d steps in order, want 505", got)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := engine.Parse("plan.yaml", data, engine.LoadOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// benchJournal is the journal of a run of n steps, all done, with small outputs.
func benchJournal(n int) *engine.Journal {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	j := &engine.Journal{
		Version: engine.JournalVersion,
		RunID:   "bench-20260102-030405",
		Plan:    engine.PlanRecord{Name: "bench", Version: 1, File: "plan.yaml", Digest: strings.Repeat("ab", 32)},
		Params:  map[string]any{"ns": "apps", "replicas": 3},
		Status:  engine.RunRunning,
		Started: now,
		Updated: now,
	}
	for i := 0; i < n; i++ {
		started, finished := now.Add(time.Duration(i)*time.Second), now.Add(time.Duration(i)*time.Second+500*time.Millisecond)
		j.Steps = append(j.Steps, &engine.StepRecord{
			ID:       fmt.Sprintf("s%04d", i),
			Type:     "exec",
			Digest:   strings.Repeat("cd", 32),
			Status:   engine.StepSucceeded,
			Attempts: 1,
			Started:  &started,
			Finished: &finished,
			Outputs:  engine.Outputs{"count": i, "name": fmt.Sprintf("deploy/s%04d", i), "ready": true},
		})
	}
	return j
}

// benchCheckpointWrite measures one checkpoint: the journal of an n-step run written atomically
// (encode, temp file, fsync, rename, fsync of the folder), as the runner does after every step.
func benchCheckpointWrite(b *testing.B, n int) {
	ctx := context.Background()
	store := engine.NewDirStore(b.TempDir())
	j := benchJournal(n)
	if err := store.Create(ctx, j, benchPlan(n)); err != nil {
		b.Fatal(err)
	}
	data, err := j.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		j.Steps[i%n].Attempts++
		j.Updated = j.Updated.Add(time.Second)
		if err := store.Save(ctx, j); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.StopTimer()
	got, err := store.Load(ctx, j.RunID)
	if err != nil || len(got.Steps) != n || !got.Updated.Equal(j.Updated) {
		b.Fatalf("journal read back: %v", err)
	}
}

func BenchmarkCheckpointWrite(b *testing.B)        { benchCheckpointWrite(b, 500) }
func BenchmarkCheckpointWrite50Steps(b *testing.B) { benchCheckpointWrite(b, 50) }

// BenchmarkJournalEncode500Steps is the CPU part of BenchmarkCheckpointWrite: the rest is the
// file system (write, two fsyncs, rename).
func BenchmarkJournalEncode500Steps(b *testing.B) {
	j := benchJournal(500)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := j.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}

// noopPlan is a plan of n no-op steps (test.op), each reading the step before it in `when:` and
// in a ${{ }} value, so that both the load (compile, digests) and the run (env, checkpoints) see
// a step per step.
func noopPlan(n int) []byte {
	var b strings.Builder
	b.WriteString(ltHeader + "steps:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "  - id: s%05d\n    type: test.op\n", i)
		if i > 0 {
			fmt.Fprintf(&b, "    when: steps.s%05d.status == \"Succeeded\"\n    with: {out: {prev: \"${{ steps.s%05d.outputs.attempt }}\"}}\n", i-1, i-1)
		}
	}
	return []byte(b.String())
}

// benchLoadRun loads and runs a plan of n no-op steps in the given store. Growth is linear when
// ns/op of 10k steps is about ten times that of 1k steps.
func benchLoadRun(b *testing.B, n int, store func(b *testing.B) engine.Store) {
	data := noopPlan(n)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		loadRunOnce(b, data, n, store(b))
	}
}

// loadRunOnce loads the plan of n steps in data and runs it to its end in store.
func loadRunOnce(b *testing.B, data []byte, n int, store engine.Store) {
	resetOps()
	p, err := engine.Parse("plan.yaml", data, engine.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	j, err := (&engine.Runner{Store: store}).Apply(context.Background(), p, engine.ApplyOptions{RunID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	if got := j.Steps[n-1].Status; got != engine.StepSucceeded {
		b.Fatalf("last step %s", got)
	}
}

func memStore(*testing.B) engine.Store   { return engine.NewMemStore() }
func dirStore(b *testing.B) engine.Store { return engine.NewDirStore(b.TempDir()) }

func BenchmarkLoadRun1kStepsMem(b *testing.B)  { benchLoadRun(b, 1_000, memStore) }
func BenchmarkLoadRun10kStepsMem(b *testing.B) { benchLoadRun(b, 10_000, memStore) }
func BenchmarkLoadRun1kStepsDir(b *testing.B)  { benchLoadRun(b, 1_000, dirStore) }
func BenchmarkLoadRun10kStepsDir(b *testing.B) { benchLoadRun(b, 10_000, dirStore) }

// BenchmarkLoadRunScaling loads and runs 1k and 10k no-op steps alternately (MemStore: the
// engine's own cost, without the disk's fsyncs) and prints the ratio of their medians: linear
// growth is 10, quadratic 100. The target for 10k steps is < 2 s.
func BenchmarkLoadRunScaling(b *testing.B) {
	plans := map[int][]byte{1_000: noopPlan(1_000), 10_000: noopPlan(10_000)}
	times := map[int][]time.Duration{}
	for b.Loop() {
		for _, n := range []int{1_000, 10_000} {
			start := time.Now()
			loadRunOnce(b, plans[n], n, engine.NewMemStore())
			times[n] = append(times[n], time.Since(start))
		}
	}
	m1, m10 := median(times[1_000]), median(times[10_000])
	fmt.Printf("BenchmarkLoadRunScaling: load+run 1k steps %v, 10k steps %v: 10k/1k = %.1f (linear 10; target 10k < 2s)\n",
		m1.Round(time.Millisecond), m10.Round(time.Millisecond), float64(m10)/float64(m1))
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkLoad1kSteps and BenchmarkLoad10kSteps are the load alone.
func benchLoad(b *testing.B, n int) {
	data := noopPlan(n)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := engine.Parse("plan.yaml", data, engine.LoadOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoad1kSteps(b *testing.B)  { benchLoad(b, 1_000) }
func BenchmarkLoad10kSteps(b *testing.B) { benchLoad(b, 10_000) }

// wideWithPlan is one step whose with.env has n keys.
func wideWithPlan(n int) []byte {
	var b strings.Builder
	b.WriteString(ltHeader + "steps:\n  - id: wide\n    type: exec\n    with:\n      command: [\"true\"]\n      env:\n")
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "        K%06d: v%d\n", i, i)
	}
	return []byte(b.String())
}

func BenchmarkLoadWideWith50k(b *testing.B) {
	data := wideWithPlan(50_000)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := engine.Parse("plan.yaml", data, engine.LoadOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
