// Package kubescale implements kube.scale (set the replicas of anything with a scale
// subresource) and kube.quiesce (stop every workload of a namespace), both remembering what
// they found in their outputs and in annotations on the objects, as MTC does, so that their
// rollback puts everything back even after a crash.
package kubescale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

// AnnotationReplicas holds the replicas an object had before planrun first scaled it. It is
// written only when absent, so a step that runs again after a crash keeps the original value
// instead of the 0 it had already set; undoing removes it.
const AnnotationReplicas = "planrun.dev/previous-replicas"

func init() {
	engine.Register(engine.StepType{
		Name: "kube.scale",
		Doc:  "Set the replicas of objects with a scale subresource; remembers the replicas found and undoes by putting them back.",
		New:  func() engine.Action { return new(Scale) },
	})
}

// Scale sets the replicas of one object, or of every object matching a label selector, through
// the scale subresource (Deployments, StatefulSets, ReplicaSets, custom resources with one).
type Scale struct {
	kube.ClusterRef `yaml:",inline"`
	APIVersion      string `yaml:"apiVersion" plan:"required" doc:"API version of the objects, such as apps/v1."`
	Kind            string `yaml:"kind" plan:"required" doc:"Kind of the objects, such as Deployment; it must have a scale subresource."`
	Namespace       string `yaml:"namespace" doc:"Namespace of the objects (required for namespaced kinds)."`
	Name            string `yaml:"name" doc:"Name of the object; give name or labelSelector."`
	LabelSelector   string `yaml:"labelSelector" doc:"Scale every object matching this label selector, such as app=web."`
	Replicas        int    `yaml:"replicas" plan:"required" doc:"Replicas to set."`
	// Wait exists because setting replicas only asks: the pods of a Deployment scaled to 0 run
	// on, and act, until their controllers delete them and their grace period ends.
	Wait    bool            `yaml:"wait" doc:"Wait until every object has as many pods as replicas (the pods its scale subresource's status.selector matches, terminating ones counted, so scaled to 0: until they are gone; above 0: all of them Ready)."`
	Timeout engine.Duration `yaml:"timeout" doc:"How long wait waits for the pods (default 5m)."`
}

var (
	_ engine.Action     = (*Scale)(nil)
	_ engine.Validator  = (*Scale)(nil)
	_ engine.Undoer     = (*Scale)(nil)
	_ engine.Describer  = (*Scale)(nil)
	_ kube.AccessNeeder = (*Scale)(nil)
)

// Access implements kube.AccessNeeder:
//   - get and patch on the kind's resource: each object is read for the replicas annotation,
//     which a merge patch writes and undo removes;
//   - list on it: labelSelector (or a name that holds ${{ }}) lists the objects, in undo too;
//   - get and update on its scale subresource: the replicas are read and set, and put back by undo;
//   - list on pods: wait follows the pods the scale subresource selects.
func (s *Scale) Access() []kube.Rule {
	verbs := []string{"get", "patch"}
	if s.Name == "" {
		verbs = append(verbs, "list")
	}
	out := []kube.Rule{
		kube.KindRule(s.APIVersion, s.Kind, verbs...),
		kube.KindRule(s.APIVersion, s.Kind, "get", "update").Subresource("scale"),
	}
	if s.Wait {
		out = append(out, kube.ResourceRule("pods", "list"))
	}
	return out
}

// Previous is what kube.scale found on one object; outputs.previous lists them.
type Previous struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	Replicas   *int64 `json:"replicas,omitempty"`
	Changed    bool   `json:"changed"`
}

// Validate implements engine.Validator.
func (s *Scale) Validate() error {
	switch {
	case s.Name == "" && s.LabelSelector == "":
		return errors.New("name or labelSelector: one is required")
	case s.Name != "" && s.LabelSelector != "":
		return errors.New("name and labelSelector: give only one")
	case s.Replicas < 0:
		return fmt.Errorf("replicas: must not be negative, got %d", s.Replicas)
	case s.Timeout < 0:
		return fmt.Errorf("timeout: must not be negative, got %s", time.Duration(s.Timeout))
	}
	if s.LabelSelector != "" {
		if _, err := labels.Parse(s.LabelSelector); err != nil {
			return fmt.Errorf("labelSelector: %v", err)
		}
	}
	return nil
}

// Describe implements engine.Describer.
func (s *Scale) Describe() string {
	if s.Name != "" {
		return fmt.Sprintf("scale %s to %d", kube.ObjectName(s.Kind, s.Namespace, s.Name), s.Replicas)
	}
	return fmt.Sprintf("scale %s matching %s in %s to %d", s.Kind, s.LabelSelector, nsOrAll(s.Namespace), s.Replicas)
}

func nsOrAll(ns string) string {
	if ns == "" {
		return "all namespaces"
	}
	return "namespace " + ns
}

// Run implements engine.Action.
func (s *Scale) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	c, m, err := s.resolve(rc)
	if err != nil {
		return nil, err
	}
	targets, err := s.targets(ctx, c, m)
	if err != nil {
		return nil, err
	}
	previous := make([]Previous, 0, len(targets))
	changed := 0
	for i, t := range targets {
		p, err := scaleOne(ctx, rc, c, m, s.Kind, t.ns, t.name, int64(s.Replicas))
		if err != nil {
			return nil, err
		}
		if p.Changed {
			changed++
		}
		previous = append(previous, p)
		rc.Progress(engine.Progress{Done: int64(i + 1), Total: int64(len(targets)), Unit: "objects"})
	}
	out := engine.Outputs{"replicas": s.Replicas, "previous": previous, "changed": changed}
	if rc.DryRun {
		out["dryRun"] = true
		return out, nil
	}
	if s.Wait {
		timeout := time.Duration(s.Timeout)
		if timeout == 0 {
			timeout = defaultWaitTimeout
		}
		if err := waitForPods(ctx, rc, c, m, s.Kind, targets, s.Replicas, timeout); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *Scale) resolve(rc *engine.RunContext) (*kube.Client, *meta.RESTMapping, error) {
	c, err := s.Client(rc)
	if err != nil {
		return nil, nil, err
	}
	m, err := c.Mapping(s.APIVersion, s.Kind)
	if err != nil {
		return nil, nil, err
	}
	namespaced := m.Scope.Name() == meta.RESTScopeNameNamespace
	switch {
	case namespaced && s.Namespace == "" && s.Name != "":
		return nil, nil, fmt.Errorf("namespace: required, %s is namespaced", s.Kind)
	case !namespaced && s.Namespace != "":
		return nil, nil, fmt.Errorf("namespace: %s is cluster-scoped; remove namespace", s.Kind)
	}
	if err := checkScalable(c, m, s.Kind); err != nil {
		return nil, nil, err
	}
	return c, m, nil
}

// checkScalable asks discovery whether the resource has a scale subresource, so that scaling
// a ConfigMap says so instead of "not found".
func checkScalable(c *kube.Client, m *meta.RESTMapping, kind string) error {
	list, err := c.Discovery.ServerResourcesForGroupVersion(m.Resource.GroupVersion().String())
	if err != nil {
		return fmt.Errorf("discovery of %s: %w", m.Resource.GroupVersion(), kube.Classify(err))
	}
	for _, r := range list.APIResources {
		if r.Name == m.Resource.Resource+"/scale" {
			return nil
		}
	}
	return fmt.Errorf("kind: %s %s has no scale subresource", m.GroupVersionKind.GroupVersion(), kind)
}

type target struct{ ns, name string }

func (s *Scale) targets(ctx context.Context, c *kube.Client, m *meta.RESTMapping) ([]target, error) {
	if s.Name != "" {
		return []target{{s.Namespace, s.Name}}, nil
	}
	var r dynamic.ResourceInterface = c.Dynamic.Resource(m.Resource)
	if s.Namespace != "" {
		r = c.Dynamic.Resource(m.Resource).Namespace(s.Namespace)
	}
	var out []target
	err := listPages(ctx, r, metav1.ListOptions{LabelSelector: s.LabelSelector}, func(obj *unstructured.Unstructured) error {
		out = append(out, target{obj.GetNamespace(), obj.GetName()})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s in %s: %w", s.Kind, nsOrAll(s.Namespace), kube.Classify(err))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].ns != out[j].ns {
			return out[i].ns < out[j].ns
		}
		return out[i].name < out[j].name
	})
	return out, nil
}

// listPages lists in pages of 500, calling fn for every object.
func listPages(ctx context.Context, r dynamic.ResourceInterface, opts metav1.ListOptions, fn func(*unstructured.Unstructured) error) error {
	opts.Limit = 500
	for {
		page, err := r.List(ctx, opts)
		if err != nil {
			return err
		}
		for i := range page.Items {
			if err := fn(&page.Items[i]); err != nil {
				return err
			}
		}
		if page.GetContinue() == "" {
			return nil
		}
		opts.Continue = page.GetContinue()
	}
}

// conflictBackoff paces the retries of a write that met a conflict: its guard (the
// resourceVersion read) no longer held because someone else wrote the object in between. On a
// busy cluster that someone is a controller updating the status or annotations of the very
// workload being scaled, so conflicts are routine, not failures. Ten tries spaced out up to
// about 6 s in all, so that a burst of writes (a rollout) is waited out.
var conflictBackoff = wait.Backoff{Steps: 10, Duration: 20 * time.Millisecond, Factor: 2, Jitter: 0.2, Cap: 2 * time.Second}

// onConflict runs fn, which reads what it writes, again while it fails with a conflict.
func onConflict(fn func() error) error {
	return retry.OnError(conflictBackoff, apierrors.IsConflict, fn)
}

// scaleOne records the original replicas in the annotation (if absent) and then sets the
// replicas through the scale subresource, reading the object again when a write meets a conflict.
// The annotation is the source of truth for the original value: a rerun after a crash (or after
// a conflict) finds it and reports it, not the 0 it set.
func scaleOne(ctx context.Context, rc *engine.RunContext, c *kube.Client, m *meta.RESTMapping, kind, ns, name string, replicas int64) (Previous, error) {
	var p Previous
	err := onConflict(func() error {
		var err error
		p, err = scaleOnce(ctx, rc, c, m, kind, ns, name, replicas)
		return err
	})
	return p, err
}

func scaleOnce(ctx context.Context, rc *engine.RunContext, c *kube.Client, m *meta.RESTMapping, kind, ns, name string, replicas int64) (Previous, error) {
	r := c.Resource(m, ns)
	p := Previous{APIVersion: m.GroupVersionKind.GroupVersion().String(), Kind: kind, Namespace: ns, Name: name}
	obj, err := r.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return p, fmt.Errorf("%s not found", kube.ObjectName(kind, ns, name))
	}
	if err != nil {
		return p, kube.ObjectError(kind, ns, name, err)
	}
	scale, err := r.Get(ctx, name, metav1.GetOptions{}, "scale")
	if err != nil {
		return p, kube.ObjectError(kind, ns, name, err)
	}
	current, _, _ := unstructured.NestedInt64(scale.Object, "spec", "replicas")
	original := current
	annotated, has, err := annotatedReplicas(obj)
	if err != nil {
		return p, kube.ObjectError(kind, ns, name, err)
	}
	if has {
		original = annotated
	}
	p.Replicas = &original
	if current == replicas {
		return p, nil
	}
	if !has {
		// Guarded by the version of the scale, read last: the annotation records the replicas
		// read only if nothing changed since, and the window for a conflict is one request.
		patch := map[string]any{"metadata": map[string]any{
			"resourceVersion": scale.GetResourceVersion(),
			"annotations":     map[string]any{AnnotationReplicas: strconv.FormatInt(current, 10)},
		}}
		patched, err := mergePatch(ctx, rc, r, name, patch)
		if err != nil {
			return p, kube.ObjectError(kind, ns, name, err)
		}
		if !rc.DryRun {
			scale.SetResourceVersion(patched.GetResourceVersion())
		}
	}
	if err := setReplicas(ctx, rc, r, scale, replicas); err != nil {
		return p, kube.ObjectError(kind, ns, name, err)
	}
	p.Changed = true
	rc.Logger.Info("scaled", "object", kube.ObjectName(kind, ns, name), "from", current, "to", replicas, "dryRun", rc.DryRun)
	return p, nil
}

func setReplicas(ctx context.Context, rc *engine.RunContext, r dynamic.ResourceInterface, scale *unstructured.Unstructured, replicas int64) error {
	if err := unstructured.SetNestedField(scale.Object, replicas, "spec", "replicas"); err != nil {
		return err
	}
	_, err := r.Update(ctx, scale, metav1.UpdateOptions{DryRun: kube.DryRun(rc), FieldManager: kube.FieldManager}, "scale")
	return err
}

func annotatedReplicas(obj *unstructured.Unstructured) (int64, bool, error) {
	v, ok := obj.GetAnnotations()[AnnotationReplicas]
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("annotation %s: expected a number of replicas, got %q", AnnotationReplicas, v)
	}
	return n, true, nil
}

func mergePatch(ctx context.Context, rc *engine.RunContext, r dynamic.ResourceInterface, name string, patch map[string]any, sub ...string) (*unstructured.Unstructured, error) {
	b, err := json.Marshal(patch)
	if err != nil {
		return nil, err
	}
	return r.Patch(ctx, name, types.MergePatchType, b, metav1.PatchOptions{DryRun: kube.DryRun(rc), FieldManager: kube.FieldManager}, sub...)
}

// Undo implements engine.Undoer: every object gets back the replicas recorded in the outputs
// (or, failing that, in its annotation), and the annotation is removed. Objects deleted since
// are skipped.
func (s *Scale) Undo(ctx context.Context, rc *engine.RunContext, outputs engine.Outputs) error {
	if dry, _ := outputs["dryRun"].(bool); dry {
		return nil // nothing was changed
	}
	c, err := s.Client(rc)
	if err != nil {
		return err
	}
	var previous []Previous
	if raw, ok := outputs["previous"]; ok {
		if err := roundTrip(raw, &previous); err != nil {
			return fmt.Errorf("outputs.previous: %w", err)
		}
	} else {
		// No outputs to go by: every target that carries the annotation.
		_, m, err := s.resolve(rc)
		if err != nil {
			return err
		}
		targets, err := s.targets(ctx, c, m)
		if err != nil {
			return err
		}
		for _, t := range targets {
			previous = append(previous, Previous{APIVersion: s.APIVersion, Kind: s.Kind, Namespace: t.ns, Name: t.name})
		}
	}
	for i, p := range previous {
		if err := onConflict(func() error { return restoreOne(ctx, rc, c, p) }); err != nil {
			return err
		}
		rc.Progress(engine.Progress{Done: int64(i + 1), Total: int64(len(previous)), Unit: "objects"})
	}
	return nil
}

func restoreOne(ctx context.Context, rc *engine.RunContext, c *kube.Client, p Previous) error {
	m, err := c.Mapping(p.APIVersion, p.Kind)
	if err != nil {
		return err
	}
	r := c.Resource(m, p.Namespace)
	obj, err := r.Get(ctx, p.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		rc.Logger.Warn("object gone, replicas not restored", "object", kube.ObjectName(p.Kind, p.Namespace, p.Name))
		return nil
	}
	if err != nil {
		return kube.ObjectError(p.Kind, p.Namespace, p.Name, err)
	}
	annotated, has, err := annotatedReplicas(obj)
	if err != nil && p.Replicas == nil {
		return kube.ObjectError(p.Kind, p.Namespace, p.Name, err)
	}
	want := p.Replicas
	if want == nil && has {
		want = &annotated
	}
	if want != nil {
		scale, err := r.Get(ctx, p.Name, metav1.GetOptions{}, "scale")
		if err != nil {
			return kube.ObjectError(p.Kind, p.Namespace, p.Name, err)
		}
		if cur, _, _ := unstructured.NestedInt64(scale.Object, "spec", "replicas"); cur != *want {
			if err := setReplicas(ctx, rc, r, scale, *want); err != nil {
				return kube.ObjectError(p.Kind, p.Namespace, p.Name, err)
			}
			rc.Logger.Info("replicas restored", "object", kube.ObjectName(p.Kind, p.Namespace, p.Name), "from", cur, "to", *want)
		}
	}
	if _, present := obj.GetAnnotations()[AnnotationReplicas]; present {
		patch := map[string]any{"metadata": map[string]any{"annotations": map[string]any{AnnotationReplicas: nil}}}
		if _, err := mergePatch(ctx, rc, r, p.Name, patch); err != nil {
			return kube.ObjectError(p.Kind, p.Namespace, p.Name, err)
		}
	}
	return nil
}

// roundTrip decodes recorded outputs (maps and lists after the journal's JSON round trip) into
// a typed value.
func roundTrip(in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, out)
}
