package kubeapply

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.delete",
		Doc:  "Delete a named object or every object matching a label selector; optionally wait until gone and remove finalizers. Not undone on rollback.",
		New:  func() engine.Action { return new(Delete) },
	})
}

// Delete deletes objects. An object already gone is not an error, so the step can run again.
// Deleting cannot be undone: a rollback does not bring the objects back (back them up with
// kube.backup first and restore them in a rollback block if that is needed).
type Delete struct {
	kube.ClusterRef   `yaml:",inline"`
	APIVersion        string          `yaml:"apiVersion" plan:"required" doc:"API version of the objects, such as apps/v1."`
	Kind              string          `yaml:"kind" plan:"required" doc:"Kind of the objects, such as Deployment."`
	Namespace         string          `yaml:"namespace" doc:"Namespace; with labelSelector, empty means every namespace."`
	Name              string          `yaml:"name" doc:"Name of the object to delete; give name or labelSelector."`
	LabelSelector     string          `yaml:"labelSelector" doc:"Delete every object matching this label selector, such as app=web."`
	All               bool            `yaml:"all" doc:"Delete every object of the kind (in namespace, or in every namespace when it is empty), instead of name or labelSelector."`
	PropagationPolicy string          `yaml:"propagationPolicy" doc:"What happens to dependents: Background (the default), Foreground or Orphan."`
	Wait              bool            `yaml:"wait" doc:"Wait until the objects are gone."`
	Timeout           engine.Duration `yaml:"timeout" doc:"How long wait waits (default 5m)."`
	RemoveFinalizers  bool            `yaml:"removeFinalizers" doc:"Remove metadata.finalizers (except the garbage collector's own), so that objects whose controller is gone are deleted."`
}

var (
	_ engine.Action     = (*Delete)(nil)
	_ engine.Validator  = (*Delete)(nil)
	_ engine.Describer  = (*Delete)(nil)
	_ kube.AccessNeeder = (*Delete)(nil)
)

// Access implements kube.AccessNeeder, on the kind's resource:
//   - get: name reads the object; wait polls until the objects are gone; removeFinalizers reads
//     an object again after deleting it;
//   - list: labelSelector and all list the objects (so does a step whose choice holds ${{ }});
//   - delete: the objects are deleted;
//   - patch: removeFinalizers removes them with a merge patch.
func (d *Delete) Access() []kube.Rule {
	named, selected := d.Name != "", d.LabelSelector != "" || d.All
	if !named && !selected {
		named, selected = true, true
	}
	verbs := []string{"delete"}
	if named || d.Wait || d.RemoveFinalizers {
		verbs = append(verbs, "get")
	}
	if selected {
		verbs = append(verbs, "list")
	}
	if d.RemoveFinalizers {
		verbs = append(verbs, "patch")
	}
	return []kube.Rule{kube.KindRule(d.APIVersion, d.Kind, verbs...)}
}

// defaultWait is how long wait waits when no timeout is given.
const defaultWait = 5 * time.Minute

type deleteState struct {
	Deleted []ObjectRef `json:"deleted"`
}

// Describe implements engine.Describer.
func (d *Delete) Describe() string {
	if d.All {
		return "delete every " + d.Kind + " in " + namespaceDesc(d.Namespace)
	}
	return "delete " + targetDesc(d.Kind, d.Namespace, d.Name, d.LabelSelector)
}

// Validate implements engine.Validator.
func (d *Delete) Validate() error {
	if err := validateTargets(d.Name, d.LabelSelector, alternative{"all", d.All}); err != nil {
		return err
	}
	switch d.PropagationPolicy {
	case "", "Background", "Foreground", "Orphan":
	default:
		return fmt.Errorf("propagationPolicy: %q is not Background, Foreground or Orphan", d.PropagationPolicy)
	}
	return nil
}

// Run implements engine.Action.
func (d *Delete) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	c, err := d.Client(rc)
	if err != nil {
		return nil, err
	}
	m, err := c.Mapping(d.APIVersion, d.Kind)
	if err != nil {
		return nil, err
	}
	if err := checkNamespace(m, d.Namespace, d.Kind, d.Name != ""); err != nil {
		return nil, err
	}
	targets, err := selectTargets(ctx, c, m, d.Kind, d.Namespace, d.Name, d.LabelSelector)
	if err != nil {
		return nil, err
	}

	// What an attempt that crashed deleted stays in the outputs (and is waited for).
	var st deleteState
	if _, err := rc.LoadState(&st); err != nil {
		return nil, fmt.Errorf("step state: %w", err)
	}
	known := map[string]bool{}
	for _, r := range st.Deleted {
		known[r.key()] = true
	}
	earlier := len(st.Deleted)
	for _, obj := range targets {
		if r := refOf(obj); !known[r.key()] {
			known[r.key()] = true
			st.Deleted = append(st.Deleted, r)
		}
	}
	if len(st.Deleted) > earlier && !rc.DryRun {
		if err := rc.SaveState(ctx, &st); err != nil {
			return nil, err
		}
	}

	policy := metav1.DeletePropagationBackground
	if d.PropagationPolicy != "" {
		policy = metav1.DeletionPropagation(d.PropagationPolicy)
	}
	for i, obj := range targets {
		res := c.Resource(m, obj.GetNamespace())
		if d.RemoveFinalizers {
			if err := removeFinalizers(ctx, rc, res, obj); err != nil {
				return nil, err
			}
		}
		err := res.Delete(ctx, obj.GetName(), metav1.DeleteOptions{PropagationPolicy: &policy, DryRun: kube.DryRun(rc)})
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, kube.ObjectError(d.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
		if d.RemoveFinalizers && err == nil && !rc.DryRun {
			// A controller may have added a finalizer again meanwhile.
			if again, gerr := res.Get(ctx, obj.GetName(), metav1.GetOptions{}); gerr == nil && sameUID(again, string(obj.GetUID())) {
				if err := removeFinalizers(ctx, rc, res, again); err != nil {
					return nil, err
				}
			}
		}
		rc.Progress(engine.Progress{Done: int64(i + 1), Total: int64(len(targets)), Unit: "objects"})
	}
	if d.Wait && !rc.DryRun {
		timeout := time.Duration(d.Timeout)
		if timeout == 0 {
			timeout = defaultWait
		}
		gone := func(n int) {
			rc.Progress(engine.Progress{Done: int64(n), Total: int64(len(st.Deleted)), Unit: "objects gone"})
		}
		if err := waitGone(ctx, c, m, st.Deleted, timeout, gone); err != nil {
			return nil, err
		}
	}
	out := engine.Outputs{"deleted": nonNil(st.Deleted), "count": len(st.Deleted)}
	if rc.DryRun {
		out["dryRun"] = true
	}
	return out, nil
}

// gcFinalizers are the garbage collector's own; removing them would defeat the propagation policy.
var gcFinalizers = map[string]bool{metav1.FinalizerOrphanDependents: true, metav1.FinalizerDeleteDependents: true}

func removeFinalizers(ctx context.Context, rc *engine.RunContext, res dynamic.ResourceInterface, obj *unstructured.Unstructured) error {
	keep := []string{}
	for _, f := range obj.GetFinalizers() {
		if gcFinalizers[f] {
			keep = append(keep, f)
		}
	}
	if len(keep) == len(obj.GetFinalizers()) {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": keep}})
	_, err := res.Patch(ctx, obj.GetName(), types.MergePatchType, patch, metav1.PatchOptions{FieldManager: kube.FieldManager, DryRun: kube.DryRun(rc)})
	if err != nil && !apierrors.IsNotFound(err) {
		return kube.ObjectError(obj.GetKind(), obj.GetNamespace(), obj.GetName(), fmt.Errorf("removing finalizers: %w", err))
	}
	return nil
}

// waitGone polls until every object is gone (or replaced by a namesake with another UID), telling
// gone how many are as they go: objects held by finalizers can keep a step here for hours.
func waitGone(ctx context.Context, c *kube.Client, m *meta.RESTMapping, refs []ObjectRef, timeout time.Duration, gone func(int)) error {
	deadline := time.Now().Add(timeout)
	for i, r := range refs {
		if i > 0 {
			gone(i)
		}
		res := c.Resource(m, r.Namespace)
		for {
			obj, err := res.Get(ctx, r.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) || err == nil && !sameUID(obj, r.UID) {
				break
			}
			if err != nil && !engine.IsTransient(kube.Classify(err)) {
				return kube.ObjectError(r.Kind, r.Namespace, r.Name, err)
			}
			if time.Now().After(deadline) {
				detail := ""
				if err == nil && len(obj.GetFinalizers()) > 0 {
					detail = fmt.Sprintf(" (finalizers: %s; removeFinalizers: true removes them)", strings.Join(obj.GetFinalizers(), ", "))
				}
				return fmt.Errorf("%s still present after %s%s", r, timeout, detail)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
	}
	if len(refs) > 0 {
		gone(len(refs))
	}
	return nil
}
