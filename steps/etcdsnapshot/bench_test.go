package etcdsnapshot_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/memprobe"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/s3test"
)

// Benchmarks (go test -run '^$' -bench . ./steps/etcdsnapshot, or make bench): figures, never
// timed assertions. Both sides snapshot the same etcd in the same run.

// fill writes keys of 64 KiB values into c until it holds about size bytes of values, from key
// number from on; it returns the next key number.
func fill(b *testing.B, c *clientv3.Client, from int, size int64) int {
	b.Helper()
	const value = 64 << 10
	payload := strings.Repeat("0123456789abcdef", value/16)
	n := from
	for written := int64(0); written < size; {
		var ops []clientv3.Op
		for range 20 { // 1.25 MiB: under etcd's request limit
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/configmaps/bench/cm-%06d", n), payload))
			n++
			written += value
		}
		if _, err := c.Txn(context.Background()).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
	return n
}

// BenchmarkSnapshotS3: etcd.snapshot of a datastore of about 200 MiB streamed to S3 (versitygw
// on loopback, parts of 8 MiB, 5 in flight) against the same snapshot to a local file; and the
// peak memory of the S3 snapshot at about 50 and 200 MiB, which should not grow with the
// snapshot (parts in flight, not the snapshot, are what it holds).
func BenchmarkSnapshotS3(b *testing.B) {
	e := controlplane.StartEtcdForTest(b)
	c := client(b, e.URL)
	srv := s3test.StartForTest(b)
	if err := srv.CreateBucket(bucket); err != nil {
		b.Fatal(err)
	}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		b.Setenv(k, v)
	}
	toS3 := srv.URL(bucket, snapshotKey)
	toLocal := filepath.Join(b.TempDir(), "etcd.db")

	const mib = 1 << 20
	snap := func(b *testing.B, to string) int64 {
		out := mustApply(b, e.URL, snapshotStep(to, "")).Step("snap").Outputs
		return plantest.Num(b, out, "size")
	}
	peaks := map[int64]memprobe.Peak{}
	memory := func(size int64) {
		b.Run(fmt.Sprintf("s3-memory-%dMiB", size/mib), func(b *testing.B) {
			var peak memprobe.Peak
			var got int64
			for b.Loop() {
				stop := memprobe.Start()
				got = snap(b, toS3)
				peak = peak.Max(stop())
			}
			b.ReportMetric(float64(got)/mib, "snapshot-MiB")
			b.ReportMetric(float64(peak.Live)/mib, "peak-live-heap-MiB")
			b.ReportMetric(float64(peak.Heap)/mib, "peak-heap-MiB")
			if peak.RSS > 0 {
				b.ReportMetric(float64(peak.RSS)/mib, "peak-rss-MiB")
			}
			peaks[size] = peak
		})
	}

	next := fill(b, c, 0, 50*mib)
	memory(50 * mib)
	fill(b, c, next, 150*mib)
	memory(200 * mib)

	rates := map[string]float64{}
	var size int64
	for _, tc := range []struct{ name, to string }{{"local", toLocal}, {"s3", toS3}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				size = snap(b, tc.to)
			}
			rates[tc.name] = float64(size) / mib / (b.Elapsed().Seconds() / float64(b.N))
			b.ReportMetric(rates[tc.name], "MiB/s")
		})
	}

	if l, s := rates["local"], rates["s3"]; l > 0 && s > 0 {
		fmt.Printf("BenchmarkSnapshotS3: etcd.snapshot of %.0f MiB to S3 %.0f MiB/s, to a local file %.0f MiB/s: S3 is %.2fx local\n",
			float64(size)/mib, s, l, s/l)
	}
	if p50, p200 := peaks[50*mib], peaks[200*mib]; p50.Live > 0 && p200.Live > 0 {
		fmt.Printf("BenchmarkSnapshotS3Memory: the S3 snapshot at 200 vs 50 MiB: peak live heap %.2f (%.1f / %.1f MiB), peak heap %.2f (%.1f / %.1f MiB)",
			float64(p200.Live)/float64(p50.Live), float64(p200.Live)/mib, float64(p50.Live)/mib,
			float64(p200.Heap)/float64(p50.Heap), float64(p200.Heap)/mib, float64(p50.Heap)/mib)
		if p50.RSS > 0 && p200.RSS > 0 {
			fmt.Printf(", peak RSS %.2f (%.1f / %.1f MiB)", float64(p200.RSS)/float64(p50.RSS), float64(p200.RSS)/mib, float64(p50.RSS)/mib)
		}
		fmt.Println(" (flat: target ≤ 1.2 for the live heap)")
	}
}
