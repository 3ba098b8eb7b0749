package files

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"planrun.dev/planrun/internal/parallel"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/s3test"
)

const (
	benchObjects = 2000
	// benchWorkers is files.copy's default for object stores, and what rclone is given as
	// --transfers and --checkers, so that both have as many requests in flight.
	benchWorkers = defaultWorkers
)

// benchSize is the size of object i: one in twenty between 5 and 8 MiB (full snapshots), the
// others spread log-uniformly between 1 KiB and 1 MiB (delta snapshots), about 0.9 GiB in all.
// Deterministic, so that every run copies the same bucket.
func benchSize(i int) int {
	r := rand.New(rand.NewPCG(uint64(i), 42))
	if i%20 == 0 {
		return 5<<20 + r.IntN(3<<20+1)
	}
	return int(math.Exp(math.Log(1<<10) + r.Float64()*(math.Log(1<<20)-math.Log(1<<10))))
}

// benchBody is the content of object i: pseudo-random (nothing compresses it), deterministic.
func benchBody(i int) []byte {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(i))
	b := make([]byte, benchSize(i))
	_, _ = rand.NewChaCha8(seed).Read(b)
	return b
}

func benchKey(i int) string {
	if i%20 == 0 {
		return fmt.Sprintf("shoot--bench/etcd-main/v2/Full-%08d-%08d-1700%06d", i*100, i*100+100, i)
	}
	return fmt.Sprintf("shoot--bench/etcd-main/v2/Incr-%08d-%08d-1700%06d", i*100, i*100+100, i)
}

// seedBench uploads the benchmark's objects with plain PUTs (no planrun metadata, as
// etcd-backup-restore writes them), unless the bucket already holds them all.
func seedBench(b *testing.B, c *s3.Client, bucketName string) (files, size int64) {
	b.Helper()
	idx := make([]int, benchObjects)
	for i := range idx {
		idx[i] = i
		size += int64(benchSize(i))
	}
	err := parallel.Each(b.Context(), benchWorkers, idx, func(ctx context.Context, i int) error {
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucketName), Key: aws.String(benchKey(i)), Body: bytes.NewReader(benchBody(i))})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return benchObjects, size
}

// emptyBucket deletes every object of a bucket, a thousand per request.
func emptyBucket(b *testing.B, c *s3.Client, bucketName string) {
	b.Helper()
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucketName)})
	for p.HasMorePages() {
		page, err := p.NextPage(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if len(page.Contents) == 0 {
			continue
		}
		var ids []types.ObjectIdentifier
		for _, o := range page.Contents {
			ids = append(ids, types.ObjectIdentifier{Key: o.Key})
		}
		if _, err := c.DeleteObjects(b.Context(), &s3.DeleteObjectsInput{Bucket: aws.String(bucketName), Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}}); err != nil {
			b.Fatal(err)
		}
	}
}

// countObjects returns how many objects a bucket holds and their bytes.
func countObjects(b *testing.B, c *s3.Client, bucketName string) (n, bytes int64) {
	b.Helper()
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucketName)})
	for p.HasMorePages() {
		page, err := p.NextPage(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		for _, o := range page.Contents {
			n++
			bytes += aws.ToInt64(o.Size)
		}
	}
	return n, bytes
}

// peakHeap samples the heap in use while it runs, and returns the peak above the heap in use
// when it started (what the copy added).
type peakHeap struct {
	base, peak atomic.Uint64
	stop       chan struct{}
	wg         sync.WaitGroup
}

func startPeakHeap() *peakHeap {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p := &peakHeap{stop: make(chan struct{})}
	p.base.Store(ms.HeapInuse + ms.StackInuse)
	p.wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-t.C:
				runtime.ReadMemStats(&ms)
				if v := ms.HeapInuse + ms.StackInuse; v > p.peak.Load() {
					p.peak.Store(v)
				}
			}
		}
	})
	return p
}

func (p *peakHeap) end() float64 {
	close(p.stop)
	p.wg.Wait()
	return float64(p.peak.Load()-min(p.base.Load(), p.peak.Load())) / (1 << 20)
}

// BenchmarkCopyVsRclone copies a bucket of 2,000 objects (1 KiB – 8 MiB, ~0.9 GiB, no planrun
// metadata) between two S3 servers on loopback with files.copy and with `rclone copy` (its
// defaults, with --transfers and --checkers set to files.copy's workers), then again with
// everything already there (skip-equal). The destination is emptied before each first copy.
// files.copy runs in this process (go test -cpuprofile sees it); rclone's peak memory is its
// peak RSS, files.copy's the peak heap it added. Run with -benchtime=1x; hack/bench.sh collects
// the summary line.
func BenchmarkCopyVsRclone(b *testing.B) {
	if os.Getenv(s3test.BinaryEnv) == "" {
		b.Skipf("no S3 server: set $%s (hack/build-s3-server.sh prints it)", s3test.BinaryEnv)
	}
	rclone, err := exec.LookPath("rclone")
	if err != nil {
		b.Skip("no rclone: hack/install-bench-deps.sh installs it")
	}
	src := s3test.StartForTest(b)
	dst := s3test.StartForTest(b, s3test.Options{AccessKey: src.AccessKey, SecretKey: src.SecretKey})
	setEnv(b, src)
	bucket(b, src, "src")
	bucket(b, dst, "dst")
	files, bytes := seedBench(b, src.Client(), "src")
	// rclone is configured by its environment alone (no config file); the SDK's variables are
	// left out (rclone's SDK refuses an AWS_CA_BUNDLE with its own HTTP transport).
	rcloneEnv := []string{"RCLONE_CONFIG=" + b.TempDir() + "/none.conf"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "RCLONE_") {
			rcloneEnv = append(rcloneEnv, kv)
		}
	}
	for _, r := range []struct {
		name string
		srv  *s3test.Server
	}{{"SRC", src}, {"DST", dst}} {
		p := "RCLONE_CONFIG_" + r.name + "_"
		rcloneEnv = append(rcloneEnv, p+"TYPE=s3", p+"PROVIDER=Other", p+"ENDPOINT="+r.srv.Endpoint, p+"REGION="+r.srv.Region,
			p+"ACCESS_KEY_ID="+r.srv.AccessKey, p+"SECRET_ACCESS_KEY="+r.srv.SecretKey, p+"FORCE_PATH_STYLE=true")
	}
	rcloneCopy := func() (time.Duration, float64) {
		cmd := exec.Command(rclone, "copy", "src:src", "dst:dst", fmt.Sprintf("--transfers=%d", benchWorkers), fmt.Sprintf("--checkers=%d", benchWorkers))
		cmd.Env = rcloneEnv
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("rclone copy: %v\n%s", err, out.String())
		}
		elapsed := time.Since(start)
		return elapsed, float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss) / 1024
	}
	planrunCopy := func(wantCopied int64) (time.Duration, float64) {
		heap := startPeakHeap()
		start := time.Now()
		out := run(b, src.URL("src", ""), dst.URL("dst", ""), "", false)
		elapsed := time.Since(start)
		peak := heap.end()
		if plantest.Num(b, out, "files") != files || plantest.Num(b, out, "copied") != wantCopied {
			b.Fatalf("files.copy: %v files, %v copied; want %d, %d", out["files"], out["copied"], files, wantCopied)
		}
		return elapsed, peak
	}
	var t [4]time.Duration // files.copy, files.copy again, rclone, rclone again
	var mem [2]float64     // files.copy's peak heap, rclone's peak RSS (MiB)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		emptyBucket(b, dst.Client(), "dst")
		b.StartTimer()
		d, m := planrunCopy(files)
		t[0] += d
		mem[0] = max(mem[0], m)
		d, _ = planrunCopy(0)
		t[1] += d

		b.StopTimer()
		emptyBucket(b, dst.Client(), "dst")
		b.StartTimer()
		d, m = rcloneCopy()
		t[2] += d
		mem[1] = max(mem[1], m)
		if n, sz := countObjects(b, dst.Client(), "dst"); n != files || sz != bytes {
			b.Fatalf("rclone copied %d objects, %d bytes; want %d, %d", n, sz, files, bytes)
		}
		d, _ = rcloneCopy()
		t[3] += d
	}
	mbps := func(d time.Duration) float64 { return float64(bytes) * float64(b.N) / d.Seconds() / (1 << 20) }
	objps := func(d time.Duration) float64 { return float64(files) * float64(b.N) / d.Seconds() }
	b.ReportMetric(mbps(t[0]), "copy-MiB/s")
	b.ReportMetric(mbps(t[2]), "rclone-MiB/s")
	b.ReportMetric(objps(t[1]), "skip-obj/s")
	b.ReportMetric(objps(t[3]), "rclone-skip-obj/s")
	b.ReportMetric(mem[0], "peak-heap-MiB")
	b.ReportMetric(mem[1], "rclone-peak-RSS-MiB")
	fmt.Printf("BenchmarkCopyVsRclone: %d objects, %.0f MiB, S3 to S3 on loopback, %d workers / --transfers=%d --checkers=%d: "+
		"files.copy %.0f MiB/s vs rclone %.0f MiB/s: ratio %.2fx (target ≥ 1.0x); everything already there: files.copy %.0f objects/s vs rclone %.0f: ratio %.2fx; "+
		"peak memory: files.copy %.0f MiB heap, rclone %.0f MiB RSS\n",
		files, float64(bytes)/(1<<20), benchWorkers, benchWorkers, benchWorkers,
		mbps(t[0]), mbps(t[2]), t[2].Seconds()/t[0].Seconds(), objps(t[1]), objps(t[3]), t[3].Seconds()/t[1].Seconds(), mem[0], mem[1])
}
