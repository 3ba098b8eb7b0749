package kubevolumes_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/images"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/steps/kubevolumes"
)

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

// The regular files of treeScript (each name of the hard link counted, as the mover counts
// them) and their size.
const (
	treeFiles = 6
	treeBytes = 5 + 5 + 3145728 + 6 + 1 + 10485763
)

// TestCopyStageThenFinal copies two claims with the real mover, as CAM's stage and final
// migrations do: a stage copy while the app runs (one claim in use by the app's pod, the other
// holding a fifo the mover skips with a warning), changes on the source, the final copy after
// the app stopped (only what changed is uploaded, deletions mirrored, every file verified), then
// kube.verifyVolumes, which fails naming a file damaged on the target. Around the mover it checks
// what the step did: the mover pods' specs (the planrun image's entrypoint, read-only source,
// root but not privileged, the Secret with the credentials and the password, on the node of the
// pod that uses a claim) and arguments, progress and warnings, the target claims it created from
// the source's spec (the final copy creates none), the outputs, the logs it kept, and that
// nothing is left.
func TestCopyStageThenFinal(t *testing.T) {
	e := newEnv(t)
	start := time.Now()
	e.claimWithScript("data", treeScript, map[string]string{"app": "shop"})
	e.claimWithScript("logs", "printf 1234567890 > /data/log.txt && mkfifo /data/pipe", nil)
	app := e.podUsing(src(), e.ns, "app-0", "data", "sleep 3600")
	waitPod(t, src(), e.ns, app, corev1.PodRunning)
	if _, err := src().CoreV1().Secrets(e.ns).Create(ctx(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pw"}, StringData: map[string]string{"password": "s3cr3t"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	password := fmt.Sprintf(", passwordFrom: {cluster: source, namespace: %s, name: pw, key: password}", e.ns)
	srcData, srcLogs := volumeDir(t, clusters[0], e.ns, "data"), volumeDir(t, clusters[0], e.ns, "logs")
	t.Logf("set up in %s", time.Since(start).Round(time.Millisecond))
	srcPods, dstPods := recordPods(t, src(), e.ns), recordPods(t, dst(), e.ns)
	uid := string(mustNS(t, "kube-system").UID)

	// The stage copy, while the app runs.
	start = time.Now()
	stage := apply(t, load(t, e.copyStep(", stage: true"+password)), nil, "stage", false, nil)
	out := stage.outputs(t)
	t.Logf("stage: %s in %s", out["summary"], time.Since(start).Round(time.Millisecond))
	dstData, dstLogs := volumeDir(t, clusters[1], e.ns, "data"), volumeDir(t, clusters[1], e.ns, "logs")
	sameTree(t, srcData, dstData)
	if got := readFile(t, filepath.Join(dstLogs, "log.txt")); got != "1234567890" {
		t.Errorf("logs/log.txt on the target: %q", got)
	}
	if _, err := os.Lstat(filepath.Join(dstLogs, "pipe")); !os.IsNotExist(err) {
		t.Errorf("the fifo was copied: %v", err)
	}

	// Outputs: per volume, totals, snapshots by target claim, the claims created.
	vols, _ := out["volumes"].([]any)
	if len(vols) != 2 {
		t.Fatalf("volumes %v", out["volumes"])
	}
	data, logsVol := vols[0].(map[string]any), vols[1].(map[string]any)
	if data["claim"] != "data" || data["targetClaim"] != "data" || data["targetNamespace"] != e.ns || plantest.Num(t, data, "files") != treeFiles ||
		plantest.Num(t, data, "bytes") != treeBytes || plantest.Num(t, data, "warnings") != 0 || data["createdClaim"] != true || data["verified"] != false {
		t.Errorf("volume data: %v", data)
	}
	if logsVol["claim"] != "logs" || plantest.Num(t, logsVol, "files") != 1 || plantest.Num(t, logsVol, "bytes") != 10 || plantest.Num(t, logsVol, "warnings") != 1 {
		t.Errorf("volume logs: %v", logsVol)
	}
	snap, _ := data["snapshot"].(string)
	snaps, _ := out["snapshots"].(map[string]any)
	if snap == "" || len(snaps) != 2 || snaps[e.ns+"/data"] != snap || snaps[e.ns+"/logs"] != logsVol["snapshot"] {
		t.Errorf("snapshots %v, volumes' %q and %q", snaps, snap, logsVol["snapshot"])
	}
	if got := fmt.Sprint(out["createdClaims"]); got != fmt.Sprintf("[%s/data %s/logs]", e.ns, e.ns) {
		t.Errorf("createdClaims %s", got)
	}
	firstUpload := plantest.Num(t, out, "uploadedBytes")
	if plantest.Num(t, out, "files") != treeFiles+1 || plantest.Num(t, out, "bytes") != treeBytes+10 || firstUpload < 3<<20 || plantest.Num(t, out, "writtenBytes") < 3<<20 {
		t.Errorf("totals %v (the first copy uploads and writes at least the random file)", out)
	}
	if s, _ := out["summary"].(string); !strings.HasPrefix(s, "2 volumes: 13 MiB in 7 files; ") || !strings.HasSuffix(s, " written; 1 warning") {
		t.Errorf("summary %q", s)
	}
	// Progress ends at the totals; the mover's warning was passed on.
	if o := stage.last; o.Done != treeFiles+1 || o.Total != treeFiles+1 || o.Bytes != treeBytes+10 || o.TotalBytes != treeBytes+10 || o.Unit != "files" {
		t.Errorf("last progress %+v (%d reports)", o, stage.reports)
	}
	if w := "claim " + e.ns + "/logs (backup): pipe: fifo (named pipe): not copied"; !slices.Contains(stage.warnings, w) {
		t.Errorf("warnings %q lack %q", stage.warnings, w)
	}

	// The target claims: made from the source's spec, with the step's annotations.
	for _, name := range []string{"data", "logs"} {
		pvc, err := dst().CoreV1().PersistentVolumeClaims(e.ns).Get(ctx(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if *pvc.Spec.StorageClassName != controlplane.LocalStorageClass || pvc.Spec.Resources.Requests.Storage().Cmp(resource.MustParse("1Gi")) != 0 ||
			pvc.Annotations["planrun.dev/copied-from"] != "source/"+e.ns+"/"+name || pvc.Annotations["planrun.dev/run"] != "stage" {
			t.Errorf("target claim %s: %+v %v", name, pvc.Spec, pvc.Annotations)
		}
		if name == "data" && pvc.Labels["app"] != "shop" {
			t.Errorf("target claim data labels %v", pvc.Labels)
		}
	}

	// The pods.
	backups := srcPods.get("planrun-backup-data-")
	if len(backups) != 1 {
		t.Fatalf("backup pods of data: %d", len(backups))
	}
	b := backups[0]
	spec := b.Spec
	ctr := spec.Containers[0]
	if ctr.Image != images.PlanrunImage || len(ctr.Command) != 0 || ctr.ImagePullPolicy != corev1.PullIfNotPresent || spec.RestartPolicy != corev1.RestartPolicyNever || !spec.HostNetwork {
		t.Errorf("backup pod: image %s %s, command %q, restart %s, hostNetwork %v", ctr.Image, ctr.ImagePullPolicy, ctr.Command, spec.RestartPolicy, spec.HostNetwork)
	}
	if want := []string{"mover", "backup", "--dir", "/data", "--repository", e.repo, "--source", uid + "/" + e.ns + "/data", "--stage", "--handoff", b.Name, "--workdir", "/work", "--credentials-dir", "/credentials"}; !slices.Equal(ctr.Args, want) {
		t.Errorf("backup pod args %q, want %q", ctr.Args, want)
	}
	if *spec.SecurityContext.RunAsUser != 0 || *ctr.SecurityContext.Privileged || *ctr.SecurityContext.AllowPrivilegeEscalation || !*ctr.SecurityContext.ReadOnlyRootFilesystem ||
		fmt.Sprint(ctr.SecurityContext.Capabilities.Drop) != "[ALL]" || fmt.Sprint(ctr.SecurityContext.Capabilities.Add) != "[CHOWN DAC_OVERRIDE FOWNER FSETID]" {
		t.Errorf("backup pod security: %+v %+v", spec.SecurityContext, ctr.SecurityContext)
	}
	if v := claimVolume(spec); v == nil || v.PersistentVolumeClaim.ClaimName != "data" || !v.PersistentVolumeClaim.ReadOnly || !ctr.VolumeMounts[0].ReadOnly {
		t.Errorf("backup pod's claim: %+v mounts %+v", v, ctr.VolumeMounts)
	}
	// The claim in use is copied from its user's node.
	if spec.Affinity == nil || fmt.Sprint(spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchFields) != "[{metadata.name In [localhost]}]" {
		t.Errorf("backup pod of a claim in use: affinity %+v", spec.Affinity)
	}
	if b.Labels[kubevolumes.StepLabel] != kubevolumes.StepHash("stage", "s") || b.Labels[kubevolumes.RoleLabel] != "backup" || b.Annotations["planrun.dev/claim"] != e.ns+"/data" {
		t.Errorf("backup pod labels %v annotations %v", b.Labels, b.Annotations)
	}
	if b.Name != kubevolumes.ObjectName("planrun-backup-", "data", "stage", "s", e.ns, "data") {
		t.Errorf("backup pod name %s", b.Name)
	}
	var pwEnv bool
	for _, env := range ctr.Env {
		pwEnv = pwEnv || env.Name == "PLANRUN_MOVER_PASSWORD" && env.ValueFrom != nil && env.ValueFrom.SecretKeyRef.Key == "planrun-mover-password"
	}
	if !pwEnv {
		t.Errorf("backup pod env %+v: no password from its Secret", ctr.Env)
	}
	if logsPods := srcPods.get("planrun-backup-logs-"); len(logsPods) != 1 || logsPods[0].Spec.Affinity != nil {
		t.Errorf("backup pod of an unused claim is pinned: %+v", logsPods)
	}
	restores := dstPods.get("planrun-restore-data-")
	if len(restores) != 1 || claimVolume(restores[0].Spec).PersistentVolumeClaim.ReadOnly || restores[0].Spec.Containers[0].VolumeMounts[0].ReadOnly {
		t.Fatalf("restore pods of data: %+v", restores)
	}
	// The restore pod starts with the backup and waits for the snapshot it hands off, at most
	// until the claim's deadline.
	args := slices.Clone(restores[0].Spec.Containers[0].Args)
	if i := slices.Index(args, "--wait"); i >= 0 && i+1 < len(args) {
		if d, err := time.ParseDuration(args[i+1]); err != nil || d <= 0 || d > 12*time.Hour {
			t.Errorf("restore pod --wait %q: want a duration up to the claim's timeout", args[i+1])
		}
		args[i+1] = "DEADLINE"
	}
	if want := []string{"mover", "restore", "--dir", "/data", "--repository", e.repo, "--source", uid + "/" + e.ns + "/data", "--handoff", b.Name, "--wait", "DEADLINE", "--workdir", "/work", "--credentials-dir", "/credentials"}; !slices.Equal(args, want) {
		t.Errorf("restore pod args %q, want %q", restores[0].Spec.Containers[0].Args, want)
	}
	if restores[0].CreationTimestamp.After(b.CreationTimestamp.Time) {
		t.Errorf("restore pod made at %s, after the backup pod (%s): want it made first, to wait", restores[0].CreationTimestamp, b.CreationTimestamp)
	}

	// The movers' logs, kept in the step's folder: each ends with its result.
	kept := logs(t, stage.store, "stage")
	backupLog := kept["source-"+e.ns+"-"+b.Name+"-"+string(b.UID)[:8]+".log"]
	if !strings.Contains(backupLog, `{"event":"result","phase":"backup","snapshot":"`+snap+`"`) {
		t.Errorf("backup log:\n%s\nwant its result (kept: %v)", backupLog, keys(kept))
	}
	restoreLog := kept["target-"+e.ns+"-"+restores[0].Name+"-"+string(restores[0].UID)[:8]+".log"]
	if !strings.Contains(restoreLog, `{"event":"result","phase":"restore","snapshot":"`+snap+`"`) {
		t.Errorf("restore log:\n%s\nwant its result", restoreLog)
	}
	e.nothingLeft()
	if pod, err := src().CoreV1().Pods(e.ns).Get(ctx(), app, metav1.GetOptions{}); err != nil || pod.Status.Phase != corev1.PodRunning {
		t.Errorf("the app after the stage copy: %v", err)
	}

	// The app changes files, then stops.
	for _, f := range []string{filepath.Join(srcData, "dir/sub/owned"), filepath.Join(srcLogs, "pipe")} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeFile(srcData, "new.txt", "new"); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(srcData, "dir/hello.txt", "HELLO, changed"); err != nil {
		t.Fatal(err)
	}
	if err := src().CoreV1().Pods(e.ns).Delete(ctx(), app, metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	pollGone(t, "the app", func() bool {
		_, err := src().CoreV1().Pods(e.ns).Get(ctx(), app, metav1.GetOptions{})
		return err != nil
	})

	// The final copy, verified, into the claims the stage created, then kube.verifyVolumes.
	start = time.Now()
	check := fmt.Sprintf("  - {id: check, type: kube.verifyVolumes, with: {cluster: target, snapshots: \"${{ steps.s.outputs.snapshots }}\", %s%s}}\n", e.with(), password)
	final := apply(t, load(t, e.copyStep(", verify: true"+password)+check), nil, "final", false, nil)
	out = final.outputs(t)
	verified := final.j.Step("check").Outputs
	t.Logf("final: %s in %s; verify: %s", out["summary"], time.Since(start).Round(time.Millisecond), verified["summary"])
	sameTree(t, srcData, dstData)
	sameTree(t, srcLogs, dstLogs)
	vol := out["volumes"].([]any)[0].(map[string]any)
	if vol["verified"] != true || plantest.Num(t, vol, "deleted") < 1 || vol["createdClaim"] != false || fmt.Sprint(out["createdClaims"]) != "[]" {
		t.Errorf("final copy: %v", vol)
	}
	if up := plantest.Num(t, out, "uploadedBytes"); up >= firstUpload/2 {
		t.Errorf("the final copy uploaded %d bytes, the stage %d: not incremental", up, firstUpload)
	}
	finalFiles, finalBytes := int64(treeFiles+1), int64(treeBytes-6+3+2*9+10) // owned gone, new.txt, hello.txt (and its hard link) longer
	if s, _ := out["summary"].(string); plantest.Num(t, out, "files") != finalFiles || plantest.Num(t, out, "bytes") != finalBytes || !strings.HasSuffix(s, " written; verified") {
		t.Errorf("final copy: %v", out)
	}
	if finalBackup := srcPods.get("planrun-backup-data-")[1]; slices.Contains(finalBackup.Spec.Containers[0].Args, "--stage") {
		t.Errorf("final backup args %q", finalBackup.Spec.Containers[0].Args)
	}
	if finalRestore := dstPods.get("planrun-restore-data-")[1]; !slices.Contains(finalRestore.Spec.Containers[0].Args, "--verify") {
		t.Errorf("final restore args %q", finalRestore.Spec.Containers[0].Args)
	}
	if plantest.Num(t, verified, "files") != finalFiles || plantest.Num(t, verified, "bytes") != finalBytes ||
		verified["summary"] != fmt.Sprintf("2 volumes verified: %s in %d files", kubevolumes.FormatBytes(finalBytes), finalFiles) {
		t.Errorf("verify outputs %v", verified)
	}
	if v := dstPods.get("planrun-verify-data-"); len(v) != 1 || !claimVolume(v[0].Spec).PersistentVolumeClaim.ReadOnly || v[0].Labels[kubevolumes.RoleLabel] != "verify" {
		t.Errorf("verify pods of data: %+v", v)
	}

	// A file damaged on the target: verify names it.
	if err := writeFile(dstData, "new.txt", "NEW"); err != nil {
		t.Fatal(err)
	}
	snap = out["snapshots"].(map[string]any)[e.ns+"/data"].(string)
	run := plantestApply(t, clustersHeader+fmt.Sprintf("steps:\n  - {id: s, type: kube.verifyVolumes, with: {cluster: target, snapshots: {%s/data: %s}, %s%s}}\n", e.ns, snap, e.with(), password), plantest.Options{})
	plantest.WantError(t, run.Err, fmt.Sprintf("claim %s/data: mover pod %s/%s on cluster target failed: ", e.ns, e.ns, kubevolumes.ObjectName("planrun-verify-", "data", "run", "s", e.ns, "data")), "new.txt (mtime ", "; sha256 differs)")
	t.Logf("verify of a damaged copy: %v", run.Err)
	e.nothingLeft()
}

// claimVolume is the claim a pod mounts, nil if none.
func claimVolume(spec corev1.PodSpec) *corev1.Volume {
	for i, v := range spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			return &spec.Volumes[i]
		}
	}
	return nil
}

func mustNS(t *testing.T, name string) *corev1.Namespace {
	t.Helper()
	ns, err := src().CoreV1().Namespaces().Get(ctx(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestDryRun says what would be copied and creates nothing.
func TestDryRun(t *testing.T) {
	e := newEnv(t)
	e.boundClaim(src(), e.ns, "data", controlplane.LocalStorageClass)
	e.boundClaim(src(), e.ns, "cache", controlplane.LocalStorageClass)
	e.boundClaim(dst(), e.ns, "cache", controlplane.LocalStorageClass)
	run := plantestApply(t, e.copyStep(""), plantest.Options{DryRun: true})
	if run.Err != nil {
		t.Fatal(run.Err)
	}
	out := run.Outputs(t, "s")
	if out["dryRun"] != true || fmt.Sprint(out["wouldCreateClaims"]) != "["+e.ns+"/data]" ||
		out["summary"] != "would copy 2 volumes (200 MiB of claims) from cluster source to target; would create 1 claim" {
		t.Errorf("dry run outputs %v", out)
	}
	vols := out["volumes"].([]any)
	if len(vols) != 2 || vols[0].(map[string]any)["claim"] != "cache" || vols[0].(map[string]any)["createClaim"] != false ||
		vols[1].(map[string]any)["size"] != "100Mi" || vols[1].(map[string]any)["storageClass"] != "local" {
		t.Errorf("dry run volumes %v", vols)
	}
	e.nothingLeft()
	if got := claimNames(t, dst(), e.ns); fmt.Sprint(got) != "[cache]" {
		t.Errorf("claims on the target after a dry run: %v", got)
	}
}

// plantestApply runs a plan body on the test's clusters.
func plantestApply(t *testing.T, body string, opts plantest.Options) *plantest.Run {
	t.Helper()
	return plantest.RunPlan(t, load(t, body), opts)
}

// TestRollback: when the run rolls back, the target claims the step created are deleted, a
// target claim it did not create stays (with what the copy wrote into it), and the source claims
// are untouched.
func TestRollback(t *testing.T) {
	e := newEnv(t)
	for _, name := range []string{"data", "kept"} {
		if err := writeFile(e.boundClaim(src(), e.ns, name, controlplane.LocalStorageClass), name+".txt", name); err != nil {
			t.Fatal(err)
		}
	}
	kept := e.boundClaim(dst(), e.ns, "kept", controlplane.LocalStorageClass)
	body := e.copyStep("") + "  - {id: boom, type: assert, with: {that: 'false'}}\n"
	start := time.Now()
	o := apply(t, load(t, body), nil, "r", false, nil)
	t.Logf("copied and rolled back in %s", time.Since(start).Round(time.Millisecond))
	if o.err == nil || !strings.Contains(o.err.Error(), "rolled back") {
		t.Fatalf("run: %v", o.err)
	}
	if rec := o.j.Step("s"); rec.Status != engine.StepRolledBack || fmt.Sprint(rec.Outputs["createdClaims"]) != "["+e.ns+"/data]" ||
		plantest.Num(t, rec.Outputs, "files") != 2 {
		t.Fatalf("step s: %s %v", rec.Status, rec.Outputs)
	}
	start = time.Now()
	kubeWaitGone(t, e.ns, "data")
	t.Logf("the target claim data gone after %s", time.Since(start).Round(time.Millisecond))
	if got := claimNames(t, dst(), e.ns); fmt.Sprint(got) != "[kept]" {
		t.Errorf("target claims after the rollback: %v", got)
	}
	if got := readFile(t, filepath.Join(kept, "kept.txt")); got != "kept" {
		t.Errorf("kept.txt in the kept target claim: %q", got)
	}
	if got := claimNames(t, src(), e.ns); fmt.Sprint(got) != "[data kept]" {
		t.Errorf("source claims after the rollback: %v", got)
	}
	e.nothingLeft()
}

// kubeWaitGone waits until a target claim is gone (its protection finalizer lets go once no
// pod uses it).
func kubeWaitGone(t *testing.T, ns, name string) {
	t.Helper()
	pollGone(t, "claim "+ns+"/"+name+" on the target", func() bool {
		for _, n := range claimNames(t, dst(), ns) {
			if n == name {
				return false
			}
		}
		return true
	})
}
