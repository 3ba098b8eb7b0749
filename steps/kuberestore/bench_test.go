package kuberestore_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/steps/kube/kubetest"
)

// Benchmarks (go test -run '^$' -bench Restore ./steps/kuberestore, or make bench): figures and
// ratios measured in the same run against the same local API server, never timed assertions.

const benchObjects = 10_000

// benchSet is the 10,000 objects of the restore benchmarks: half ConfigMaps, half Secrets,
// about 1 KiB each, as a backup holds them (UIDs, resource versions, managed fields).
func benchSet(srcNS string) []*unstructured.Unstructured {
	text := strings.Repeat("0123456789abcdef", 56) // 896 bytes
	secret := []byte(text[:660])                   // 880 bytes in base64
	objs := make([]*unstructured.Unstructured, 0, benchObjects)
	for i := 0; i < benchObjects; i++ {
		name := fmt.Sprintf("obj-%06d", i)
		if i%2 == 0 {
			objs = append(objs, configMap(srcNS, name, map[string]any{"payload": text}))
		} else {
			objs = append(objs, obj("Secret", srcNS, name, map[string]any{"type": "Opaque", "data": map[string]any{"payload": base64.StdEncoding.EncodeToString(secret)}}))
		}
	}
	return objs
}

// BenchmarkRestore10k restores 10,000 ConfigMaps and Secrets into an empty namespace three ways:
// a plain client-go parallel create (32 workers, no client-side rate limit: the baseline),
// kube.restore, and `kubectl apply --server-side`. The API server slows down as etcd fills up,
// so client-go and kube.restore alternate, in PLANRUN_BENCH_ROUNDS rounds (default 3) whose
// order flips each round; kubectl, ten times slower, runs once. It prints the medians and
// kube.restore's ratio to each (targets: ≥ 0.9 of client-go, ≥ 4 × kubectl).
func BenchmarkRestore10k(b *testing.B) {
	kubetest.Need(b, clusters)
	c := clusters[0]
	const src = "bench-src"
	objs := benchSet(src)
	dir := filepath.Join(b.TempDir(), "backup")
	writeBackup(b, dir, objs)
	cs := unthrottled(b, c.CP.Config)

	clientGo := func(b *testing.B, ns string) func() {
		typed := typedObjects(b, objs, ns)
		return func() { createParallel(b, cs, typed, 32) }
	}
	restore := func(b *testing.B, ns string) func() {
		plan := restorePlan(fmt.Sprintf(`{from: %q, namespaceMapping: {%s: %s}}`, dir, src, ns))
		return func() {
			run := kubetest.Apply(b, mainCluster(), plan, kubetest.Options{})
			if run.Err != nil {
				b.Fatal(run.Err)
			}
			if got := run.Journal.Step("s").Outputs["restored"]; fmt.Sprint(got) != fmt.Sprint(benchObjects) {
				b.Fatalf("restored %v objects, want %d", got, benchObjects)
			}
		}
	}
	kubectlApply := func(b *testing.B, ns string) func() {
		kubectl := kubetest.Kubectl()
		if kubectl == "" {
			b.Skip("no kubectl in $KUBEBUILDER_ASSETS (hack/build-control-plane.sh kube-apiserver etcd kubectl builds it)")
		}
		file := manifestFile(b, objs, ns)
		return func() {
			cmd := exec.Command(kubectl, "--kubeconfig", c.CP.Kubeconfig, "--context", c.CP.ContextName,
				"apply", "--server-side", "--field-manager", "bench", "-f", file)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil {
				b.Fatalf("kubectl apply: %v: %s", err, stderr.String())
			}
		}
	}

	rates := map[string][]float64{}
	measure := func(name string, prepare func(*testing.B, string) func()) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				b.StopTimer()
				run := prepare(b, c.Namespace(b))
				b.StartTimer()
				run()
			}
			r := benchObjects / (float64(b.Elapsed().Nanoseconds()) / float64(b.N) / 1e9)
			b.ReportMetric(r, "objects/s")
			rates[name] = append(rates[name], r)
		})
	}
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("PLANRUN_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	for r := 0; r < rounds; r++ {
		if r%2 == 0 {
			measure("client-go-parallel-create", clientGo)
			measure("kube-restore", restore)
		} else {
			measure("kube-restore", restore)
			measure("client-go-parallel-create", clientGo)
		}
	}
	measure("kubectl-apply-server-side", kubectlApply)

	p, g, k := median(rates["kube-restore"]), median(rates["client-go-parallel-create"]), median(rates["kubectl-apply-server-side"])
	if p > 0 {
		line := fmt.Sprintf("BenchmarkRestore10k: kube.restore %.0f objects/s (median of %d)", p, len(rates["kube-restore"]))
		if g > 0 {
			line += fmt.Sprintf("; client-go parallel create %.0f objects/s, ratio %.2f (target ≥ 0.90)", g, p/g)
		}
		if k > 0 {
			line += fmt.Sprintf("; kubectl apply --server-side %.0f objects/s, ratio %.1fx (target ≥ 4x)", k, p/k)
		}
		fmt.Println(line)
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// unthrottled is a clientset with no client-side rate limit, as a tuned baseline would use.
func unthrottled(b *testing.B, cfg *rest.Config) kubernetes.Interface {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = -1, 0
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	return cs
}

// typedObjects turns the backup objects into what a hand-written restore would send: typed
// objects in ns without server-owned fields.
func typedObjects(b *testing.B, objs []*unstructured.Unstructured, ns string) []any {
	out := make([]any, 0, len(objs))
	for _, u := range objs {
		var o interface {
			metav1.Object
		}
		switch u.GetKind() {
		case "ConfigMap":
			o = &corev1.ConfigMap{}
		case "Secret":
			o = &corev1.Secret{}
		default:
			b.Fatalf("unexpected kind %s", u.GetKind())
		}
		raw, err := json.Marshal(u.Object)
		if err != nil {
			b.Fatal(err)
		}
		if err := json.Unmarshal(raw, o); err != nil {
			b.Fatal(err)
		}
		o.SetNamespace(ns)
		o.SetUID("")
		o.SetResourceVersion("")
		o.SetGeneration(0)
		o.SetCreationTimestamp(metav1.Time{})
		o.SetManagedFields(nil)
		out = append(out, o)
	}
	return out
}

// createParallel creates objects with n workers.
func createParallel(b *testing.B, cs kubernetes.Interface, objs []any, n int) {
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(len(objs)) {
					return
				}
				var err error
				switch o := objs[i].(type) {
				case *corev1.ConfigMap:
					_, err = cs.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
				case *corev1.Secret:
					_, err = cs.CoreV1().Secrets(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// manifestFile writes the objects as a multi-document manifest in ns, the way an operator would
// feed them to kubectl.
func manifestFile(b *testing.B, objs []*unstructured.Unstructured, ns string) string {
	path := filepath.Join(b.TempDir(), "objects.yaml")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for _, u := range objs {
		c := u.DeepCopy()
		c.SetNamespace(ns)
		c.SetUID("")
		c.SetResourceVersion("")
		c.SetGeneration(0)
		c.SetManagedFields(nil)
		unstructured.RemoveNestedField(c.Object, "metadata", "creationTimestamp")
		raw, err := json.Marshal(c.Object)
		if err != nil {
			b.Fatal(err)
		}
		w.WriteString("---\n")
		w.Write(raw)
		w.WriteString("\n")
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return path
}
