package kubescale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

// Annotations kube.quiesce leaves on the objects it changes, holding the original value as
// JSON. Like AnnotationReplicas they are written only when absent and removed by undoing.
const (
	AnnotationParallelism  = "planrun.dev/previous-parallelism"
	AnnotationSuspend      = "planrun.dev/previous-suspend"
	AnnotationNodeSelector = "planrun.dev/previous-node-selector"
	// QuiescedNodeSelector is the nodeSelector key (value "true") that parks a DaemonSet: no
	// node carries it, so its pods go away.
	QuiescedNodeSelector = "planrun.dev/quiesced"
)

var namespacesGVR = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}

func init() {
	engine.Register(engine.StepType{
		Name: "kube.quiesce",
		Doc:  "Stop the workloads of namespaces (replicas 0, Job parallelism 0, CronJobs suspended, DaemonSets parked) and wait until their pods are gone; undoes by restoring them.",
		New:  func() engine.Action { return new(Quiesce) },
	})
}

// Quiesce stops every workload of the given namespaces, as MTC does before a final migration:
// Deployments, StatefulSets and ReplicaSets without a controller go to 0 replicas, Jobs to
// parallelism 0, CronJobs are suspended, DaemonSets get a nodeSelector that matches no node.
// Then it waits until the pods of those workloads are gone: the controllers delete the pods
// after the step's writes, and each pod takes up to its grace period to stop and then has its
// volumes unmounted before it goes, while the step after a quiesce (a backup, a copy of the data)
// counts on nothing writing any more.
type Quiesce struct {
	kube.ClusterRef `yaml:",inline"`
	Namespace       string          `yaml:"namespace" doc:"Namespace to quiesce."`
	Namespaces      []string        `yaml:"namespaces" doc:"Namespaces to quiesce (with or instead of namespace)."`
	LabelSelector   string          `yaml:"labelSelector" doc:"Only workloads matching this label selector."`
	Timeout         engine.Duration `yaml:"timeout" doc:"How long to wait until the pods of the quiesced workloads are gone (default 10m); the step fails naming the pods left."`
}

// defaultTimeout bounds the wait for the pods to stop: long enough for pods with a generous
// grace period (databases often take minutes to shut down cleanly).
const defaultTimeout = 10 * time.Minute

// pollInterval is how often the pods are listed while waiting for them to stop.
const pollInterval = 500 * time.Millisecond

var (
	_ engine.Action     = (*Quiesce)(nil)
	_ engine.Validator  = (*Quiesce)(nil)
	_ engine.Undoer     = (*Quiesce)(nil)
	_ engine.Describer  = (*Quiesce)(nil)
	_ kube.AccessNeeder = (*Quiesce)(nil)
)

// Access implements kube.AccessNeeder:
//   - get on namespaces: each namespace is checked to exist;
//   - get, list and patch on each kind of workload (Deployments, StatefulSets, ReplicaSets, Jobs,
//     CronJobs, DaemonSets): they are listed, stopped and restored by undo with merge patches,
//     read again after a conflict (ReplicaSets are also listed to find a Deployment's pods);
//   - list on pods: the step waits until the pods of the stopped workloads are gone.
func (q *Quiesce) Access() []kube.Rule {
	out := []kube.Rule{kube.ResourceRule("namespaces", "get"), kube.ResourceRule("pods", "list")}
	for _, w := range workloads {
		out = append(out, kube.KindRule(w.apiVersion, w.kind, "get", "list", "patch"))
	}
	return out
}

// Quiesced is what kube.quiesce found on one object; outputs.objects lists them. Previous is
// the original value of Field: replicas or parallelism (a number), suspend (a boolean),
// nodeSelector ({existed, value} of the planrun.dev/quiesced key).
type Quiesced struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	Field      string `json:"field"`
	Previous   any    `json:"previous,omitempty"`
	Changed    bool   `json:"changed"`
}

// workload is how one kind is quiesced and restored.
type workload struct {
	apiVersion, kind string
	field            string
	annotation       string
	// stopsPods: once quiesced, the kind's controller deletes its pods, and the step waits for
	// them. Not so for a CronJob: suspending it only stops new runs; its running Jobs are Jobs,
	// quiesced as such.
	stopsPods bool
	skip      func(*unstructured.Unstructured) bool
	// get returns the current value, JSON-shaped.
	get func(*unstructured.Unstructured) any
	// quiesced is the value that means stopped.
	quiesced any
	// set returns the merge patch that gives the field value v (a value get returned).
	set func(v any) map[string]any
}

var workloads = []workload{
	replicasOf("apps/v1", "Deployment", nil),
	replicasOf("apps/v1", "StatefulSet", nil),
	replicasOf("apps/v1", "ReplicaSet", func(o *unstructured.Unstructured) bool {
		return metav1.GetControllerOf(o) != nil // its Deployment (or other owner) decides
	}),
	{
		apiVersion: "batch/v1", kind: "Job", field: "parallelism", annotation: AnnotationParallelism, stopsPods: true,
		get:      func(o *unstructured.Unstructured) any { return intField(o, 1, "spec", "parallelism") },
		quiesced: int64(0),
		set:      func(v any) map[string]any { return map[string]any{"spec": map[string]any{"parallelism": v}} },
	},
	{
		apiVersion: "batch/v1", kind: "CronJob", field: "suspend", annotation: AnnotationSuspend,
		get: func(o *unstructured.Unstructured) any {
			b, _, _ := unstructured.NestedBool(o.Object, "spec", "suspend")
			return b
		},
		quiesced: true,
		set:      func(v any) map[string]any { return map[string]any{"spec": map[string]any{"suspend": v}} },
	},
	{
		apiVersion: "apps/v1", kind: "DaemonSet", field: "nodeSelector", annotation: AnnotationNodeSelector, stopsPods: true,
		get: func(o *unstructured.Unstructured) any {
			v, ok, _ := unstructured.NestedString(o.Object, "spec", "template", "spec", "nodeSelector", QuiescedNodeSelector)
			if !ok {
				return map[string]any{"existed": false}
			}
			return map[string]any{"existed": true, "value": v}
		},
		quiesced: map[string]any{"existed": true, "value": "true"},
		set: func(v any) map[string]any {
			var value any // nil removes the key
			if m, ok := v.(map[string]any); ok && m["existed"] == true {
				value = m["value"]
			}
			return map[string]any{"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
				"nodeSelector": map[string]any{QuiescedNodeSelector: value}}}}}
		},
	},
}

func replicasOf(apiVersion, kind string, skip func(*unstructured.Unstructured) bool) workload {
	return workload{
		apiVersion: apiVersion, kind: kind, field: "replicas", annotation: AnnotationReplicas, skip: skip, stopsPods: true,
		get:      func(o *unstructured.Unstructured) any { return intField(o, 1, "spec", "replicas") },
		quiesced: int64(0),
		set:      func(v any) map[string]any { return map[string]any{"spec": map[string]any{"replicas": v}} },
	}
}

func intField(o *unstructured.Unstructured, def int64, path ...string) int64 {
	if v, ok, _ := unstructured.NestedInt64(o.Object, path...); ok {
		return v
	}
	return def
}

// canon is the JSON form of a value, to compare values that went through JSON and those that
// did not (int64 3 and float64 3 are both "3").
func canon(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// Validate implements engine.Validator.
func (q *Quiesce) Validate() error {
	if q.Namespace == "" && len(q.Namespaces) == 0 {
		return errors.New("namespace or namespaces: one is required")
	}
	for i, ns := range q.Namespaces {
		if ns == "" {
			return fmt.Errorf("namespaces[%d]: must not be empty", i)
		}
	}
	if q.LabelSelector != "" {
		if _, err := labels.Parse(q.LabelSelector); err != nil {
			return fmt.Errorf("labelSelector: %v", err)
		}
	}
	return nil
}

func (q *Quiesce) namespaces() []string {
	seen := map[string]bool{}
	var out []string
	for _, ns := range append([]string{q.Namespace}, q.Namespaces...) {
		if ns != "" && !seen[ns] {
			seen[ns] = true
			out = append(out, ns)
		}
	}
	return out
}

// Describe implements engine.Describer.
func (q *Quiesce) Describe() string {
	return fmt.Sprintf("quiesce the workloads of namespace(s) %v", q.namespaces())
}

// Run implements engine.Action.
func (q *Quiesce) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	c, err := q.Client(rc)
	if err != nil {
		return nil, err
	}
	objects := []Quiesced{}
	changed := 0
	// The workloads whose pods must go, by UID (what a pod's owner reference names), found
	// stopped already or not: a run resumed after a crash waits for them too.
	stopped := map[types.UID]string{}
	err = q.each(ctx, c, func(w *workload, obj *unstructured.Unstructured) error {
		rec, err := quiesceOne(ctx, rc, c, w, obj)
		if err != nil {
			return err
		}
		if rec.Changed {
			changed++
		}
		if w.stopsPods {
			stopped[obj.GetUID()] = kube.ObjectName(w.kind, obj.GetNamespace(), obj.GetName())
		}
		objects = append(objects, rec)
		rc.Progress(engine.Progress{Done: int64(len(objects)), Unit: "objects"})
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := engine.Outputs{"objects": objects, "changed": changed, "count": len(objects)}
	if rc.DryRun {
		out["dryRun"] = true
		return out, nil
	}
	if err := q.waitStopped(ctx, rc, c, stopped); err != nil {
		return nil, err
	}
	return out, nil
}

// waitStopped waits until the pods of the stopped workloads are gone. A pod being deleted counts
// until it is gone, whatever its phase: its containers may still be stopping, and then its
// volumes are unmounted (the kubelet removes the pod only after that), which a backup of the
// data that follows a quiesce needs. A pod that is not being deleted counts unless it has
// finished: the completed pods of a Job stay after its parallelism goes to 0, and run nothing.
func (q *Quiesce) waitStopped(ctx context.Context, rc *engine.RunContext, c *kube.Client, stopped map[types.UID]string) error {
	if len(stopped) == 0 {
		return nil
	}
	timeout := time.Duration(q.Timeout)
	if timeout == 0 {
		timeout = defaultTimeout
	}
	deadline := time.Now().Add(timeout)
	total := -1
	for {
		left, err := q.podsLeft(ctx, c, stopped)
		if err != nil {
			return err
		}
		if total < 0 {
			total = len(left)
			if total > 0 {
				rc.Logger.Info("waiting for the pods of the quiesced workloads to stop", "pods", total)
			}
		}
		if total > 0 {
			rc.Progress(engine.Progress{Done: int64(max(total-len(left), 0)), Total: int64(total), Unit: "pods stopped"})
		}
		if len(left) == 0 {
			return nil
		}
		if !time.Now().Before(deadline) {
			shown, more := left, ""
			if len(shown) > 10 {
				shown, more = shown[:10], fmt.Sprintf(" and %d more", len(left)-10)
			}
			return fmt.Errorf("%d pod(s) of the quiesced workloads still there after %s: %s%s",
				len(left), timeout, strings.Join(shown, ", "), more)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// podsLeft lists the pods of the stopped workloads that waitStopped waits for, as "Pod ns/name
// of Kind ns/owner (phase[, being deleted])", sorted. A pod belongs to a workload through its
// controller reference; a Deployment's pods belong to its ReplicaSets, whatever their labels (the
// step's label selector chose the Deployment, not them).
func (q *Quiesce) podsLeft(ctx context.Context, c *kube.Client, stopped map[types.UID]string) ([]string, error) {
	rsMapping, err := c.Mapping("apps/v1", "ReplicaSet")
	if err != nil {
		return nil, err
	}
	podMapping, err := c.Mapping("v1", "Pod")
	if err != nil {
		return nil, err
	}
	var left []string
	for _, ns := range q.namespaces() {
		via := map[types.UID]string{} // ReplicaSet -> its stopped Deployment
		err := listPages(ctx, c.Resource(rsMapping, ns), metav1.ListOptions{}, func(rs *unstructured.Unstructured) error {
			if ref := metav1.GetControllerOf(rs); ref != nil {
				if owner, ok := stopped[ref.UID]; ok {
					via[rs.GetUID()] = owner
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list ReplicaSets in namespace %s: %w", ns, kube.Classify(err))
		}
		err = listPages(ctx, c.Resource(podMapping, ns), metav1.ListOptions{}, func(pod *unstructured.Unstructured) error {
			ref := metav1.GetControllerOf(pod)
			if ref == nil {
				return nil
			}
			owner, ok := stopped[ref.UID]
			if !ok {
				owner, ok = via[ref.UID]
			}
			if !ok {
				return nil
			}
			phase, _, _ := unstructured.NestedString(pod.Object, "status", "phase")
			state := phase
			if pod.GetDeletionTimestamp() != nil {
				state += ", being deleted"
			} else if phase == "Succeeded" || phase == "Failed" {
				return nil // finished and kept, as a Job keeps its completed pods
			}
			left = append(left, fmt.Sprintf("%s of %s (%s)", kube.ObjectName("Pod", ns, pod.GetName()), owner, state))
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list pods in namespace %s: %w", ns, kube.Classify(err))
		}
	}
	sort.Strings(left)
	return left, nil
}

// each calls fn for every workload of the step's namespaces, kind by kind.
func (q *Quiesce) each(ctx context.Context, c *kube.Client, fn func(*workload, *unstructured.Unstructured) error) error {
	for _, ns := range q.namespaces() {
		if _, err := c.Dynamic.Resource(namespacesGVR).Get(ctx, ns, metav1.GetOptions{}); err != nil {
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("namespace %s not found", ns)
			}
			return kube.ObjectError("Namespace", "", ns, err)
		}
		for i := range workloads {
			w := &workloads[i]
			m, err := c.Mapping(w.apiVersion, w.kind)
			if err != nil {
				return err
			}
			var fnErr error
			err = listPages(ctx, c.Resource(m, ns), metav1.ListOptions{LabelSelector: q.LabelSelector}, func(obj *unstructured.Unstructured) error {
				if w.skip != nil && w.skip(obj) {
					return nil
				}
				fnErr = fn(w, obj)
				return fnErr
			})
			if fnErr != nil {
				return fnErr
			}
			if err != nil {
				return fmt.Errorf("list %s in namespace %s: %w", w.kind, ns, kube.Classify(err))
			}
		}
	}
	return nil
}

// quiesceOne stops one object with one merge patch that also records the original value in
// the annotation (when absent), guarded by the resourceVersion read; when the guard fails (a
// controller wrote the object in between), it reads the object again and starts over. The
// annotation, when present, is the original value: a rerun after a crash finds the object
// already stopped and still reports what it was before.
func quiesceOne(ctx context.Context, rc *engine.RunContext, c *kube.Client, w *workload, obj *unstructured.Unstructured) (Quiesced, error) {
	ns, name := obj.GetNamespace(), obj.GetName()
	var rec Quiesced
	first := true
	err := onConflict(func() error {
		if !first {
			m, err := c.Mapping(w.apiVersion, w.kind)
			if err != nil {
				return err
			}
			if obj, err = c.Resource(m, ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
				return kube.ObjectError(w.kind, ns, name, err)
			}
		}
		first = false
		var err error
		rec, err = quiesceOnce(ctx, rc, c, w, obj)
		return err
	})
	return rec, err
}

func quiesceOnce(ctx context.Context, rc *engine.RunContext, c *kube.Client, w *workload, obj *unstructured.Unstructured) (Quiesced, error) {
	ns, name := obj.GetNamespace(), obj.GetName()
	rec := Quiesced{APIVersion: w.apiVersion, Kind: w.kind, Namespace: ns, Name: name, Field: w.field}
	current := w.get(obj)
	original := current
	raw, has := obj.GetAnnotations()[w.annotation]
	if has {
		if err := json.Unmarshal([]byte(raw), &original); err != nil {
			return rec, kube.ObjectError(w.kind, ns, name, fmt.Errorf("annotation %s: not JSON: %q", w.annotation, raw))
		}
	}
	rec.Previous = original
	if canon(current) == canon(w.quiesced) {
		return rec, nil
	}
	patch := w.set(w.quiesced)
	md := map[string]any{"resourceVersion": obj.GetResourceVersion()}
	if !has {
		md["annotations"] = map[string]any{w.annotation: canon(current)}
	}
	patch["metadata"] = md
	m, err := c.Mapping(w.apiVersion, w.kind)
	if err != nil {
		return rec, err
	}
	if _, err := mergePatch(ctx, rc, c.Resource(m, ns), name, patch); err != nil {
		return rec, kube.ObjectError(w.kind, ns, name, err)
	}
	rec.Changed = true
	rc.Logger.Info("quiesced", "object", kube.ObjectName(w.kind, ns, name), w.field, canon(current), "dryRun", rc.DryRun)
	return rec, nil
}

// Undo implements engine.Undoer: every object recorded in the outputs gets its original value
// back (from the outputs, else from its annotation) and loses the annotation. Without recorded
// outputs, every workload of the namespaces that carries an annotation is restored from it.
// Undo does not wait for the pods to run again: a pod that cannot start (its image gone, a
// quota) would hold up the rest of the rollback; a kube.wait step waits for them when a plan
// needs that.
func (q *Quiesce) Undo(ctx context.Context, rc *engine.RunContext, outputs engine.Outputs) error {
	if dry, _ := outputs["dryRun"].(bool); dry {
		return nil // nothing was changed
	}
	c, err := q.Client(rc)
	if err != nil {
		return err
	}
	raw, ok := outputs["objects"]
	if !ok {
		return q.each(ctx, c, func(w *workload, obj *unstructured.Unstructured) error {
			if _, has := obj.GetAnnotations()[w.annotation]; !has {
				return nil
			}
			return restoreWorkload(ctx, rc, c, w, obj, nil)
		})
	}
	var recs []Quiesced
	if err := roundTrip(raw, &recs); err != nil {
		return fmt.Errorf("outputs.objects: %w", err)
	}
	for i, rec := range recs {
		w := workloadFor(rec.Kind)
		if w == nil {
			return fmt.Errorf("outputs.objects[%d]: unknown kind %q", i, rec.Kind)
		}
		m, err := c.Mapping(w.apiVersion, w.kind)
		if err != nil {
			return err
		}
		obj, err := c.Resource(m, rec.Namespace).Get(ctx, rec.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			rc.Logger.Warn("object gone, not restored", "object", kube.ObjectName(rec.Kind, rec.Namespace, rec.Name))
			continue
		}
		if err != nil {
			return kube.ObjectError(rec.Kind, rec.Namespace, rec.Name, err)
		}
		if err := restoreWorkload(ctx, rc, c, w, obj, rec.Previous); err != nil {
			return err
		}
		rc.Progress(engine.Progress{Done: int64(i + 1), Total: int64(len(recs)), Unit: "objects"})
	}
	return nil
}

func workloadFor(kind string) *workload {
	for i := range workloads {
		if workloads[i].kind == kind {
			return &workloads[i]
		}
	}
	return nil
}

// restoreWorkload gives obj back its original value (previous, else the annotation's) and
// removes the annotation, in one patch; it does nothing when both are already so.
func restoreWorkload(ctx context.Context, rc *engine.RunContext, c *kube.Client, w *workload, obj *unstructured.Unstructured, previous any) error {
	ns, name := obj.GetNamespace(), obj.GetName()
	raw, has := obj.GetAnnotations()[w.annotation]
	if previous == nil && has {
		if err := json.Unmarshal([]byte(raw), &previous); err != nil {
			return kube.ObjectError(w.kind, ns, name, fmt.Errorf("annotation %s: not JSON: %q", w.annotation, raw))
		}
	}
	patch := map[string]any{}
	if previous != nil && canon(w.get(obj)) != canon(previous) {
		patch = w.set(previous)
	}
	if has {
		patch["metadata"] = map[string]any{"annotations": map[string]any{w.annotation: nil}}
	}
	if len(patch) == 0 {
		return nil
	}
	m, err := c.Mapping(w.apiVersion, w.kind)
	if err != nil {
		return err
	}
	if _, err := mergePatch(ctx, rc, c.Resource(m, ns), name, patch); err != nil {
		return kube.ObjectError(w.kind, ns, name, err)
	}
	rc.Logger.Info("restored", "object", kube.ObjectName(w.kind, ns, name), w.field, canon(previous))
	return nil
}
