package kubevolumes_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/modroot"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/steps/kubevolumes"
	"planrun.dev/planrun/steps/mover"
)

var planrunBin struct {
	once sync.Once
	path string
	err  error
}

// planrunBinary builds planrun from this checkout (the source the image was built from), for
// tests that run planrun as a process.
func planrunBinary(t *testing.T) string {
	t.Helper()
	planrunBin.once.Do(func() {
		root, err := modroot.Find()
		if err != nil {
			planrunBin.err = err
			return
		}
		dir, err := os.MkdirTemp("", "planrun-bin-")
		if err != nil {
			planrunBin.err = err
			return
		}
		planrunBin.path = filepath.Join(dir, "planrun")
		cmd := exec.Command("go", "build", "-o", planrunBin.path, "./cmd/planrun")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			planrunBin.err = fmt.Errorf("building planrun: %v\n%s", err, out)
		}
	})
	if planrunBin.err != nil {
		t.Fatal(planrunBin.err)
	}
	return planrunBin.path
}

// bigScript fills /data with 300 MiB of random bytes in 10 files: a copy long enough to be
// interrupted.
const bigScript = `set -e; for i in 0 1 2 3 4 5 6 7 8 9; do head -c 31457280 /dev/urandom > /data/part$i; done`

// setPassword sets the repository password in the Secret pw of the test's namespace.
func (e *env) setPassword(password string) {
	e.t.Helper()
	secrets := src().CoreV1().Secrets(e.ns)
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pw"}, StringData: map[string]string{"password": password}}
	if _, err := secrets.Update(ctx(), s, metav1.UpdateOptions{}); err == nil {
		return
	}
	if _, err := secrets.Create(ctx(), s, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// TestKillAndResume: planrun is SIGKILLed while the backup runs; the mover pods go on. The
// restore pod waiting for the backup is then lost and the repository's password changed by
// mistake: `planrun resume` finds the backup pod (no second one) and follows it to its end, but
// the restore pod it makes again fails, and the step says so with the mover's one-line message
// naming the pod (the failed pod is not made again), and deletes its pods and Secrets. With the password put back,
// the next resume restores (the backup is not done again) and the copy equals the source; the
// backup's log, read again from its start after the kill, is kept once.
func TestKillAndResume(t *testing.T) {
	bin := planrunBinary(t)
	e := newEnv(t)
	e.claimWithScript("data", bigScript, nil)
	e.setPassword("first")
	srcPods, dstPods := recordPods(t, src(), e.ns), recordPods(t, dst(), e.ns)
	dir := t.TempDir()
	plan := filepath.Join(dir, "plan.yaml")
	body := plantest.Header + fmt.Sprintf("clusters:\n  source: {kubeconfig: %q, context: %q}\n  target: {kubeconfig: %q, context: %q}\n",
		clusters[0].CP.Kubeconfig, clusters[0].CP.ContextName, clusters[1].CP.Kubeconfig, clusters[1].CP.ContextName) +
		fmt.Sprintf("steps:\n  - {id: s, type: kube.copyVolumes, with: {from: source, to: target, namespaces: [%s], %s, passwordFrom: {cluster: source, namespace: %s, name: pw, key: password}}}\n",
			e.ns, e.with(), e.ns)
	if err := os.WriteFile(plan, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	var done atomic.Int64 // bytes of the last progress event
	kp := plantest.KillPoint{Event: engine.EventStepProgress, Step: "s", UntilDoc: "16 MiB done", Until: func() bool { return done.Load() >= 16<<20 }}
	start := time.Now()
	r := plantest.RunBinary(t, bin, dir, plantest.RunOptions{Kill: &kp, OnEvent: func(ev engine.Event) {
		if ev.Type == engine.EventStepProgress && ev.StepID == "s" {
			done.Store(ev.Progress.Bytes)
		}
	}}, "apply", plan, "--run-id", "r")
	if !r.Killed {
		t.Fatalf("the run ended (exit %d) before it was killed at %s\n%s", r.Code, kp, r)
	}
	t.Logf("killed after %s", time.Since(start).Round(time.Millisecond))
	pods := srcPods.get("planrun-backup-data-")
	if len(pods) != 1 {
		t.Fatalf("backup pods: %d", len(pods))
	}
	if cur, err := src().CoreV1().Pods(e.ns).Get(ctx(), pods[0].Name, metav1.GetOptions{}); err != nil || cur.DeletionTimestamp != nil || cur.Status.Phase == corev1.PodFailed {
		t.Fatalf("the backup pod after planrun was killed: %v", err)
	}

	// The restore pod, started with the backup, waits with the right password: it is lost (as
	// to an eviction) while planrun is away, so that the next one takes the wrong one.
	restores := dstPods.get("planrun-restore-data-")
	if len(restores) != 1 {
		t.Fatalf("restore pods before the kill: %d, want the one waiting for the backup", len(restores))
	}
	if err := dst().CoreV1().Pods(e.ns).Delete(ctx(), restores[0].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pollGone(t, "pod "+restores[0].Name+" on the target", func() bool {
		_, err := dst().CoreV1().Pods(e.ns).Get(ctx(), restores[0].Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	e.setPassword("second")
	start = time.Now()
	r = plantest.RunBinary(t, bin, dir, plantest.RunOptions{}, "resume", "r", "--break-lock", "--no-rollback")
	t.Logf("resumed with the wrong password: exit %d in %s", r.Code, time.Since(start).Round(time.Millisecond))
	restore := kubevolumes.ObjectName("planrun-restore-", "data", "r", "s", e.ns, "data")
	if want := fmt.Sprintf("claim %s/data: mover pod %s/%s on cluster target failed: ", e.ns, e.ns, restore); r.Code == 0 ||
		!strings.Contains(r.String(), want) || !strings.Contains(r.String(), "wrong repository password") {
		t.Fatalf("resume with the wrong password: want a failure with %q and the mover's message\n%s", want, r)
	}
	e.nothingLeft()

	e.setPassword("first")
	start = time.Now()
	if r := plantest.RunBinary(t, bin, dir, plantest.RunOptions{}, "resume", "r"); r.Code != 0 {
		t.Fatalf("resume exited %d\n%s", r.Code, r)
	}
	t.Logf("resumed in %s", time.Since(start).Round(time.Millisecond))
	if n := len(srcPods.get("planrun-backup-data-")); n != 1 {
		t.Errorf("backup pods: %d, want the one started before the kill", n)
	}
	if n := len(dstPods.get("planrun-restore-data-")); n != 3 {
		t.Errorf("restore pods: %d, want the lost one, the failed one and the next", n)
	}
	sameTree(t, volumeDir(t, clusters[0], e.ns, "data"), volumeDir(t, clusters[1], e.ns, "data"))
	keptOnce(t, logs(t, engine.NewDirStore(filepath.Join(dir, "runs")), "r"), "source-"+e.ns+"-"+pods[0].Name+"-"+string(pods[0].UID)[:8]+".log")
	e.nothingLeft()
}

// keptOnce checks a mover's log kept in the step's folder: its progress never goes back and it
// has one result, as when the mover's output is kept once even if read again from its start.
func keptOnce(t *testing.T, kept map[string]string, name string) {
	t.Helper()
	log, ok := kept[name]
	if !ok {
		t.Errorf("no log %s in %v", name, keys(kept))
		return
	}
	var results int
	var last int64
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		ev, err := mover.ParseEvent([]byte(line))
		if err != nil {
			continue // kopia's own log lines
		}
		switch ev := ev.(type) {
		case *mover.Progress:
			if ev.Bytes < last {
				t.Errorf("log %s: progress goes back from %d to %d bytes: the output is kept twice?\n%s", name, last, ev.Bytes, log)
				return
			}
			last = ev.Bytes
		case *mover.BackupResult, *mover.RestoreResult:
			results++
		}
	}
	if results != 1 {
		t.Errorf("log %s has %d results, want 1:\n%s", name, results, log)
	}
}

// TestDeletedPodAndInterrupt: the backup pod is deleted mid-copy; the step makes it again, says
// so in a warning, and the mover resumes. The run is then interrupted (as by Ctrl-C) while the
// restore runs: the restore pod goes on, and the step run again finds it (no second pod),
// follows it to its end, and the copy equals the source.
func TestDeletedPodAndInterrupt(t *testing.T) {
	e := newEnv(t)
	e.claimWithScript("data", bigScript, nil)
	srcPods, dstPods := recordPods(t, src(), e.ns), recordPods(t, dst(), e.ns)
	var once sync.Once
	p := load(t, e.copyStep(""))
	start := time.Now()
	o := apply(t, p, nil, "r", false, func(ev engine.Event) bool {
		if ev.Type == engine.EventStepProgress && ev.StepID == "s" && ev.Progress.Bytes >= 16<<20 {
			if pods := srcPods.get("planrun-backup-data-"); len(pods) == 1 {
				once.Do(func() {
					go src().CoreV1().Pods(e.ns).Delete(ctx(), pods[0].Name, metav1.DeleteOptions{})
				})
			}
		}
		// The restore pod is there from the start: the restore is under way once the step's
		// progress is past the backup's half.
		return ev.Type == engine.EventStepProgress && ev.StepID == "s" && ev.Progress.TotalBytes > 0 && ev.Progress.Bytes > ev.Progress.TotalBytes/2
	})
	if o.err == nil {
		t.Fatal("the run finished before it was interrupted")
	}
	t.Logf("interrupted during the restore after %s: %v", time.Since(start).Round(time.Millisecond), o.err)
	if n := len(srcPods.get("planrun-backup-data-")); n != 2 {
		t.Errorf("backup pods: %d, want 2", n)
	}
	var said bool
	for _, w := range o.warnings {
		said = said || strings.Contains(w, "was deleted; making it again (1 of at most 3), the mover resumes from its checkpoint")
	}
	if !said {
		t.Errorf("warnings %q", o.warnings)
	}
	restores := dstPods.get("planrun-restore-data-")
	if cur, err := dst().CoreV1().Pods(e.ns).Get(ctx(), restores[0].Name, metav1.GetOptions{}); err != nil || cur.DeletionTimestamp != nil || cur.Status.Phase == corev1.PodFailed {
		t.Fatalf("the restore pod after the interruption: %v", err)
	}

	start = time.Now()
	o = apply(t, p, o.store, "r", true, nil)
	out := o.outputs(t)
	t.Logf("resumed in %s: %s", time.Since(start).Round(time.Millisecond), out["summary"])
	if got := dstPods.get("planrun-restore-data-"); len(got) != 1 {
		t.Errorf("restore pods after resume: %d, want the one started before the interruption", len(got))
	}
	if plantest.Num(t, out, "files") != 10 || plantest.Num(t, out, "bytes") != 10*31457280 {
		t.Errorf("outputs %v", out)
	}
	sameTree(t, volumeDir(t, clusters[0], e.ns, "data"), volumeDir(t, clusters[1], e.ns, "data"))
	keptOnce(t, logs(t, o.store, "r"), "target-"+e.ns+"-"+restores[0].Name+"-"+string(restores[0].UID)[:8]+".log")
	e.nothingLeft()
}

// TestImageCannotStart: a mover image that cannot be pulled fails the step in a while, saying
// so, instead of waiting for the claim's timeout.
func TestImageCannotStart(t *testing.T) {
	defer kubevolumes.SetStuckAfter(3 * time.Second)()
	e := newEnv(t)
	e.boundClaim(src(), e.ns, "data", "local")
	start := time.Now()
	run := plantestApply(t, e.copyStep(", image: planrun.local/no-such-image:1"), plantest.Options{})
	plantest.WantError(t, run.Err, "cannot start: container mover waiting: ", "planrun.local/no-such-image:1")
	t.Logf("failed after %s: %v", time.Since(start).Round(time.Millisecond), run.Err)
	e.nothingLeft()
}
