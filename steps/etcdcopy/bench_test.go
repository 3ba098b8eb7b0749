package etcdcopy_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
)

// BenchmarkCopy100k copies 100,000 keys of 1 KiB between the two etcd servers of the package,
// with etcd.copy then etcd.verify, and with `etcdctl make-mirror` (which never says it is done:
// the target is polled until it holds every key). Run with -benchtime=1x; hack/bench.sh collects
// the summary line.
func BenchmarkCopy100k(b *testing.B) {
	need(b)
	const n, size = 100000, 1024
	from := "/bench100k/"
	ctx := context.Background()
	if resp, err := src.Get(ctx, from, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != n {
		seedParallel(b, from, n, size)
	}
	rates := map[string]float64{}
	b.Run("etcd.copy+verify", func(b *testing.B) {
		var keys int64
		var elapsed time.Duration
		for i := 0; i < b.N; i++ {
			to := fmt.Sprintf("/copy-%d-%d/", time.Now().UnixNano(), i)
			start := time.Now()
			j, err := apply(b, datastores(fmt.Sprintf(`steps:
  - {id: copy, type: etcd.copy, with: {source: src, target: dst, prefix: %q, targetPrefix: %q}}
  - {id: verify, type: etcd.verify, with: {source: src, target: dst, prefix: %q, targetPrefix: %q, revision: "${{ steps.copy.outputs.revision }}"}}
`, from, to, from, to)), runOpts{})
			elapsed += time.Since(start)
			if err != nil {
				b.Fatal(err)
			}
			if got := plantest.Num(b, j.Step("verify").Outputs, "keys"); got != n {
				b.Fatalf("verified %d keys, want %d", got, n)
			}
			keys += n
			b.StopTimer()
			if _, err := dst.Delete(ctx, to, clientv3.WithPrefix()); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		rates["copy"] = float64(keys) / elapsed.Seconds()
		b.ReportMetric(rates["copy"], "keys/s")
	})
	b.Run("etcdctl-make-mirror", func(b *testing.B) {
		etcdctl := findEtcdctl(ctx)
		if etcdctl == "" {
			b.Skip("no etcdctl: set ETCDCTL, or build it beside etcd with hack/build-control-plane.sh etcdctl")
		}
		var keys int64
		var elapsed time.Duration
		for i := 0; i < b.N; i++ {
			to := fmt.Sprintf("/mirror-%d-%d/", time.Now().UnixNano(), i)
			start := time.Now()
			cmd := exec.Command(etcdctl, "make-mirror", "--endpoints", srcURL, "--prefix", from, "--dest-prefix", to, dstURL)
			var out strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { _ = cmd.Wait(); close(exited) }()
			for {
				resp, err := dst.Get(ctx, to, clientv3.WithPrefix(), clientv3.WithCountOnly())
				if err != nil {
					_ = cmd.Process.Kill()
					b.Fatal(err)
				}
				if resp.Count >= n {
					break
				}
				select {
				case <-exited:
					b.Fatalf("make-mirror exited at %d keys: %s", resp.Count, out.String())
				default:
				}
				if time.Since(start) > 30*time.Minute {
					_ = cmd.Process.Kill()
					b.Fatalf("make-mirror stopped at %d keys: %s", resp.Count, out.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			elapsed += time.Since(start)
			_ = cmd.Process.Kill()
			<-exited
			keys += n
			b.StopTimer()
			if _, err := dst.Delete(ctx, to, clientv3.WithPrefix()); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		rates["mirror"] = float64(keys) / elapsed.Seconds()
		b.ReportMetric(rates["mirror"], "keys/s")
	})
	if rates["copy"] > 0 && rates["mirror"] > 0 {
		fmt.Printf("BenchmarkCopy100k: etcd.copy+verify %.0f keys/s, etcdctl make-mirror %.0f keys/s: ratio %.1fx (target ≥ 10x)\n",
			rates["copy"], rates["mirror"], rates["copy"]/rates["mirror"])
	}
}

// seedParallel puts n keys of size bytes under p with a few writers.
func seedParallel(b *testing.B, p string, n, size int) {
	b.Helper()
	ctx := context.Background()
	if _, err := src.Delete(ctx, p, clientv3.WithPrefix()); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	const per = 100
	next := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var ops []clientv3.Op
				for j := i; j < n && j < i+per; j++ {
					ops = append(ops, clientv3.OpPut(key(p, j), value(j, size)))
				}
				if _, err := src.Txn(ctx).Then(ops...).Commit(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := 0; i < n; i += per {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			b.Fatal(err)
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// findEtcdctl looks for etcdctl in $ETCDCTL, beside the etcd binary, then in $PATH.
func findEtcdctl(ctx context.Context) string {
	if p := os.Getenv("ETCDCTL"); p != "" {
		return p
	}
	if bin, err := controlplane.FindBinaries(ctx); err == nil {
		if p := filepath.Join(bin, "etcdctl"); fileExists(p) {
			return p
		}
	}
	p, _ := exec.LookPath("etcdctl")
	return p
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
