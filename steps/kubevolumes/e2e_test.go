package kubevolumes_test

// End-to-end tests: the real mover (`planrun mover` in the planrun image built from this
// checkout) copies real trees between the two clusters through a real S3 server. They skip, and
// say why, while the image's planrun has no mover subcommand; once it has one they run.

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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/modroot"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubevolumes"
)

// ObjectName is the name the step gives a mover pod.
var ObjectName = kubevolumes.ObjectName

var mover struct {
	once sync.Once
	bin  string // planrun built from this checkout, as the image is
	skip string // why the end-to-end tests skip; "" when the mover is there
	err  error
}

// needMover builds planrun from this checkout (the source the image was built from), asks it for
// `planrun mover --help`, and skips the test when it does not know the command. It returns the
// binary, for tests that run planrun as a process.
func needMover(t *testing.T) string {
	t.Helper()
	if !hasMover(t) {
		t.Skip(mover.skip)
	}
	return mover.bin
}

// hasMover reports whether the planrun of this checkout has the mover subcommand.
func hasMover(t *testing.T) bool {
	t.Helper()
	kubetest.Need(t, clusters)
	mover.once.Do(func() {
		root, err := modroot.Find()
		if err != nil {
			mover.err = err
			return
		}
		dir, err := os.MkdirTemp("", "planrun-bin-")
		if err != nil {
			mover.err = err
			return
		}
		mover.bin = filepath.Join(dir, "planrun")
		cmd := exec.Command("go", "build", "-o", mover.bin, "./cmd/planrun")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			mover.err = fmt.Errorf("building planrun: %v\n%s", err, out)
			return
		}
		out, _ := exec.Command(mover.bin, "mover", "--help").CombinedOutput()
		if strings.Contains(string(out), `unknown command "mover"`) {
			mover.skip = "the planrun image has no mover yet (planrun mover --help: " + strings.TrimSpace(string(out)) + "); these tests run once steps/mover and its command are merged"
		}
	})
	if mover.err != nil {
		t.Fatal(mover.err)
	}
	return mover.skip == ""
}

// treeScript writes into /data what a copy must keep: modes (setuid too), owners, a modification
// time in the past, a symlink, a hard link, an empty folder, a sparse file, a larger random file.
const treeScript = `set -e
cd /data
mkdir -p dir/sub empty
printf hello > dir/hello.txt
ln dir/hello.txt hardlink.txt
touch -d "2020-01-02 03:04:05" dir/hello.txt
head -c 3145728 /dev/urandom > big.bin
chmod 0600 big.bin
printf secret > dir/sub/owned
chown 1000:2000 dir/sub/owned dir/sub
chmod 0640 dir/sub/owned
printf 'x' > dir/setuid
chmod 4755 dir/setuid
ln -s ../big.bin dir/link
printf end | dd of=sparse.bin bs=1 seek=10485760 2>/dev/null
chmod 0700 empty
`

// claimWithScript makes a claim of class local on the source filled by script.
func (e *env) claimWithScript(name, script string) {
	e.t.Helper()
	e.claimWithData(src(), e.ns, name, nil, nil)
	pod := e.podUsing(src(), e.ns, "fill-"+name, name, script)
	waitPod(e.t, src(), e.ns, pod, corev1.PodSucceeded)
	if err := src().CoreV1().Pods(e.ns).Delete(ctx(), pod, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// TestE2EStageThenFinal: a stage copy while the app runs, changes on the source, the final copy
// after the app stopped (only what changed is uploaded; deletions mirrored; every file
// verified), then kube.verifyVolumes, which fails naming a file damaged on the target.
func TestE2EStageThenFinal(t *testing.T) {
	needMover(t)
	e := newEnv(t)
	e.claimWithScript("data", treeScript)
	app := e.podUsing(src(), e.ns, "app-0", "data", "sleep 3600")
	waitPod(t, src(), e.ns, app, corev1.PodRunning)
	srcDir := volumeDir(t, clusters[0], e.ns, "data")

	start := time.Now()
	stage := apply(t, load(t, e.copyStepReal(", stage: true")), nil, "stage", false, nil)
	out := stage.outputs(t)
	t.Logf("stage: %s in %s", out["summary"], time.Since(start).Round(time.Millisecond))
	dstDir := volumeDir(t, clusters[1], e.ns, "data")
	sameTree(t, srcDir, dstDir)
	firstUpload := plantest.Num(t, out, "uploadedBytes")
	if firstUpload < 3<<20 {
		t.Errorf("the first copy uploaded %d bytes, less than its random file", firstUpload)
	}

	// The app changes files, then stops.
	if err := os.Remove(filepath.Join(srcDir, "dir/sub/owned")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(srcDir, "new.txt"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(srcDir, "dir/hello.txt"), []byte("HELLO, changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := src().CoreV1().Pods(e.ns).Delete(ctx(), app, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	pollGone(t, "the app", func() bool {
		_, err := src().CoreV1().Pods(e.ns).Get(ctx(), app, metav1.GetOptions{})
		return err != nil
	})

	start = time.Now()
	final := apply(t, load(t, e.copyStepReal(", verify: true")+fmt.Sprintf(
		"  - {id: check, type: kube.verifyVolumes, with: {cluster: target, snapshots: \"${{ steps.s.outputs.snapshots }}\", %s}}\n", e.with(true))), nil, "final", false, nil)
	out = final.outputs(t)
	t.Logf("final: %s in %s; verify: %s", out["summary"], time.Since(start).Round(time.Millisecond), final.j.Step("check").Outputs["summary"])
	sameTree(t, srcDir, dstDir)
	vol := out["volumes"].([]any)[0].(map[string]any)
	if vol["verified"] != true || plantest.Num(t, vol, "deleted") < 1 || fmt.Sprint(out["createdClaims"]) != "[]" {
		t.Errorf("final copy: %v", vol)
	}
	if up := plantest.Num(t, out, "uploadedBytes"); up >= firstUpload/2 {
		t.Errorf("the final copy uploaded %d bytes, the stage %d: not incremental", up, firstUpload)
	}

	// A file damaged on the target: verify names it.
	if err := os.WriteFile(filepath.Join(dstDir, "new.txt"), []byte("NEW"), 0o644); err != nil {
		t.Fatal(err)
	}
	snap := out["snapshots"].(map[string]any)[e.ns+"/data"]
	run := plantestApply(t, clustersHeader+fmt.Sprintf("steps:\n  - {id: s, type: kube.verifyVolumes, with: {cluster: target, snapshots: {%s/data: %s}, %s}}\n", e.ns, snap, e.with(true)), plantest.Options{})
	plantest.WantError(t, run.Err, fmt.Sprintf("claim %s/data: mover pod %s/", e.ns, e.ns), "new.txt")
	t.Logf("verify of a damaged copy: %v", run.Err)
	e.nothingLeft()
}

// bigScript fills /data with 300 MiB of random bytes in 10 files: a copy long enough to be
// interrupted.
const bigScript = `set -e; for i in 0 1 2 3 4 5 6 7 8 9; do head -c 31457280 /dev/urandom > /data/part$i; done`

// TestE2EKillPlanrunAndResume: planrun is SIGKILLed while the backup runs; `planrun resume`
// finds the mover pod (no second one) and the copy finishes, equal to the source.
func TestE2EKillPlanrunAndResume(t *testing.T) {
	bin := needMover(t)
	e := newEnv(t)
	e.claimWithScript("data", bigScript)
	srcPods := recordPods(t, src(), e.ns)
	dir := t.TempDir()
	plan := filepath.Join(dir, "plan.yaml")
	body := plantest.Header + fmt.Sprintf("clusters:\n  source: {kubeconfig: %q, context: %q}\n  target: {kubeconfig: %q, context: %q}\n",
		clusters[0].CP.Kubeconfig, clusters[0].CP.ContextName, clusters[1].CP.Kubeconfig, clusters[1].CP.ContextName) +
		fmt.Sprintf("steps:\n  - {id: s, type: kube.copyVolumes, with: {from: source, to: target, namespaces: [%s], %s}}\n", e.ns, e.with(true))
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
	start = time.Now()
	if r := plantest.RunBinary(t, bin, dir, plantest.RunOptions{}, "resume", "r", "--break-lock"); r.Code != 0 {
		t.Fatalf("resume exited %d\n%s", r.Code, r)
	}
	t.Logf("resumed in %s", time.Since(start).Round(time.Millisecond))
	if n := len(srcPods.get("planrun-backup-data-")); n != 1 {
		t.Errorf("backup pods: %d, want the one started before the kill", n)
	}
	sameTree(t, volumeDir(t, clusters[0], e.ns, "data"), volumeDir(t, clusters[1], e.ns, "data"))
	e.nothingLeft()
}

// TestE2EDeletedMoverPod: the backup pod is deleted mid-copy; the step makes it again, the
// mover resumes, and the copy is equal to the source.
func TestE2EDeletedMoverPod(t *testing.T) {
	needMover(t)
	e := newEnv(t)
	e.claimWithScript("data", bigScript)
	srcPods := recordPods(t, src(), e.ns)
	var once sync.Once
	o := apply(t, load(t, e.copyStepReal("")), nil, "r", false, func(ev engine.Event) bool {
		if ev.Type == engine.EventStepProgress && ev.StepID == "s" && ev.Progress.Bytes >= 16<<20 {
			if pods := srcPods.get("planrun-backup-data-"); len(pods) == 1 {
				once.Do(func() {
					go src().CoreV1().Pods(e.ns).Delete(ctx(), pods[0].Name, metav1.DeleteOptions{})
				})
			}
		}
		return false
	})
	out := o.outputs(t)
	t.Logf("%s; warnings %q", out["summary"], o.warnings)
	if n := len(srcPods.get("planrun-backup-data-")); n != 2 {
		t.Errorf("backup pods: %d, want 2", n)
	}
	sameTree(t, volumeDir(t, clusters[0], e.ns, "data"), volumeDir(t, clusters[1], e.ns, "data"))
	e.nothingLeft()
}

// copyStepReal is copyStep with the real mover.
func (e *env) copyStepReal(extra string) string {
	return clustersHeader + fmt.Sprintf("steps:\n  - {id: s, type: kube.copyVolumes, with: {from: source, to: target, namespaces: [%s], %s%s}}\n",
		e.ns, e.with(true), extra)
}

// TestRealImage: the mover pods run the planrun image as the step makes them (its entrypoint,
// as root with a read-only root file system). While the image has no mover, planrun says so and
// the step fails with that line, naming the pod; once it has one, the tests above cover it.
func TestRealImage(t *testing.T) {
	if hasMover(t) {
		t.Skip("the image has the mover: the end-to-end tests run it")
	}
	e := newEnv(t)
	e.boundClaim(src(), e.ns, "data", "local")
	run := plantestApply(t, e.copyStepReal(""), plantest.Options{})
	name := ObjectName("planrun-backup-", "data", "run", "s", e.ns, "data")
	plantest.WantError(t, run.Err, fmt.Sprintf(`claim %s/data: mover pod %s/%s on cluster source failed: exited with status 2: planrun: unknown command "mover" (run planrun help) (log: `, e.ns, e.ns, name))
	e.nothingLeft()
}
