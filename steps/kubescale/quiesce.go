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
		Doc:  "Stop the workloads of namespaces (replicas 0, Job parallelism 0, CronJobs suspended, DaemonSets parked); undoes by restoring them.",
		New:  func() engine.Action { return new(Quiesce) },
	})
}

// Quiesce stops every workload of the given namespaces, as MTC does before a final migration:
// Deployments, StatefulSets and ReplicaSets without a controller go to 0 replicas, Jobs to
// parallelism 0, CronJobs are suspended, DaemonSets get a nodeSelector that matches no node.
type Quiesce struct {
	kube.ClusterRef `yaml:",inline"`
	Namespace       string   `yaml:"namespace" doc:"Namespace to quiesce."`
	Namespaces      []string `yaml:"namespaces" doc:"Namespaces to quiesce (with or instead of namespace)."`
	LabelSelector   string   `yaml:"labelSelector" doc:"Only workloads matching this label selector."`
	// Wait exists because stopping a workload only asks: its pods run on, and write, until
	// their controllers delete them and their grace period ends (MTC waits for them too).
	Wait    bool            `yaml:"wait" doc:"Wait until the pods of the quiesced workloads (and of their Deployments' ReplicaSets) are gone or finished."`
	Timeout engine.Duration `yaml:"timeout" doc:"How long wait waits for the pods (default 5m)."`
}

var (
	_ engine.Action    = (*Quiesce)(nil)
	_ engine.Validator = (*Quiesce)(nil)
	_ engine.Undoer    = (*Quiesce)(nil)
	_ engine.Describer = (*Quiesce)(nil)
)

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
	skip             func(*unstructured.Unstructured) bool
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
		apiVersion: "batch/v1", kind: "Job", field: "parallelism", annotation: AnnotationParallelism,
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
		apiVersion: "apps/v1", kind: "DaemonSet", field: "nodeSelector", annotation: AnnotationNodeSelector,
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
		apiVersion: apiVersion, kind: kind, field: "replicas", annotation: AnnotationReplicas, skip: skip,
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
	if q.Timeout < 0 {
		return fmt.Errorf("timeout: must not be negative, got %s", time.Duration(q.Timeout))
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
	owners := map[types.UID]string{} // the workloads, whose pods wait waits for
	err = q.each(ctx, c, func(w *workload, obj *unstructured.Unstructured) error {
		owners[obj.GetUID()] = w.kind
		rec, err := quiesceOne(ctx, rc, c, w, obj)
		if err != nil {
			return err
		}
		if rec.Changed {
			changed++
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
	if q.Wait {
		timeout := time.Duration(q.Timeout)
		if timeout == 0 {
			timeout = defaultWaitTimeout
		}
		if err := q.waitForPods(ctx, rc, c, owners, timeout); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// waitForPods waits until no pod of the namespaces that a quiesced workload controls, directly
// or through a ReplicaSet of a quiesced Deployment, is running or terminating. Pods that have
// finished (Succeeded, Failed) no longer run and do not count.
func (q *Quiesce) waitForPods(ctx context.Context, rc *engine.RunContext, c *kube.Client, owners map[types.UID]string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	rsMapping, err := c.Mapping("apps/v1", "ReplicaSet")
	if err != nil {
		return err
	}
	for i, ns := range q.namespaces() {
		// The Deployments' ReplicaSets are not quiesced themselves (their Deployment decides),
		// but their pods are the Deployments' pods.
		err := listPages(ctx, c.Resource(rsMapping, ns), metav1.ListOptions{}, func(rs *unstructured.Unstructured) error {
			if ref := metav1.GetControllerOf(rs); ref != nil && owners[ref.UID] == "Deployment" {
				owners[rs.GetUID()] = "ReplicaSet"
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("list ReplicaSet in namespace %s: %w", ns, kube.Classify(err))
		}
		for {
			var left []string
			err := listPages(ctx, c.Dynamic.Resource(podsGVR).Namespace(ns), metav1.ListOptions{}, func(pod *unstructured.Unstructured) error {
				ref := metav1.GetControllerOf(pod)
				if ref == nil || owners[ref.UID] == "" {
					return nil
				}
				switch phase, _, _ := unstructured.NestedString(pod.Object, "status", "phase"); phase {
				case "Succeeded", "Failed":
					return nil
				}
				left = append(left, pod.GetName())
				return nil
			})
			if err != nil {
				return fmt.Errorf("list the pods of namespace %s: %w", ns, kube.Classify(err))
			}
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				sort.Strings(left)
				return fmt.Errorf("namespace %s: quiesced, but %d pod(s) of its workloads still run after %s: %s", ns, len(left), timeout, strings.Join(left, ", "))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(waitInterval):
			}
		}
		rc.Progress(engine.Progress{Done: int64(i + 1), Total: int64(len(q.namespaces())), Unit: "namespaces without running pods"})
	}
	return nil
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
// the annotation (when absent), guarded by the resourceVersion read. The annotation, when
// present, is the original value: a rerun after a crash finds the object already stopped and
// still reports what it was before.
func quiesceOne(ctx context.Context, rc *engine.RunContext, c *kube.Client, w *workload, obj *unstructured.Unstructured) (Quiesced, error) {
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
