package kubevolumes

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/lastwords"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/mover"
)

// How long a mover pod may wait for something that will not come by itself before the step
// gives up, saying why: a container that cannot start (an image that cannot be pulled, a
// Secret that is missing), a pod that no node takes. Variables for the tests.
var (
	stuckAfter         = time.Minute
	unschedulableAfter = 5 * time.Minute
	pollEvery          = time.Second
)

// stuckReasons are the waiting reasons of a container that will not start without help.
var stuckReasons = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "ErrImageNeverPull": true, "InvalidImageName": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
}

// maxErrorLine bounds what an error quotes of a mover's message or last log line.
const maxErrorLine = 1024

// podEnd is how a mover pod ended.
type podEnd struct {
	result mover.Event // its result, when it succeeded
	err    error       // it failed, or the step cannot follow it: final
	lost   string      // it disappeared, was evicted or killed from outside: made again (bounded)
}

// follower follows one mover pod: its status, and its log (JSON lines) as it is written, kept
// in the step's folder.
type follower struct {
	r    *runner
	p    *moverPod
	uid  types.UID
	seen int // log lines handled: a log read again (re-attached) skips them
	// result is the mover's last result event, errMsg the message of its last failure event;
	// lastText its last line that is not an event (a panic, a usage error).
	result   mover.Event
	errMsg   string
	lastText string
	logPath  string
	log      *os.File
}

func (f *follower) what() string {
	return fmt.Sprintf("mover pod %s/%s on %s", f.p.namespace, f.p.name, f.p.cl)
}

// follow follows pod until it ends, or until deadline.
func (r *runner) follow(ctx context.Context, p *moverPod, pod *corev1.Pod, deadline time.Time) podEnd {
	f := &follower{r: r, p: p, uid: pod.UID, logPath: filepath.Join(r.logDir, logName(p, pod))}
	defer f.closeLog()
	outer := ctx
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	pods := p.cl.cs.CoreV1().Pods(p.namespace)
	var stuckSince, unschedulableSince time.Time
	var last *corev1.Pod // as last seen
	for {
		cur, err := pods.Get(ctx, p.name, metav1.GetOptions{})
		switch {
		case ctx.Err() != nil:
			return f.stopped(outer, last)
		case apierrors.IsNotFound(err):
			return podEnd{lost: "was deleted"}
		case err != nil && engine.IsTransient(kube.Classify(err)):
			f.sleep(ctx)
			continue
		case err != nil:
			return podEnd{err: fmt.Errorf("%s: %w", f.what(), kube.Classify(err))}
		case cur.UID != f.uid:
			return podEnd{lost: "was deleted (another pod of the same name took its place)"}
		case cur.DeletionTimestamp != nil:
			return podEnd{lost: "was deleted"}
		}
		last = cur
		switch cur.Status.Phase {
		case corev1.PodSucceeded, corev1.PodFailed:
			f.readLog(ctx, false)
			return f.end(cur)
		case corev1.PodRunning:
			f.readLog(ctx, true) // until the container ends or the stream breaks
			f.sleep(ctx)
		default:
			now := time.Now()
			if why := stuck(cur); why != "" {
				if stuckSince.IsZero() {
					stuckSince = now
				}
				if now.Sub(stuckSince) > stuckAfter {
					return podEnd{err: fmt.Errorf("%s cannot start: %s", f.what(), why)}
				}
			} else {
				stuckSince = time.Time{}
			}
			if why := unschedulable(cur); why != "" {
				if unschedulableSince.IsZero() {
					unschedulableSince = now
				}
				if now.Sub(unschedulableSince) > unschedulableAfter {
					return podEnd{err: fmt.Errorf("%s is not scheduled after %s: %s", f.what(), unschedulableAfter, why)}
				}
			} else {
				unschedulableSince = time.Time{}
			}
			f.sleep(ctx)
		}
	}
}

func (f *follower) sleep(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(pollEvery):
	}
}

// stopped is the end of a follow whose context ended: the step was interrupted (outer ended:
// the pod goes on, and a step run again finds it), or the claim ran out of time.
func (f *follower) stopped(outer context.Context, cur *corev1.Pod) podEnd {
	if err := outer.Err(); err != nil {
		return podEnd{err: err}
	}
	state := ""
	if cur != nil {
		state = " (" + podState(cur) + ")"
	}
	return podEnd{err: fmt.Errorf("%s did not finish within the claim's timeout%s", f.what(), state)}
}

// end reads how a finished pod ended: its result (from the termination message, which
// outlives a lost log, else from the log), or why it failed.
func (f *follower) end(pod *corev1.Pod) podEnd {
	term := terminated(pod)
	var msg mover.Event
	if term != nil {
		msg = lastEvent(term.Message)
	}
	if pod.Status.Phase == corev1.PodSucceeded {
		res := f.result
		if isResult(msg) {
			res = msg
		}
		if res == nil {
			return podEnd{err: fmt.Errorf("%s exited 0 without a result (is %s a planrun with the mover?)%s", f.what(), f.r.m.image(), f.logNote())}
		}
		return podEnd{result: res}
	}
	if pod.Status.Reason == "DeadlineExceeded" {
		// The pod's activeDeadlineSeconds: the claim's timeout, should planrun have been away.
		return podEnd{err: fmt.Errorf("%s did not finish within the claim's timeout (%s)%s", f.what(), lastwords.Printable(pod.Status.Message, maxErrorLine), f.logNote())}
	}
	if term == nil {
		// The container never ran or has no status: the pod's own reason says why.
		return podEnd{lost: strings.TrimSuffix(fmt.Sprintf("failed: %s: %s", pod.Status.Reason, lastwords.Printable(pod.Status.Message, maxErrorLine)), ": ")}
	}
	why := ""
	failure, _ := msg.(*mover.Failure)
	switch {
	case failure != nil && failure.Message != "":
		why = failure.Message
	case f.errMsg != "":
		why = f.errMsg
	case term.Reason == "OOMKilled":
		return podEnd{err: fmt.Errorf("%s was killed: out of memory (OOMKilled)%s", f.what(), f.logNote())}
	case term.ExitCode > 128 && pod.Status.Reason == "":
		// Killed by a signal from outside (a node shutting down, someone): the mover resumes
		// from its checkpoint in a new pod.
		return podEnd{lost: fmt.Sprintf("was killed (exit status %d)", term.ExitCode)}
	case f.lastText != "":
		why = fmt.Sprintf("exited with status %d: %s", term.ExitCode, f.lastText)
	case term.Message != "" && msg == nil:
		why = fmt.Sprintf("exited with status %d: %s", term.ExitCode, lastwords.Line(term.Message, maxErrorLine))
	default:
		why = fmt.Sprintf("exited with status %d (%s)", term.ExitCode, term.Reason)
	}
	if pod.Status.Reason == "Evicted" {
		return podEnd{lost: "was evicted: " + lastwords.Printable(pod.Status.Message, maxErrorLine)}
	}
	return podEnd{err: fmt.Errorf("%s failed: %s%s", f.what(), lastwords.Printable(why, maxErrorLine), f.logNote())}
}

func (f *follower) logNote() string {
	if f.log == nil {
		return ""
	}
	return " (log: " + f.logPath + ")"
}

// readLog reads the pod's log from its start, handling the lines not seen yet: with follow, as
// they are written, until the container ends or the stream breaks. A log that cannot be read
// (the container has not started, the kubelet does not answer) is left for the next look.
func (f *follower) readLog(ctx context.Context, follow bool) {
	stream, err := f.p.cl.cs.CoreV1().Pods(f.p.namespace).GetLogs(f.p.name, &corev1.PodLogOptions{Container: containerName, Follow: follow}).Stream(ctx)
	if err != nil {
		return
	}
	defer stream.Close()
	br := bufio.NewReaderSize(stream, 64<<10)
	n := 0
	for {
		line, err := br.ReadBytes('\n')
		// A line cut by a broken stream is read again whole next time; the last line of a
		// finished container may lack its newline.
		if len(line) > 0 && (err == nil || err == io.EOF && !follow) {
			n++
			if n > f.seen {
				f.seen = n
				f.handle(line)
			}
		}
		if err != nil {
			return
		}
	}
}

// handle takes one line of the mover's output.
func (f *follower) handle(line []byte) {
	f.keep(line)
	line = bytes.TrimSpace(line)
	var ev mover.Event
	if len(line) > 0 && line[0] == '{' {
		ev, _ = mover.ParseEvent(line)
	}
	switch ev := ev.(type) {
	case nil:
		if len(line) > 0 {
			f.lastText = lastwords.Printable(string(line), maxErrorLine)
		}
	case *mover.Progress:
		if ev.Phase == "" {
			ev.Phase = f.p.role
		}
		f.r.progress.update(f.p.key, ev)
	case *mover.Warning:
		f.r.progress.warn(f.p.key, f.p.role, ev)
	case *mover.Failure:
		f.errMsg = ev.Message
	default:
		f.result = ev
	}
}

// keep appends a line to the pod's log in the step's folder. A log that cannot be written
// does not stop the copy.
func (f *follower) keep(line []byte) {
	if f.log == nil {
		var err error
		// A follower reads the pod's log from its start: a planrun that follows it again after
		// a crash writes the whole log again.
		if f.log, err = os.OpenFile(f.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644); err != nil {
			f.log = nil
			return
		}
	}
	if !bytes.HasSuffix(line, []byte("\n")) {
		line = append(line, '\n')
	}
	f.log.Write(line)
}

func (f *follower) closeLog() {
	if f.log != nil {
		f.log.Close()
	}
}

// lastEvent is the last mover event in a termination message: the mover writes its result or
// error there; a mover that died first leaves the end of its log (FallbackToLogsOnError).
func lastEvent(msg string) mover.Event {
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "{") {
			continue
		}
		ev, err := mover.ParseEvent([]byte(l))
		if _, failed := ev.(*mover.Failure); err == nil && (failed || isResult(ev)) {
			return ev
		}
	}
	return nil
}

// terminated is the mover container's terminated state, nil if it has none.
func terminated(pod *corev1.Pod) *corev1.ContainerStateTerminated {
	for _, st := range pod.Status.ContainerStatuses {
		if st.Name == containerName && st.State.Terminated != nil {
			return st.State.Terminated
		}
	}
	return nil
}

// stuck is why a pod's container waits for ever ("" if it does not).
func stuck(pod *corev1.Pod) string {
	for _, st := range pod.Status.ContainerStatuses {
		if w := st.State.Waiting; w != nil && stuckReasons[w.Reason] {
			return strings.TrimSuffix(fmt.Sprintf("container %s waiting: %s: %s", st.Name, w.Reason, lastwords.Printable(w.Message, maxErrorLine)), ": ")
		}
	}
	return ""
}

// unschedulable is why no node takes the pod ("" if it is scheduled or not judged yet).
func unschedulable(pod *corev1.Pod) string {
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable {
			return lastwords.Printable(cond.Message, maxErrorLine)
		}
	}
	return ""
}

// podState says where a pod stands, for an error: its phase and why it waits.
func podState(pod *corev1.Pod) string {
	s := string(pod.Status.Phase)
	if s == "" {
		s = "Pending"
	}
	if why := stuck(pod); why != "" {
		return s + ": " + why
	}
	if why := unschedulable(pod); why != "" {
		return s + ": not scheduled: " + why
	}
	for _, st := range pod.Status.ContainerStatuses {
		if w := st.State.Waiting; w != nil && w.Reason != "" {
			return s + ": container " + st.Name + " waiting: " + w.Reason
		}
	}
	return s
}

// logName is the name of a mover pod's log in the step's folder:
// CLUSTER-NAMESPACE-POD-UID.log, the start of the pod's UID telling apart the pods of the same
// name made again after one disappeared.
func logName(p *moverPod, pod *corev1.Pod) string {
	uid := string(pod.UID)
	if len(uid) > 8 {
		uid = uid[:8]
	}
	return fmt.Sprintf("%s-%s-%s-%s.log", clusterFile(p.cl), p.namespace, p.name, uid)
}

// clusterFile is the cluster's name for a file name.
func clusterFile(cl *cluster) string {
	if cl.name == "" {
		return "default"
	}
	return cl.name
}
