package kubebackup_test

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubebackup"
)

// TestBackupProgress: while kube.backup lists in pages, it reports the objects read so far,
// rising page after page, of a total it knows from the API server's remainingItemCount (without
// a selector), or of a total of what it read once its lists are finished (with one); the last
// report counts every object backed up, of that many.
func TestBackupProgress(t *testing.T) {
	kubetest.Need(t, clusters)
	c := clusters[0]
	ns, other := c.Namespace(t), c.Namespace(t)
	const configMaps, secrets, others, pageSize = 300, 200, 150, 25
	kubebackup.SetPageSizeForTest(t, pageSize)
	labels := map[string]string{"suite": ns}
	createMany(t, configMaps, func(i int) error {
		l := labels
		if i%3 == 0 {
			l = nil // left out by the selector
		}
		_, err := c.Typed.CoreV1().ConfigMaps(ns).Create(ctx, configMap(fmt.Sprintf("cm-%03d", i), l, map[string]string{"i": fmt.Sprint(i)}), metav1.CreateOptions{})
		return err
	})
	createMany(t, secrets, func(i int) error {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s-%03d", i), Labels: labels}, StringData: map[string]string{"i": fmt.Sprint(i)}}
		_, err := c.Typed.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{})
		return err
	})
	createMany(t, others, func(i int) error {
		_, err := c.Typed.CoreV1().ConfigMaps(other).Create(ctx, configMap(fmt.Sprintf("cm-%03d", i), labels, nil), metav1.CreateOptions{})
		return err
	})

	for _, tc := range []struct {
		name, with string
		want       int64 // objects backed up
		// totalEarly: the first report has a total above what was read (the server said what
		// remains of the list).
		totalEarly bool
	}{
		{"namespace", fmt.Sprintf("resources: [configmaps, secrets], namespaces: [%s]", ns), configMaps + secrets, true},
		{"selector", fmt.Sprintf("resources: [configmaps, secrets], namespaces: [%s, %s], labelSelector: suite=%s", ns, other, ns), configMaps - configMaps/3 + secrets + others, false},
		// Across all namespaces with one left out: the estimate counts the objects of the
		// namespace left out until the list is finished.
		{"excluded namespace", fmt.Sprintf("resources: [configmaps], excludeNamespaces: [%s]", ns), -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu        sync.Mutex
				reports   []engine.Progress
				succeeded bool
				late      int // reports after the step succeeded
			)
			obs := engine.ObserverFunc(func(e engine.Event) {
				if e.StepID != "b" {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				switch {
				case e.Type == engine.EventStepSucceeded:
					succeeded = true
				case e.Type == engine.EventStepProgress && succeeded:
					late++
				case e.Type == engine.EventStepProgress:
					reports = append(reports, *e.Progress)
				}
			})
			dir := filepath.Join(t.TempDir(), "backup")
			run := kubetest.Apply(t, main(), fmt.Sprintf("steps:\n  - {id: b, type: kube.backup, with: {to: %s, %s}}\n", dir, tc.with),
				kubetest.Options{Observer: obs})
			if run.Err != nil {
				t.Fatal(run.Err)
			}
			objects := plantest.Num(t, run.Outputs(t, "b"), "objects")
			if tc.want >= 0 && objects != tc.want {
				t.Fatalf("backed up %d objects, want %d", objects, tc.want)
			}
			mu.Lock()
			defer mu.Unlock()
			if late > 0 {
				t.Errorf("%d progress reports after the step succeeded", late)
			}
			// Pages of 25 of 200 objects at least: a report for most of them.
			if len(reports) < 5 {
				t.Fatalf("%d progress reports, want several: %+v", len(reports), reports)
			}
			var prev engine.Progress
			known := false
			for i, p := range reports {
				switch {
				case p.Unit != "objects":
					t.Errorf("report %d: unit %q", i, p.Unit)
				case p.Done < prev.Done || p.Bytes < prev.Bytes:
					t.Errorf("report %d: %+v after %+v: went back", i, p, prev)
				case p.Done == 0:
					t.Errorf("report %d: %+v: nothing read", i, p)
				case p.Total > 0 && p.Total < p.Done:
					t.Errorf("report %d: %+v: more done than the total", i, p)
				case known && p.Total == 0:
					t.Errorf("report %d: %+v: the total is gone after %+v", i, p, prev)
				}
				known = known || p.Total > 0
				prev = p
			}
			if first := reports[0]; tc.totalEarly && first.Total <= first.Done {
				t.Errorf("first report %+v: want a total beyond what was read", first)
			}
			if before := reports[len(reports)-2]; before.Done >= objects {
				t.Errorf("next to last report %+v: want it before the end (%d objects)", before, objects)
			}
			if last := reports[len(reports)-1]; last.Done != objects || last.Total != objects || last.Bytes == 0 {
				t.Errorf("last report %+v, want %d of %d objects", last, objects, objects)
			}
			t.Logf("%d reports, first %+v, last %+v", len(reports), reports[0], reports[len(reports)-1])
		})
	}
}
