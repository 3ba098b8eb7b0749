package incluster

import (
	"context"
	"fmt"
	"sort"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"planrun.dev/planrun/clusterstore"
	"planrun.dev/planrun/internal/lastwords"
)

// JobState is where a runner Job is.
type JobState struct {
	// Active: a runner pod runs or the Job will start one.
	Active bool
	// Failed says why the Job gave up ("" while it has not): its reason, and the last words of
	// its last failed pod, which say which verb on which resource was forbidden when the
	// runner's own access was missing.
	Failed string
}

// maxFailureLine bounds the pod's last words quoted in Failed.
const maxFailureLine = 1024

// Runner reads the state of a run's runner Job.
func Runner(ctx context.Context, store *clusterstore.Store, runID string) (JobState, error) {
	cs, err := kubernetes.NewForConfig(store.RESTConfig())
	if err != nil {
		return JobState{}, err
	}
	ns, name := store.Namespace(), ObjectName(runID)
	job, err := cs.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return JobState{}, fmt.Errorf("reading the runner Job %s/%s: %w", ns, name, err)
	}
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete, batchv1.JobSuccessCriteriaMet:
			return JobState{}, nil
		case batchv1.JobFailed, batchv1.JobFailureTarget:
			why := fmt.Sprintf("runner Job %s/%s failed (%s: %s)", ns, name, c.Reason, c.Message)
			if last := lastFailure(ctx, cs, job); last != "" {
				why += ": " + last
			}
			return JobState{Failed: why}, nil
		}
	}
	return JobState{Active: true}, nil
}

// lastFailure is the last words of the Job's newest failed pod, "" when there is none.
func lastFailure(ctx context.Context, cs kubernetes.Interface, job *batchv1.Job) string {
	pods, err := cs.CoreV1().Pods(job.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + job.Name})
	if err != nil {
		return ""
	}
	sort.Slice(pods.Items, func(i, j int) bool {
		return pods.Items[j].CreationTimestamp.Before(&pods.Items[i].CreationTimestamp)
	})
	for _, p := range pods.Items {
		for _, st := range p.Status.ContainerStatuses {
			if t := st.State.Terminated; t != nil && t.ExitCode != 0 {
				return fmt.Sprintf("pod %s exited with status %d: %s", p.Name, t.ExitCode, lastwords.Line(t.Message, maxFailureLine))
			}
		}
	}
	return ""
}

// Relaunch makes way for a new runner of a run whose Job gave up (its pods failed too often)
// or ended: the old Job is deleted, and waited for, so that Start makes a fresh one. An active
// Job is left alone.
func Relaunch(ctx context.Context, store *clusterstore.Store, runID string) error {
	st, err := Runner(ctx, store, runID)
	if err != nil || st.Active {
		return nil // no Job, or one at work
	}
	cs, err := kubernetes.NewForConfig(store.RESTConfig())
	if err != nil {
		return err
	}
	jobs := cs.BatchV1().Jobs(store.Namespace())
	name := ObjectName(runID)
	if err := jobs.Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the ended runner Job %s: %w", name, err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := jobs.Get(ctx, name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the ended runner Job %s is still there 2m after it was deleted (a finalizer?)", name)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
