package kubevolumes_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubevolumes"
)

// outcome is a run of a plan with what it reported on the way.
type outcome struct {
	j        *engine.Journal
	err      error
	store    engine.Store
	warnings []string
	last     engine.Progress // the last progress of step s
	reports  int             // progress events of step s
}

func (o *outcome) outputs(t *testing.T) engine.Outputs {
	t.Helper()
	if o.err != nil {
		t.Fatalf("run failed: %v", o.err)
	}
	return o.j.Step("s").Outputs
}

// apply runs p as run id in store (a new one when nil); stop, if set, is asked at every event
// and ends the run (as an interrupt) when it returns true. resume continues run id instead.
func apply(t *testing.T, p *engine.Plan, store engine.Store, id string, resume bool, stop func(engine.Event) bool) *outcome {
	t.Helper()
	if store == nil {
		store = engine.NewDirStore(filepath.Join(t.TempDir(), "runs"))
	}
	o := &outcome{store: store}
	c, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var mu sync.Mutex
	r := &engine.Runner{Store: store, Observer: engine.ObserverFunc(func(e engine.Event) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case e.Type == engine.EventStepWarning:
			o.warnings = append(o.warnings, e.Message)
		case e.Type == engine.EventStepProgress && e.StepID == "s":
			o.last = *e.Progress
			o.reports++
		}
		if stop != nil && stop(e) {
			cancel()
		}
	})}
	if resume {
		o.j, o.err = r.Resume(c, id, func(*engine.Journal) (*engine.Plan, error) { return p, nil })
	} else {
		o.j, o.err = r.Apply(c, p, engine.ApplyOptions{RunID: id})
	}
	return o
}

// load loads a plan body for the test's clusters.
func load(t *testing.T, body string) *engine.Plan {
	t.Helper()
	return kubetest.Load(t, both(), body, kubetest.Options{})
}

// podRecorder keeps every mover pod created in a namespace, as first seen.
type podRecorder struct {
	mu   sync.Mutex
	pods []corev1.Pod
}

func recordPods(t *testing.T, cs kubernetes.Interface, ns string) *podRecorder {
	t.Helper()
	w, err := cs.CoreV1().Pods(ns).Watch(ctx(), metav1.ListOptions{LabelSelector: kubevolumes.StepLabel})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	r := &podRecorder{}
	go func() {
		for ev := range w.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type == watch.Added {
				r.mu.Lock()
				r.pods = append(r.pods, *p)
				r.mu.Unlock()
			}
		}
	}()
	return r
}

// get returns the pods seen whose name starts with prefix.
func (r *podRecorder) get(prefix string) []corev1.Pod {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []corev1.Pod
	for _, p := range r.pods {
		if strings.HasPrefix(p.Name, prefix) {
			out = append(out, p)
		}
	}
	return out
}

// volumeDir is the folder of the node's local volume that a claim is bound to.
func volumeDir(t *testing.T, c *kubetest.Cluster, ns, claim string) string {
	t.Helper()
	pvc, err := c.Typed.CoreV1().PersistentVolumeClaims(ns).Get(ctx(), claim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range c.CP.LocalVolumes {
		if v.Name == pvc.Spec.VolumeName {
			return v.Path
		}
	}
	t.Fatalf("claim %s/%s is bound to %q, not one of the node's local volumes", ns, claim, pvc.Spec.VolumeName)
	return ""
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// logs reads the mover logs kept in step s's folder of run id: file name → content.
func logs(t *testing.T, store engine.Store, id string) map[string]string {
	t.Helper()
	dir, err := store.(*engine.DirStore).ArtifactDir(id, "s")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		out[e.Name()] = readFile(t, filepath.Join(dir, e.Name()))
	}
	return out
}

// pollGone waits until gone reports true.
func pollGone(t *testing.T, what string, gone func() bool) {
	t.Helper()
	kubetest.Poll(t, what+" gone", func() (bool, error) { return gone(), nil })
}

func writeFile(dir, name, content string) error {
	return os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
}
