package kubevolumes_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/steps/kubevolumes"
)

// TestInterruptAndResume: planrun stops while a backup runs (as after a crash); the mover pod
// goes on, and the step run again finds it (no second pod), follows it to its end and copies.
func TestInterruptAndResume(t *testing.T) {
	defer kubevolumes.SetMoverCommand(fakeMover)()
	e := newEnv(t)
	e.claimWithData(src(), e.ns, "data", map[string]string{"a": "12345", ".fake-mode": "slow-backup"}, nil)
	srcPods := recordPods(t, src(), e.ns)
	p := load(t, e.copyStep(""))
	start := time.Now()
	o := apply(t, p, nil, "r", false, func(ev engine.Event) bool {
		return ev.Type == engine.EventStepProgress && ev.StepID == "s" && ev.Progress.Bytes >= 2
	})
	if o.err == nil {
		t.Fatal("the run finished before it was interrupted")
	}
	t.Logf("interrupted after %s: %v", time.Since(start).Round(time.Millisecond), o.err)
	pods := srcPods.get("planrun-backup-data-")
	if len(pods) != 1 {
		t.Fatalf("backup pods: %d", len(pods))
	}
	cur, err := src().CoreV1().Pods(e.ns).Get(ctx(), pods[0].Name, metav1.GetOptions{})
	if err != nil || cur.Status.Phase != corev1.PodRunning {
		t.Fatalf("the backup pod after the interruption: %v %v", cur.Status.Phase, err)
	}

	start = time.Now()
	o = apply(t, p, o.store, "r", true, nil)
	out := o.outputs(t)
	t.Logf("resumed in %s", time.Since(start).Round(time.Millisecond))
	if got := srcPods.get("planrun-backup-data-"); len(got) != 1 {
		t.Errorf("backup pods after resume: %d, want the one started before the interruption", len(got))
	}
	if !strings.HasPrefix(fmt.Sprint(out["snapshots"]), "map["+e.ns+"/data:fake.slow-backup.2.") {
		t.Errorf("outputs %v", out)
	}
	// The backup's log, read again from its start after the interruption, is kept once.
	for name, content := range logs(t, o, "r") {
		if strings.HasPrefix(name, "source-") && strings.Count(content, "args: ") != 1 {
			t.Errorf("kept log %s holds the mover's output %d times:\n%s", name, strings.Count(content, "args: "), content)
		}
	}
	e.nothingLeft()
}

// TestDeletedPodMadeAgain: a mover pod deleted mid-copy is made again, and the copy finishes;
// the step says so in a warning.
func TestDeletedPodMadeAgain(t *testing.T) {
	defer kubevolumes.SetMoverCommand(fakeMover)()
	e := newEnv(t)
	e.claimWithData(src(), e.ns, "data", map[string]string{"a": "1", ".fake-mode": "slow-restore"}, nil)
	dstPods := recordPods(t, dst(), e.ns)
	var once sync.Once
	start := time.Now()
	o := apply(t, load(t, e.copyStep("")), nil, "r", false, func(ev engine.Event) bool {
		if ev.Type == engine.EventStepProgress && ev.StepID == "s" && ev.Progress.Bytes >= 1 {
			if pods := dstPods.get("planrun-restore-data-"); len(pods) == 1 {
				once.Do(func() {
					go func() {
						if err := dst().CoreV1().Pods(e.ns).Delete(ctx(), pods[0].Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
							t.Errorf("deleting the restore pod: %v", err)
						}
					}()
				})
			}
		}
		return false
	})
	out := o.outputs(t)
	t.Logf("copied in %s with the restore pod deleted once", time.Since(start).Round(time.Millisecond))
	if n := len(dstPods.get("planrun-restore-data-")); n != 2 {
		t.Errorf("restore pods: %d, want 2", n)
	}
	var said bool
	for _, w := range o.warnings {
		said = said || strings.Contains(w, "was deleted; making it again (1 of at most 3)")
	}
	if !said {
		t.Errorf("warnings %q", o.warnings)
	}
	if plantest.Num(t, out, "files") != 2 {
		t.Errorf("outputs %v", out)
	}
	e.nothingLeft()
}

// TestMoverFails: a mover that fails fails the step with its one-line message and the pod's
// name, namespace and cluster; its pods and Secrets are deleted.
func TestMoverFails(t *testing.T) {
	defer kubevolumes.SetMoverCommand(fakeMover)()
	e := newEnv(t)
	e.claimWithData(src(), e.ns, "data", map[string]string{"a": "1", ".fake-mode": "fail-restore"}, nil)
	run := plantestApply(t, e.copyStep(""), plantest.Options{})
	name := kubevolumes.ObjectName("planrun-restore-", "data", "run", "s", e.ns, "data")
	plantest.WantError(t, run.Err, fmt.Sprintf(`step "s" failed: claim %s/data: mover pod %s/%s on cluster target failed: no space left on device writing big.bin (log: `, e.ns, e.ns, name))
	e.nothingLeft()
}

// TestImageCannotStart: a mover image that cannot be pulled fails the step in a while, saying
// so, instead of waiting for the claim's timeout.
func TestImageCannotStart(t *testing.T) {
	defer kubevolumes.SetStuckAfter(3 * time.Second)()
	e := newEnv(t)
	e.boundClaim(src(), e.ns, "data", "local")
	start := time.Now()
	run := plantestApply(t, strings.Replace(e.copyStep(""), "image: "+busybox(), "image: planrun.local/no-such-image:1", 1), plantest.Options{})
	plantest.WantError(t, run.Err, "cannot start: container mover waiting: ", "planrun.local/no-such-image:1")
	t.Logf("failed after %s: %v", time.Since(start).Round(time.Millisecond), run.Err)
	e.nothingLeft()
}

// TestVerifyFake: kube.verifyVolumes runs a verify pod per claim of a copy's snapshots; a
// difference fails the step with the mover's message naming the file.
func TestVerifyFake(t *testing.T) {
	defer kubevolumes.SetMoverCommand(fakeMover)()
	e := newEnv(t)
	e.claimWithData(src(), e.ns, "data", map[string]string{"a": "1"}, nil)
	verify := fmt.Sprintf("  - {id: check, type: kube.verifyVolumes, with: {cluster: target, snapshots: \"${{ steps.s.outputs.snapshots }}\", %s}}\n", e.with(false))
	o := apply(t, load(t, e.copyStep("")+verify), nil, "r", false, nil)
	if o.err != nil {
		t.Fatal(o.err)
	}
	out := o.j.Step("check").Outputs
	if out["summary"] != "1 volume verified: 30 B in 3 files" {
		t.Errorf("verify outputs %v", out)
	}
	snap := o.j.Step("s").Outputs["snapshots"].(map[string]any)[e.ns+"/data"].(string)
	if err := writeFile(volumeDir(t, clusters[1], e.ns, "data"), "corrupt", "x"); err != nil {
		t.Fatal(err)
	}
	run := plantestApply(t, clustersHeader+fmt.Sprintf("steps:\n  - {id: check, type: kube.verifyVolumes, with: {cluster: target, snapshots: {%s/data: %s}, %s}}\n", e.ns, snap, e.with(false)), plantest.Options{})
	plantest.WantError(t, run.Err, fmt.Sprintf("claim %s/data: mover pod %s/", e.ns, e.ns), "1 file differs from snapshot "+snap+": corrupt (sha256)")
	e.nothingLeft()
}
