package kubevolumes

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/mover"
)

// runner runs the mover pods of one step: what they all share.
type runner struct {
	rc *engine.RunContext
	m  *Mover
	// runID and stepID name the step whose objects these are (for an undo, the step undone);
	// hash is their stepHash.
	runID, stepID, hash string
	// credKeys and credData are the repository's credentials (credentialsFrom), password its
	// password (passwordFrom): nil when not given.
	credKeys []string
	credData map[string][]byte
	password []byte
	progress *progress
	state    *stateStore
	logDir   string // the step's folder: the movers' logs
}

func newRunner(rc *engine.RunContext, m *Mover) *runner {
	return newRunnerFor(rc, m, rc.StepID)
}

// newRunnerFor is a runner for the objects of another step of the run (the one an undo undoes).
func newRunnerFor(rc *engine.RunContext, m *Mover, stepID string) *runner {
	return &runner{rc: rc, m: m, runID: rc.RunID, stepID: stepID, hash: stepHash(rc.RunID, stepID)}
}

// secretName is the name of the Secret of a claim's mover pods, "" when they need none.
func (r *runner) secretName(claim string, parts ...string) string {
	if r.credData == nil && r.password == nil {
		return ""
	}
	return objectName("planrun-mover-", claim, r.runID, r.stepID, parts...)
}

// runPod runs a mover pod to its end and returns its result: it makes the pod's Secret and the
// pod, or finds those an earlier attempt of the step made (a running pod is followed, a
// succeeded one gives its result), and makes the pod again when it disappears, at most
// maxRecreate times per claim. runMover checks the result's type.
func (r *runner) runPod(ctx context.Context, p *moverPod, deadline time.Time) (mover.Event, error) {
	if err := r.ensureSecret(ctx, p); err != nil {
		return nil, err
	}
	for first := true; ; first = false {
		pod, err := r.ensurePod(ctx, p, deadline, first)
		if err != nil {
			return nil, err
		}
		end := r.follow(ctx, p, pod, deadline)
		if end.lost == "" {
			return end.result, end.err
		}
		var n int
		if err := r.state.update(ctx, p.key, func(c *claimState) { c.Recreated++; n = c.Recreated }); err != nil {
			return nil, err
		}
		what := fmt.Sprintf("mover pod %s/%s on %s", p.namespace, p.name, p.cl)
		if n > maxRecreate {
			return nil, fmt.Errorf("%s %s; its claim's mover pods were made again %d times already, giving up", what, end.lost, maxRecreate)
		}
		r.progress.say(fmt.Sprintf("claim %s: %s %s; making it again (%d of at most %d), the mover resumes from its checkpoint", p.key, what, end.lost, n, maxRecreate))
	}
}

// start makes a mover pod (and its Secret) without following it, or finds the one an earlier
// attempt made; runPod follows it later by its name.
func (r *runner) start(ctx context.Context, p *moverPod, deadline time.Time) error {
	if err := r.ensureSecret(ctx, p); err != nil {
		return err
	}
	_, err := r.ensurePod(ctx, p, deadline, true)
	p.started = err == nil
	return err
}

// ensureSecret creates the pod's Secret, or updates the one an earlier attempt made (the
// credentials may have changed since).
func (r *runner) ensureSecret(ctx context.Context, p *moverPod) error {
	want := r.secretObject(p)
	if want == nil {
		return nil
	}
	secrets := p.cl.cs.CoreV1().Secrets(p.namespace)
	_, err := secrets.Create(ctx, want, metav1.CreateOptions{FieldManager: kube.FieldManager})
	if err == nil || !apierrors.IsAlreadyExists(err) {
		return objectErr("Secret", p, p.secret, err)
	}
	existing, err := secrets.Get(ctx, p.secret, metav1.GetOptions{})
	if err != nil {
		return objectErr("Secret", p, p.secret, err)
	}
	if !r.ours(existing) {
		return fmt.Errorf("Secret %s/%s on %s exists and was not made by this step (run %q, step %q); delete it",
			p.namespace, p.secret, p.cl, existing.Annotations[runAnnotation], existing.Annotations[stepAnnotation])
	}
	existing.Data, existing.StringData = want.Data, nil
	_, err = secrets.Update(ctx, existing, metav1.UpdateOptions{FieldManager: kube.FieldManager})
	return objectErr("Secret", p, p.secret, err)
}

// ensurePod creates the pod or finds the one of the same name an earlier attempt made. A pod
// that failed is deleted and made again: when first (the step starting), an operator resuming
// after fixing the cause wants the copy run again, not the old failure; otherwise the pod was
// lost (evicted, killed) and runPod counts it. A pod this attempt started already (p.started)
// is returned as it is, failed or not: its failure is this attempt's.
func (r *runner) ensurePod(ctx context.Context, p *moverPod, deadline time.Time, first bool) (*corev1.Pod, error) {
	pods := p.cl.cs.CoreV1().Pods(p.namespace)
	for tries := 0; ; tries++ {
		created, err := pods.Create(ctx, r.podObject(p, deadline), metav1.CreateOptions{FieldManager: kube.FieldManager})
		if err == nil {
			return created, nil
		}
		if !apierrors.IsAlreadyExists(err) || tries > 5 {
			return nil, objectErr("pod", p, p.name, err)
		}
		existing, err := pods.Get(ctx, p.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue // gone in between
		}
		if err != nil {
			return nil, objectErr("pod", p, p.name, err)
		}
		if !r.ours(existing) {
			return nil, fmt.Errorf("pod %s/%s on %s exists and was not started by this step (run %q, step %q); delete it",
				p.namespace, p.name, p.cl, existing.Annotations[runAnnotation], existing.Annotations[stepAnnotation])
		}
		if existing.DeletionTimestamp == nil && (existing.Status.Phase != corev1.PodFailed || first && p.started) {
			if first {
				r.rc.Logger.Info("found the mover pod of an earlier attempt", "pod", p.namespace+"/"+p.name, "cluster", p.cl.name, "phase", existing.Status.Phase)
			}
			return existing, nil
		}
		if first && existing.DeletionTimestamp == nil {
			r.rc.Logger.Info("the mover pod of an earlier attempt failed; starting it again", "pod", p.namespace+"/"+p.name, "cluster", p.cl.name)
		}
		if err := deleteAndWait(ctx, p, existing); err != nil {
			return nil, err
		}
	}
}

// deleteAndWait deletes a pod and waits until its name is free.
func deleteAndWait(ctx context.Context, p *moverPod, pod *corev1.Pod) error {
	pods := p.cl.cs.CoreV1().Pods(p.namespace)
	err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return objectErr("pod", p, pod.Name, err)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || err == nil && cur.UID != pod.UID {
			return nil
		}
		if err != nil {
			return objectErr("pod", p, pod.Name, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pod %s/%s on %s is still being deleted after 2m (%s)", p.namespace, pod.Name, p.cl, podState(cur))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// cleanup deletes a mover pod and its Secret, once its claim is done with them. It does not
// wait: a pod that finished holds nothing. What cannot be deleted is named.
func (r *runner) cleanup(ctx context.Context, p *moverPod) error {
	var left []string
	bg := metav1.DeletePropagationBackground
	if err := p.cl.cs.CoreV1().Pods(p.namespace).Delete(ctx, p.name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		left = append(left, fmt.Sprintf("pod %s/%s on %s (%s)", p.namespace, p.name, p.cl, kube.Reason(err)))
	}
	if p.secret != "" {
		if err := p.cl.cs.CoreV1().Secrets(p.namespace).Delete(ctx, p.secret, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			left = append(left, fmt.Sprintf("Secret %s/%s on %s (%s)", p.namespace, p.secret, p.cl, kube.Reason(err)))
		}
	}
	if len(left) > 0 {
		return errors.New("could not delete " + strings.Join(left, ", "))
	}
	return nil
}

func objectErr(kind string, p *moverPod, name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s on %s: %w", kube.ObjectName(kind, p.namespace, name), p.cl, kube.Classify(err))
}
