// Package kubejob implements kube.job: run a Kubernetes Job to completion (a migration hook, a
// copy, a check), found again by name when the step runs again after a crash instead of started
// twice, with its pods' logs kept in the run's folder.
package kubejob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/lastwords"
	"planrun.dev/planrun/steps/kube"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.job",
		Doc:  "Run a Kubernetes Job and wait until it completes; keeps its pods' logs; undo deletes it.",
		New:  func() engine.Action { return new(Job) },
	})
}

const (
	defaultTimeout = time.Hour
	// Annotations that say which run and step started a Job, so that a step run again finds its
	// own Job instead of starting another or adopting someone else's.
	runAnnotation  = "planrun.dev/run"
	stepAnnotation = "planrun.dev/step"
	containerName  = "job"
	// maxLogBytes bounds the log kept per container.
	maxLogBytes = 16 << 20
	// logNote collects the reasons logs could not be read.
	logNote = "logs-unavailable.txt"
)

// Job runs a Job.
type Job struct {
	kube.ClusterRef       `yaml:",inline"`
	Name                  string            `yaml:"name" doc:"Name of the Job; default planrun-<run id>-<step id>, so that a step run again finds its Job."`
	Namespace             string            `yaml:"namespace" plan:"required" doc:"Namespace of the Job."`
	Image                 string            `yaml:"image" plan:"required" doc:"Container image."`
	Command               []string          `yaml:"command" doc:"Entrypoint (the image's if empty)."`
	Args                  []string          `yaml:"args" doc:"Arguments."`
	Env                   map[string]string `yaml:"env" doc:"Environment variables."`
	ServiceAccount        string            `yaml:"serviceAccount" doc:"Service account the pod runs as."`
	ActiveDeadlineSeconds int64             `yaml:"activeDeadlineSeconds" doc:"The Job fails when it runs longer than this (0: no limit)."`
	BackoffLimit          *int              `yaml:"backoffLimit" doc:"Retries before the Job fails (default 0: a failed pod fails the step)."`
	Labels                map[string]string `yaml:"labels" doc:"Labels of the Job and its pods."`
	Timeout               engine.Duration   `yaml:"timeout" doc:"How long to wait for the Job to finish (default 1h)."`
}

var (
	_ engine.Action     = (*Job)(nil)
	_ engine.Validator  = (*Job)(nil)
	_ engine.Undoer     = (*Job)(nil)
	_ engine.Describer  = (*Job)(nil)
	_ kube.AccessNeeder = (*Job)(nil)
)

// Access implements kube.AccessNeeder:
//   - create, get and delete on jobs: the Job is created, found again after a resume, deleted to
//     start a failed one again and by undo;
//   - list and watch on jobs: the step waits for the Job by watching it;
//   - list on pods and get on pods/log: the logs of the Job's pods are kept.
func (j *Job) Access() []kube.Rule {
	return []kube.Rule{
		kube.ResourceRule("jobs.batch", "get", "list", "watch", "create", "delete"),
		kube.ResourceRule("pods", "list"),
		kube.ResourceRule("pods/log", "get"),
	}
}

// Validate implements engine.Validator.
func (j *Job) Validate() error {
	if j.Name != "" {
		if errs := validation.IsDNS1123Label(j.Name); len(errs) > 0 {
			return fmt.Errorf("name: %q is not a valid Job name (at most 63 lower-case letters, digits and '-')", j.Name)
		}
	}
	if j.ActiveDeadlineSeconds < 0 {
		return errors.New("activeDeadlineSeconds: must not be negative")
	}
	if j.BackoffLimit != nil && *j.BackoffLimit < 0 {
		return errors.New("backoffLimit: must not be negative")
	}
	for k, v := range j.Labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return fmt.Errorf("labels: %q is not a valid label key", k)
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return fmt.Errorf("labels: %s: %q is not a valid label value", k, v)
		}
	}
	for k := range j.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("env: %q is not a valid variable name", k)
		}
	}
	return nil
}

// Describe implements engine.Describer.
func (j *Job) Describe() string {
	name := j.Name
	if name == "" {
		name = "(generated)"
	}
	return fmt.Sprintf("run %s with image %s", kube.ObjectName("Job", j.Namespace, name), j.Image)
}

// DefaultName is the name of a Job without a name: a DNS label made of the run and step ids,
// shortened with a hash when too long or when characters had to be replaced.
func DefaultName(runID, stepID string) string {
	return kube.ObjectNameFor("planrun-", runID, stepID)
}

func (j *Job) object(rc *engine.RunContext, name string) *batchv1.Job {
	labels := map[string]string{"app.kubernetes.io/managed-by": "planrun"}
	for k, v := range j.Labels {
		labels[k] = v
	}
	podLabels := map[string]string{}
	for k, v := range j.Labels {
		podLabels[k] = v
	}
	var env []corev1.EnvVar
	for k, v := range j.Env {
		env = append(env, corev1.EnvVar{Name: k, Value: v})
	}
	sort.Slice(env, func(a, b int) bool { return env[a].Name < env[b].Name })
	backoff := int32(0)
	if j.BackoffLimit != nil {
		backoff = int32(*j.BackoffLimit)
	}
	job := &batchv1.Job{
		TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: j.Namespace, Labels: labels,
			Annotations: map[string]string{runAnnotation: rc.RunID, stepAnnotation: rc.StepID},
		},
		Spec: batchv1.JobSpec{
			BackoffLimit: &backoff,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{
					RestartPolicy:      corev1.RestartPolicyNever,
					ServiceAccountName: j.ServiceAccount,
					Containers: []corev1.Container{{
						Name: containerName, Image: j.Image, Command: j.Command, Args: j.Args, Env: env,
					}},
				},
			},
		},
	}
	if j.ActiveDeadlineSeconds > 0 {
		job.Spec.ActiveDeadlineSeconds = &j.ActiveDeadlineSeconds
	}
	return job
}

// Run implements engine.Action.
func (j *Job) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	c, err := j.Client(rc)
	if err != nil {
		return nil, err
	}
	cs, err := typed(rc, c)
	if err != nil {
		return nil, err
	}
	name := j.Name
	if name == "" {
		name = DefaultName(rc.RunID, rc.StepID)
	}
	what := kube.ObjectName("Job", j.Namespace, name)
	created, resumed, err := j.start(ctx, rc, cs, name)
	if err != nil {
		return nil, err
	}
	out := engine.Outputs{"name": name, "namespace": j.Namespace, "succeeded": 0, "failed": 0, "resumed": resumed}
	if rc.DryRun {
		out["dryRun"] = true
		out["succeeded"], out["failed"] = int(created.Status.Succeeded), int(created.Status.Failed)
		return out, nil
	}

	timeout := time.Duration(j.Timeout)
	if timeout == 0 {
		timeout = defaultTimeout
	}
	final, err := wait(ctx, rc, cs, created, timeout)
	if err != nil {
		return nil, err
	}
	out["succeeded"], out["failed"] = int(final.Status.Succeeded), int(final.Status.Failed)
	dir, err := rc.ArtifactDir()
	if err != nil {
		return nil, err
	}
	logs, logErr := keepLogs(ctx, cs, final, dir)
	if logErr != nil {
		rc.Logger.Warn("job logs not kept", "job", what, "error", logErr)
	}
	out["logs"], out["logDir"] = logs.files, dir
	if cond := finished(final); cond.Type == batchv1.JobFailed {
		// The last failed pod's exit status and last log line usually say why, as the exec
		// step's error quotes a command's stderr: the operator need not open the log first.
		why := ""
		if logs.lastFailure != "" {
			why = ": " + logs.lastFailure
		}
		return nil, fmt.Errorf("%s failed: %s: %s (succeeded %d, failed %d; logs in %s)%s", what, cond.Reason, cond.Message,
			final.Status.Succeeded, final.Status.Failed, dir, why)
	}
	return out, nil
}

// start creates the Job, or finds the one an earlier attempt of this step in this run created
// (resumed). A Job of this step that had failed is deleted and started again: resuming a run
// after fixing the cause must run the Job again, not report the old failure. A running or
// completed Job is never started twice.
func (j *Job) start(ctx context.Context, rc *engine.RunContext, cs kubernetes.Interface, name string) (*batchv1.Job, bool, error) {
	what := kube.ObjectName("Job", j.Namespace, name)
	jobs := cs.BatchV1().Jobs(j.Namespace)
	for restarted := false; ; restarted = true {
		created, err := jobs.Create(ctx, j.object(rc, name), metav1.CreateOptions{FieldManager: kube.FieldManager, DryRun: kube.DryRun(rc)})
		if err == nil {
			return created, false, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, false, kube.ObjectError("Job", j.Namespace, name, err)
		}
		existing, err := jobs.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue // deleted in between: create it
		}
		if err != nil {
			return nil, false, kube.ObjectError("Job", j.Namespace, name, err)
		}
		if existing.Annotations[runAnnotation] != rc.RunID || existing.Annotations[stepAnnotation] != rc.StepID {
			return nil, false, fmt.Errorf("%s already exists and was not started by this step (run %q, step %q); delete it or choose another name",
				what, existing.Annotations[runAnnotation], existing.Annotations[stepAnnotation])
		}
		if finished(existing).Type != batchv1.JobFailed || rc.DryRun || restarted {
			rc.Logger.Info("found the Job started by an earlier attempt", "job", what)
			return existing, true, nil
		}
		rc.Logger.Info("the Job of an earlier attempt failed; starting it again", "job", what)
		if err := deleteAndWait(ctx, cs, existing); err != nil {
			return nil, false, err
		}
	}
}

// deleteAndWait deletes a Job (its pods in the background) and waits until the name is free.
func deleteAndWait(ctx context.Context, cs kubernetes.Interface, job *batchv1.Job) error {
	jobs := cs.BatchV1().Jobs(job.Namespace)
	bg := metav1.DeletePropagationBackground
	err := jobs.Delete(ctx, job.Name, metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: &job.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return kube.ObjectError("Job", job.Namespace, job.Name, err)
	}
	for deadline := time.Now().Add(2 * time.Minute); ; {
		cur, err := jobs.Get(ctx, job.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || err == nil && cur.UID != job.UID {
			return nil
		}
		if err != nil {
			return kube.ObjectError("Job", job.Namespace, job.Name, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: the failed Job of an earlier attempt is still being deleted after 2m (finalizers %v)",
				kube.ObjectName("Job", job.Namespace, job.Name), cur.Finalizers)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Undo implements engine.Undoer: the Job and its pods are deleted.
func (j *Job) Undo(ctx context.Context, rc *engine.RunContext, outputs engine.Outputs) error {
	name, _ := outputs["name"].(string)
	ns, _ := outputs["namespace"].(string)
	if name == "" || outputs["dryRun"] == true {
		return nil
	}
	c, err := j.Client(rc)
	if err != nil {
		return err
	}
	cs, err := typed(rc, c)
	if err != nil {
		return err
	}
	bg := metav1.DeletePropagationBackground
	err = cs.BatchV1().Jobs(ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg})
	if err != nil && !apierrors.IsNotFound(err) {
		return kube.ObjectError("Job", ns, name, err)
	}
	return nil
}

// typed returns the run's typed clientset for the cluster (pod logs are not reachable through
// the dynamic client).
func typed(rc *engine.RunContext, c *kube.Client) (kubernetes.Interface, error) {
	v, err := rc.Shared("kube.typed/"+c.Name, func() (any, error) { return kubernetes.NewForConfig(c.Config) })
	if err != nil {
		return nil, err
	}
	return v.(kubernetes.Interface), nil
}

// finished returns the Complete or Failed condition that is true, or a zero condition.
func finished(job *batchv1.Job) batchv1.JobCondition {
	for _, cond := range job.Status.Conditions {
		if (cond.Type == batchv1.JobComplete || cond.Type == batchv1.JobFailed) && cond.Status == corev1.ConditionTrue {
			return cond
		}
	}
	return batchv1.JobCondition{}
}

// wait watches the Job until it completes or fails, reporting progress.
func wait(ctx context.Context, rc *engine.RunContext, cs kubernetes.Interface, job *batchv1.Job, timeout time.Duration) (*batchv1.Job, error) {
	what := kube.ObjectName("Job", job.Namespace, job.Name)
	total := int64(1)
	if job.Spec.Completions != nil {
		total = int64(*job.Spec.Completions)
	}
	last := job
	report := func(j *batchv1.Job) {
		last = j
		rc.Progress(engine.Progress{Done: int64(j.Status.Succeeded), Total: total, Unit: "pods"})
	}
	if finished(job).Type != "" {
		report(job)
		return job, nil
	}
	jobs := cs.BatchV1().Jobs(job.Namespace)
	sel := fields.OneTermEqualSelector("metadata.name", job.Name).String()
	lw := &cache.ListWatch{
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return jobs.List(ctx, o)
		},
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return jobs.Watch(ctx, o)
		},
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var deleted bool
	_, err := watchtools.UntilWithSync(wctx, lw, &batchv1.Job{}, nil, func(ev watch.Event) (bool, error) {
		if ev.Type == watch.Deleted {
			deleted = true
			return false, fmt.Errorf("%s was deleted while waiting for it", what)
		}
		j, ok := ev.Object.(*batchv1.Job)
		if !ok {
			return false, nil
		}
		report(j)
		return finished(j).Type != "", nil
	})
	switch {
	case err == nil:
		return last, nil
	case deleted:
		return nil, err
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case errors.Is(err, watchtools.ErrWatchClosed) || wctx.Err() != nil:
		return nil, fmt.Errorf("%s did not finish within %s (active %d, succeeded %d, failed %d)%s",
			what, timeout, last.Status.Active, last.Status.Succeeded, last.Status.Failed, podStates(ctx, cs, job))
	}
	return nil, fmt.Errorf("watching %s: %w", what, kube.Classify(err))
}

// kept is what keepLogs kept: the log files, and how the Job's last failed pod ended.
type kept struct {
	files []string
	// lastFailure is "pod P exited with status N: <last log line>" for the failed pod created
	// last (its container that failed), "" when no pod failed.
	lastFailure string
}

// maxErrorLine is the most of a failed pod's last log line that the step's error quotes.
const maxErrorLine = 512

// keepLogs writes the logs of every pod of the Job (every attempt, every container) to the
// step's artifact folder, one file per container, and returns their names. A log that cannot
// be read (a pod never scheduled, a kubelet that does not answer, a pod already gone) is noted,
// with the reason, in logs-unavailable.txt, so that the folder always says why a log is
// missing; a missing log never fails the step.
func keepLogs(ctx context.Context, cs kubernetes.Interface, job *batchv1.Job, dir string) (kept, error) {
	var notes []string
	k := kept{files: []string{}}
	pods, err := jobPods(ctx, cs, job)
	if err != nil {
		notes = append(notes, fmt.Sprintf("listing the pods of Job %s: %s", job.Name, kube.Reason(err)))
	} else if len(pods) == 0 {
		notes = append(notes, fmt.Sprintf("Job %s has no pods (none left, or none was ever started)", job.Name))
	}
	var lastFailed *corev1.Pod
	logOf := map[string]string{} // "pod/container" -> file
	for i, pod := range pods {
		if pod.Status.Phase == corev1.PodFailed && (lastFailed == nil || !pod.CreationTimestamp.Before(&lastFailed.CreationTimestamp)) {
			lastFailed = &pods[i]
		}
		containers := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
		for _, ctr := range containers {
			file := pod.Name + ".log"
			if len(containers) > 1 {
				file = pod.Name + "." + ctr.Name + ".log"
			}
			if pod.Spec.NodeName == "" {
				notes = append(notes, fmt.Sprintf("pod %s container %s: the pod was never scheduled to a node, so it has no log (phase %s)", pod.Name, ctr.Name, phase(pod)))
				continue
			}
			if err := saveLog(ctx, cs, pod.Namespace, pod.Name, ctr.Name, filepath.Join(dir, file)); err != nil {
				notes = append(notes, fmt.Sprintf("pod %s container %s: %v", pod.Name, ctr.Name, err))
				continue
			}
			k.files = append(k.files, file)
			logOf[pod.Name+"/"+ctr.Name] = filepath.Join(dir, file)
		}
	}
	if lastFailed != nil {
		k.lastFailure = failure(lastFailed, logOf)
	}
	note := filepath.Join(dir, logNote)
	if len(notes) == 0 {
		if err := os.Remove(note); err != nil && !os.IsNotExist(err) {
			return k, err
		}
		return k, nil
	}
	return k, os.WriteFile(note, []byte(strings.Join(notes, "\n")+"\n"), 0o644)
}

// failure says how a failed pod ended: the first container that exited with a non-zero status
// (init containers first, as they run first), with the last line of its kept log; else the
// pod's own reason (a deadline, an eviction).
func failure(pod *corev1.Pod, logOf map[string]string) string {
	statuses := append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	multi := len(statuses) > 1
	for _, st := range statuses {
		term := st.State.Terminated
		if term == nil || term.ExitCode == 0 {
			continue
		}
		who := "pod " + pod.Name
		if multi {
			who += " container " + st.Name
		}
		msg := fmt.Sprintf("%s exited with status %d", who, term.ExitCode)
		if path, ok := logOf[pod.Name+"/"+st.Name]; ok {
			if b, err := readTail(path, 64<<10); err == nil {
				if line := lastwords.Line(string(b), maxErrorLine); line != "" {
					msg += ": " + line
				}
			}
		}
		return msg
	}
	if pod.Status.Reason != "" || pod.Status.Message != "" {
		return strings.TrimSuffix(fmt.Sprintf("pod %s failed: %s: %s", pod.Name, pod.Status.Reason, lastwords.Printable(pod.Status.Message, maxErrorLine)), ": ")
	}
	return "pod " + pod.Name + " failed"
}

// readTail reads the last limit bytes of a file: a log can be megabytes; its last line is all the
// error needs.
func readTail(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(fi.Size()-limit, 0)
	b := make([]byte, fi.Size()-off)
	_, err = f.ReadAt(b, off)
	if err == io.EOF {
		err = nil
	}
	return b, err
}

// podStates says where the Job's pods stand, for the error of a Job that did not finish: a pod
// that cannot start (an image that cannot be pulled, a secret that does not exist, no node that
// fits) waits for ever, and only its container's waiting reason or its scheduling condition says
// so; a Job that could not even create its pod (a service account that does not exist) has
// none. "" when the pods cannot be listed: the error says enough without.
func podStates(ctx context.Context, cs kubernetes.Interface, job *batchv1.Job) string {
	pods, err := jobPods(ctx, cs, job)
	if err != nil {
		return ""
	}
	if len(pods) == 0 {
		return "; no pod created (the Job's events say why)"
	}
	var parts []string
	for _, pod := range pods {
		s := fmt.Sprintf("pod %s %s", pod.Name, phase(pod))
		if why := waiting(pod); why != "" {
			s += ": " + why
		}
		parts = append(parts, s)
	}
	return "; " + strings.Join(parts, "; ")
}

// waiting is why a pod waits: the first container waiting for a reason other than being
// created, else the reason it is not scheduled; "" when it runs or has finished.
func waiting(pod corev1.Pod) string {
	for _, st := range append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		w := st.State.Waiting
		if w == nil || w.Reason == "" || w.Reason == "ContainerCreating" || w.Reason == "PodInitializing" {
			continue
		}
		s := fmt.Sprintf("container %s waiting: %s", st.Name, w.Reason)
		if w.Message != "" {
			s += ": " + lastwords.Printable(w.Message, maxErrorLine)
		}
		return s
	}
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse {
			return "not scheduled: " + lastwords.Printable(cond.Message, maxErrorLine)
		}
	}
	return ""
}

func phase(pod corev1.Pod) string {
	if pod.Status.Phase == "" {
		return "unknown"
	}
	return string(pod.Status.Phase)
}

// jobPods lists the pods of this very Job, by name label and then owner UID, so that pods
// left by an earlier Job of the same name are not mistaken for its own; sorted by name.
func jobPods(ctx context.Context, cs kubernetes.Interface, job *batchv1.Job) ([]corev1.Pod, error) {
	var pods []corev1.Pod
	opts := metav1.ListOptions{LabelSelector: "job-name=" + job.Name, Limit: 500}
	for {
		list, err := cs.CoreV1().Pods(job.Namespace).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, pod := range list.Items {
			if owner := metav1.GetControllerOf(&pod); owner != nil && owner.UID != job.UID {
				continue
			}
			pods = append(pods, pod)
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	sort.Slice(pods, func(a, b int) bool { return pods[a].Name < pods[b].Name })
	return pods, nil
}

// saveLog copies a container's log (at most maxLogBytes) to path, through a temporary file so
// that a half-written log never replaces a complete one.
func saveLog(ctx context.Context, cs kubernetes.Interface, ns, pod, container, path string) error {
	limit := int64(maxLogBytes)
	stream, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, LimitBytes: &limit}).Stream(ctx)
	if err != nil {
		return errors.New(kube.Reason(err))
	}
	defer stream.Close()
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, stream); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("reading the log: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, path)
}
