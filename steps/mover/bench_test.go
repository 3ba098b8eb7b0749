package mover

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kopia/kopia/repo/compression"

	"planrun.dev/planrun/internal/fstree"
	"planrun.dev/planrun/internal/memprobe"
)

// BenchmarkMoverStage runs what a volume migration does through a kopia repository on local
// disk: stage 1 (full backup, restore into an empty folder), then 1 % of the files changed and
// stage 2 (incremental backup, incremental restore). The tree is 256 MiB (PLANRUN_BENCH_MOVER_MB
// sets another size): half in ~2,000 small files (4–256 KiB), half in two large files, half of
// its 4 KiB blocks compressible. PLANRUN_BENCH_MOVER_COMPRESSION picks kopia's compressor
// (default zstd-fastest; s2-default, none…).
//
// Reported: stage-1 backup and restore throughput (MB/s of file data), stage-2 times and their
// ratio to stage 1, bytes uploaded, and the peak Go heap of the stage-1 backup.
func BenchmarkMoverStage(b *testing.B) {
	comp := compression.Name(os.Getenv("PLANRUN_BENCH_MOVER_COMPRESSION"))
	spec := benchSpec(benchMB(b, 256))
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root := b.TempDir()
		src := filepath.Join(root, "src")
		sum, err := fstree.Generate(src, spec)
		if err != nil {
			b.Fatal(err)
		}
		r, _ := testRepo(b)
		dst := filepath.Join(root, "dst")
		b.StartTimer()

		stop := memprobe.Start()
		s1, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "bench", Stage: true, compressor: comp})
		peak := stop()
		if err != nil {
			b.Fatal(err)
		}
		r1, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: s1.Snapshot})
		if err != nil {
			b.Fatal(err)
		}

		b.StopTimer()
		m, err := fstree.Mutate(src, 1, 9)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		s2, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "bench", Stage: true, compressor: comp})
		if err != nil {
			b.Fatal(err)
		}
		r2, err := Restore(ctx, r, RestoreOptions{Dir: dst, Snapshot: s2.Snapshot})
		if err != nil {
			b.Fatal(err)
		}

		b.StopTimer()
		v, err := Verify(ctx, r, VerifyOptions{Dir: dst, Snapshot: s2.Snapshot})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		mbps := func(bytes int64, secs float64) float64 { return float64(bytes) / 1e6 / secs }
		b.ReportMetric(mbps(s1.Bytes, s1.Seconds), "stage1-backup-MB/s")
		b.ReportMetric(mbps(r1.Bytes, r1.Seconds), "stage1-restore-MB/s")
		b.ReportMetric(s1.Seconds+r1.Seconds, "stage1-s")
		b.ReportMetric(s2.Seconds+r2.Seconds, "stage2-s")
		b.ReportMetric((s2.Seconds+r2.Seconds)/(s1.Seconds+r1.Seconds), "stage2/stage1")
		b.ReportMetric(float64(s1.UploadedBytes)/float64(s1.Bytes), "stage1-upload/data")
		b.ReportMetric(float64(s2.HashedBytes)/1e6, "stage2-read-MB")
		b.ReportMetric(float64(s2.UploadedBytes)/1e6, "stage2-upload-MB")
		b.ReportMetric(mbps(v.Bytes, v.Seconds), "verify-MB/s")
		b.ReportMetric(float64(peak.Heap)/(1<<20), "backup-peak-heap-MiB")
		b.ReportMetric(float64(peak.Live)/(1<<20), "backup-peak-live-MiB")
		b.ReportMetric(float64(peak.RSS)/(1<<20), "backup-peak-rss-MiB")
		b.Logf("%d files, %d MB; stage 1: backup %.2fs, restore %.2fs (%d uploaded); mutation %d+%d+%d+%d files, %d bytes; stage 2: backup %.2fs (read %d, uploaded %d), restore %.2fs (wrote %d files, deleted %d)",
			sum.Files, sum.Bytes/1e6, s1.Seconds, r1.Seconds, s1.UploadedBytes, m.Rewritten, m.Appended, m.Deleted, m.Added, m.BytesWritten,
			s2.Seconds, s2.HashedBytes, s2.UploadedBytes, r2.Seconds, r2.WrittenFiles, r2.Deleted)
	}
}

// benchMB is the size of the benchmarks' trees in MiB: $PLANRUN_BENCH_MOVER_MB, or def.
func benchMB(b testing.TB, def int64) int64 {
	s := os.Getenv("PLANRUN_BENCH_MOVER_MB")
	if s == "" {
		return def
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 4 {
		b.Fatalf("PLANRUN_BENCH_MOVER_MB=%q: want a size in MiB, at least 4", s)
	}
	return v
}

// benchSpec is the tree the volume benchmarks copy, mb MiB: half in small files (4–256 KiB,
// log-uniform, in nested folders), half in two large files, half of its 4 KiB blocks
// compressible, with symlinks, hard links, empty folders and varied owners.
func benchSpec(mb int64) fstree.Spec {
	total := mb << 20
	large := total / 4
	return fstree.Spec{
		Files:    int(total / 2 / (60 << 10)), // the log-uniform 4–256 KiB average is about 60 KiB
		SmallMin: 4 << 10, SmallMax: 256 << 10,
		Large:    []int64{large, large},
		Symlinks: 50, Hardlinks: 20, EmptyDirs: 5,
		Owners: true, Compressible: 0.5, Seed: 3,
	}
}

// BenchmarkMoverManyFiles backs up, restores and verifies a tree of many tiny files
// (PLANRUN_BENCH_MOVER_FILES, default 20,000; 100 B–4 KiB each) and reports the peak Go heap of
// each phase: run it at two sizes to see memory stay flat in the number of files.
func BenchmarkMoverManyFiles(b *testing.B) {
	n := 20000
	if s := os.Getenv("PLANRUN_BENCH_MOVER_FILES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			b.Fatal(err)
		}
		n = v
	}
	spec := fstree.Spec{Files: n, SmallMin: 100, SmallMax: 4 << 10, Symlinks: n / 100, Hardlinks: n / 100, Seed: 5}
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		root := b.TempDir()
		src := filepath.Join(root, "src")
		if _, err := fstree.Generate(src, spec); err != nil {
			b.Fatal(err)
		}
		r, _ := testRepo(b)
		b.StartTimer()
		stop := memprobe.Start()
		s1, err := Backup(ctx, r, BackupOptions{Dir: src, SourceID: "bench", Stage: true, CheckpointInterval: 2 * time.Second})
		backup := stop()
		if err != nil {
			b.Fatal(err)
		}
		stop = memprobe.Start()
		r1, err := Restore(ctx, r, RestoreOptions{Dir: filepath.Join(root, "dst"), Snapshot: s1.Snapshot})
		restore := stop()
		if err != nil {
			b.Fatal(err)
		}
		stop = memprobe.Start()
		v, err := Verify(ctx, r, VerifyOptions{Dir: filepath.Join(root, "dst"), Snapshot: s1.Snapshot})
		verify := stop()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(s1.Files)/s1.Seconds, "backup-files/s")
		b.ReportMetric(float64(r1.Files)/r1.Seconds, "restore-files/s")
		b.ReportMetric(float64(v.Files)/v.Seconds, "verify-files/s")
		b.ReportMetric(float64(backup.Live)/(1<<20), "backup-peak-live-MiB")
		b.ReportMetric(float64(restore.Live)/(1<<20), "restore-peak-live-MiB")
		b.ReportMetric(float64(verify.Live)/(1<<20), "verify-peak-live-MiB")
	}
}
