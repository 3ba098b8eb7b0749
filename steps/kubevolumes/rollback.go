package kubevolumes

import (
	"context"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

// Undo implements engine.Undoer: the target claims the step created are deleted (a claim of the
// same name that the step did not create, by its annotations, is left alone), and so is every
// mover pod and Secret of the step left on either cluster. The source claims are never written.
func (c *CopyVolumes) Undo(ctx context.Context, rc *engine.RunContext, outputs engine.Outputs) error {
	if outputs["dryRun"] == true {
		return nil
	}
	src, err := connect(rc, c.From)
	if err != nil {
		return fmt.Errorf("from: %w", err)
	}
	dst, err := connect(rc, c.To)
	if err != nil {
		return fmt.Errorf("to: %w", err)
	}
	// The objects are the step's, whose id is in its outputs; the undo runs under another id.
	step, _ := outputs["step"].(string)
	if step == "" {
		step = strings.TrimSuffix(rc.StepID, ":undo")
	}
	r := newRunnerFor(rc, &c.Mover, step)
	var errs []error
	created, _ := outputs["createdClaims"].([]any)
	for _, item := range created {
		key, _ := item.(string)
		ns, name, ok := strings.Cut(key, "/")
		if !ok {
			continue
		}
		pvc, err := claimOf(ctx, dst, ns, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if pvc == nil || !r.ours(pvc) || pvc.DeletionTimestamp != nil {
			continue
		}
		err = dst.cs.CoreV1().PersistentVolumeClaims(ns).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pvc.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, fmt.Errorf("deleting claim %s on %s: %w", key, dst, kube.Classify(err)))
			continue
		}
		rc.Logger.Info("deleted the target claim the step created", "claim", key, "cluster", dst.name)
	}
	if left := r.sweep(ctx, c.sweepTargets(src, dst)); len(left) > 0 {
		errs = append(errs, errors.New("could not delete "+joinMax(left)))
	}
	return errors.Join(errs...)
}

// sweepTarget is a namespace of a cluster where a step's mover pods and Secrets may be.
type sweepTarget struct {
	cl *cluster
	ns string
}

// sweep deletes the step's mover pods and Secrets (by their label) in where, and names what it
// could not delete.
func (r *runner) sweep(ctx context.Context, where []sweepTarget) []string {
	var left []string
	sel := metav1.ListOptions{LabelSelector: stepLabel + "=" + r.hash}
	bg := metav1.DeletePropagationBackground
	for _, w := range where {
		pods, err := w.cl.cs.CoreV1().Pods(w.ns).List(ctx, sel)
		if err != nil {
			left = append(left, fmt.Sprintf("the mover pods in %s on %s (listing: %s)", w.ns, w.cl, kube.Reason(err)))
		} else {
			for _, p := range pods.Items {
				if !r.ours(&p) {
					continue
				}
				if err := w.cl.cs.CoreV1().Pods(w.ns).Delete(ctx, p.Name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
					left = append(left, fmt.Sprintf("pod %s/%s on %s (%s)", w.ns, p.Name, w.cl, kube.Reason(err)))
				}
			}
		}
		secrets, err := w.cl.cs.CoreV1().Secrets(w.ns).List(ctx, sel)
		if err != nil {
			left = append(left, fmt.Sprintf("the mover Secrets in %s on %s (listing: %s)", w.ns, w.cl, kube.Reason(err)))
			continue
		}
		for _, s := range secrets.Items {
			if !r.ours(&s) {
				continue
			}
			if err := w.cl.cs.CoreV1().Secrets(w.ns).Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				left = append(left, fmt.Sprintf("Secret %s/%s on %s (%s)", w.ns, s.Name, w.cl, kube.Reason(err)))
			}
		}
	}
	return left
}
