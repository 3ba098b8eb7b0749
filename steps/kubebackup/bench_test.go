package kubebackup_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/internal/memprobe"
	"planrun.dev/planrun/internal/s3test"
	"planrun.dev/planrun/steps/kube/kubetest"
)

// Benchmarks (go test -run '^$' -bench . ./steps/kubebackup, or make bench): figures, never
// timed assertions. Both sides run against the same local API server in the same run.

// seed creates n objects of about 1 KiB in ns, half ConfigMaps and half Secrets, in parallel
// through a client without a client-side rate limit.
func seed(b *testing.B, c *kubetest.Cluster, ns string, n int) {
	b.Helper()
	cfg := rest.CopyConfig(c.CP.Config)
	cfg.QPS, cfg.Burst = -1, 0 // no client-side limit
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	text := strings.Repeat("0123456789abcdef", 56) // 896 bytes
	createMany(b, n, func(i int) error {
		name := fmt.Sprintf("obj-%06d", i)
		var err error
		if i%2 == 0 {
			_, err = cs.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"payload": text}}, metav1.CreateOptions{})
		} else {
			_, err = cs.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{"payload": []byte(text[:660])}}, metav1.CreateOptions{})
		}
		return err
	})
	b.Logf("seeded %d objects in %s in %s", n, ns, time.Since(start).Round(time.Millisecond))
}

func backupPlan(dir, ns string) string {
	return fmt.Sprintf("steps:\n  - {id: b, type: kube.backup, with: {to: %q, resources: [configmaps, secrets], namespaces: [%s]}}\n", dir, ns)
}

func backupOnce(b *testing.B, plan string, want int) {
	run := kubetest.Apply(b, main(), plan, kubetest.Options{})
	if run.Err != nil {
		b.Fatal(run.Err)
	}
	if got := run.Outputs(b, "b")["objects"]; fmt.Sprint(got) != strconv.Itoa(want) {
		b.Fatalf("backed up %v objects, want %d", got, want)
	}
}

// BenchmarkBackup10k: kube.backup of 10,000 ConfigMaps and Secrets (~1 KiB each) against
// `kubectl get configmaps,secrets -o yaml > file`.
func BenchmarkBackup10k(b *testing.B) {
	kubetest.Need(b, clusters)
	const n = 10_000
	c := clusters[0]
	ns := c.Namespace(b)
	seed(b, c, ns, n)
	var planrunRate, kubectlRate float64

	b.Run("planrun", func(b *testing.B) {
		plan := backupPlan(filepath.Join(b.TempDir(), "backup"), ns)
		for b.Loop() {
			backupOnce(b, plan, n)
		}
		perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		planrunRate = n / (perOp / 1e9)
		b.ReportMetric(planrunRate, "objects/s")
	})

	b.Run("kubectl-get-yaml", func(b *testing.B) {
		kubectl := kubetest.Kubectl()
		if kubectl == "" {
			b.Skip("no kubectl in $KUBEBUILDER_ASSETS (hack/build-control-plane.sh kube-apiserver etcd kubectl builds it)")
		}
		out := filepath.Join(b.TempDir(), "objects.yaml")
		for b.Loop() {
			f, err := os.Create(out)
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(kubectl, "--kubeconfig", c.CP.Kubeconfig, "--context", c.CP.ContextName, "get", "configmaps,secrets", "-n", ns, "-o", "yaml")
			cmd.Stdout = f
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				b.Fatalf("kubectl: %v: %s", err, stderr.String())
			}
			f.Close()
		}
		perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		kubectlRate = n / (perOp / 1e9)
		b.ReportMetric(kubectlRate, "objects/s")
	})

	if planrunRate > 0 && kubectlRate > 0 {
		fmt.Printf("BenchmarkBackup10k: kube.backup %.0f objects/s, kubectl get -o yaml %.0f objects/s: kube.backup is %.2fx kubectl\n",
			planrunRate, kubectlRate, planrunRate/kubectlRate)
	}
}

// BenchmarkBackupMemory: peak heap (HeapInuse sampled during the backup) and peak RSS (VmHWM,
// reset before each backup) for 10,000 and 50,000 objects; the target is 50k within 1.5x of 10k.
func BenchmarkBackupMemory(b *testing.B) {
	kubetest.Need(b, clusters)
	c := clusters[0]
	peaks := map[int][2]float64{}
	for _, n := range []int{10_000, 50_000} {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
			ns := c.Namespace(b)
			seed(b, c, ns, n)
			plan := backupPlan(filepath.Join(b.TempDir(), "backup"), ns)
			var peak memprobe.Peak
			for b.Loop() {
				b.StopTimer()
				stop := memprobe.Start()
				b.StartTimer()
				backupOnce(b, plan, n)
				b.StopTimer()
				peak = peak.Max(stop())
				b.StartTimer()
			}
			peakHeap, peakRSS := peak.Heap, peak.RSS
			const mib = 1 << 20
			b.ReportMetric(float64(peakHeap)/mib, "peak-heap-MiB")
			if peakRSS > 0 {
				b.ReportMetric(float64(peakRSS)/mib, "peak-rss-MiB")
			}
			peaks[n] = [2]float64{float64(peakHeap), float64(peakRSS)}
		})
	}
	if p10, p50 := peaks[10_000], peaks[50_000]; p10[0] > 0 && p50[0] > 0 {
		fmt.Printf("BenchmarkBackupMemory: peak heap 50k/10k = %.2f (%.1f / %.1f MiB)", p50[0]/p10[0], p50[0]/(1<<20), p10[0]/(1<<20))
		if p10[1] > 0 && p50[1] > 0 {
			fmt.Printf(", peak RSS 50k/10k = %.2f (%.1f / %.1f MiB)", p50[1]/p10[1], p50[1]/(1<<20), p10[1]/(1<<20))
		}
		fmt.Println(" (target ≤ 1.5)")
	}
}

// BenchmarkBackupS3: kube.backup of 10,000 ConfigMaps and Secrets (~1 KiB each) to a bucket prefix
// on a local S3 server (versitygw on loopback) against the same backup to a local folder. The two
// alternate within each iteration, which goes first alternating too, so that both see the same
// load of a shared machine; the figure is the median of the iterations' ratios, which one
// disturbed backup does not move. The target is S3 at 0.8x the local speed or better.
func BenchmarkBackupS3(b *testing.B) {
	kubetest.Need(b, clusters)
	const n = 10_000
	c := clusters[0]
	ns := c.Namespace(b)
	seed(b, c, ns, n)
	srv := startS3Bench(b)
	localPlan := backupPlan(filepath.Join(b.TempDir(), "backup"), ns)
	s3Plan := backupPlan(srv.URL("bench", "backup"), ns)
	backupOnce(b, s3Plan, n) // the first write to a bucket makes its folders: not what is measured
	backupOnce(b, localPlan, n)
	timed := func(plan string) time.Duration {
		start := time.Now()
		backupOnce(b, plan, n)
		return time.Since(start)
	}
	var local, remote time.Duration
	var ratios []float64
	for i := 0; b.Loop(); i++ {
		var l, r time.Duration
		if i%2 == 0 {
			l, r = timed(localPlan), timed(s3Plan)
		} else {
			r, l = timed(s3Plan), timed(localPlan)
		}
		local, remote = local+l, remote+r
		ratios = append(ratios, l.Seconds()/r.Seconds())
	}
	sort.Float64s(ratios)
	median := ratios[len(ratios)/2]
	if len(ratios)%2 == 0 {
		median = (ratios[len(ratios)/2-1] + ratios[len(ratios)/2]) / 2
	}
	localRate := float64(n*b.N) / local.Seconds()
	s3Rate := float64(n*b.N) / remote.Seconds()
	b.ReportMetric(localRate, "local-objects/s")
	b.ReportMetric(s3Rate, "s3-objects/s")
	b.ReportMetric(median, "s3/local")
	fmt.Printf("BenchmarkBackupS3: kube.backup to S3 %.0f objects/s, to a local folder %.0f objects/s: S3 is %.2fx local (median of %d alternating pairs; target ≥ 0.8)\n",
		s3Rate, localRate, median, len(ratios))
}

// BenchmarkBackupS3Memory: peak heap (in use, and live after each collection) and peak RSS of
// kube.backup to S3 for 2,000 and 10,000 objects (one namespace, so each file grows with the
// object count): memory stays flat.
func BenchmarkBackupS3Memory(b *testing.B) {
	kubetest.Need(b, clusters)
	c := clusters[0]
	srv := startS3Bench(b)
	peaks := map[int]memprobe.Peak{}
	for _, n := range []int{2_000, 10_000} {
		b.Run(fmt.Sprintf("%dk", n/1000), func(b *testing.B) {
			ns := c.Namespace(b)
			seed(b, c, ns, n)
			plan := backupPlan(srv.URL("bench", ns), ns)
			backupOnce(b, plan, n)
			var peak memprobe.Peak
			for b.Loop() {
				b.StopTimer()
				stop := memprobe.Start()
				b.StartTimer()
				backupOnce(b, plan, n)
				b.StopTimer()
				peak = peak.Max(stop())
				b.StartTimer()
			}
			const mib = 1 << 20
			b.ReportMetric(float64(peak.Heap)/mib, "peak-heap-MiB")
			b.ReportMetric(float64(peak.Live)/mib, "peak-live-MiB")
			if peak.RSS > 0 {
				b.ReportMetric(float64(peak.RSS)/mib, "peak-rss-MiB")
			}
			peaks[n] = peak
		})
	}
	if p2, p10 := peaks[2_000], peaks[10_000]; p2.Heap > 0 && p10.Heap > 0 {
		const mib = 1 << 20
		fmt.Printf("BenchmarkBackupS3Memory: peak heap 10k/2k = %.2f (%.1f / %.1f MiB), live heap %.2f (%.1f / %.1f MiB)",
			float64(p10.Heap)/float64(p2.Heap), float64(p10.Heap)/mib, float64(p2.Heap)/mib,
			float64(p10.Live)/float64(p2.Live), float64(p10.Live)/mib, float64(p2.Live)/mib)
		if p2.RSS > 0 && p10.RSS > 0 {
			fmt.Printf(", peak RSS %.2f (%.1f / %.1f MiB)", float64(p10.RSS)/float64(p2.RSS), float64(p10.RSS)/mib, float64(p2.RSS)/mib)
		}
		fmt.Println(" (target ≤ 1.5)")
	}
}

// startS3Bench starts an S3 server with a bucket "bench", its keys in the environment.
func startS3Bench(b *testing.B) *s3test.Server {
	b.Helper()
	srv := s3test.StartForTest(b)
	if err := srv.CreateBucket("bench"); err != nil {
		b.Fatal(err)
	}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		b.Setenv(k, v)
	}
	return srv
}
