package kubevolumes_test

import (
	"fmt"
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
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/steps/kubevolumes"
)

// TestCopyPods copies two claims with the fake mover and checks what the step did around it:
// the mover pods' specs (read-only source, root but not privileged, the Secret with the
// credentials and the password, on the node of the pod that uses a claim), the arguments the
// mover got, progress and warnings, the target claims it created from the source's spec, the
// outputs, the logs it kept, and that nothing is left. A second stage into the claims it
// created creates none.
func TestCopyPods(t *testing.T) {
	defer kubevolumes.SetMoverCommand(fakeMover)()
	e := newEnv(t)
	start := time.Now()
	e.claimWithData(src(), e.ns, "data", map[string]string{"a.txt": "alpha", "dir/b.txt": "bravo!", ".fake-mode": "warn"}, map[string]string{"app": "shop"})
	e.claimWithData(src(), e.ns, "logs", map[string]string{"log.txt": "1234567890"}, nil)
	app := e.podUsing(src(), e.ns, "app-0", "logs", "sleep 3600")
	waitPod(t, src(), e.ns, app, corev1.PodRunning)
	if _, err := src().CoreV1().Secrets(e.ns).Create(ctx(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pw"}, StringData: map[string]string{"password": "s3cr3t"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("set up in %s", time.Since(start).Round(time.Millisecond))
	srcPods, dstPods := recordPods(t, src(), e.ns), recordPods(t, dst(), e.ns)

	start = time.Now()
	p := load(t, e.copyStep(fmt.Sprintf(", stage: true, verify: true, passwordFrom: {cluster: source, namespace: %s, name: pw, key: password}", e.ns)))
	o := apply(t, p, nil, "stage1", false, nil)
	out := o.outputs(t)
	t.Logf("stage copy of 2 claims with the fake mover: %s", time.Since(start).Round(time.Millisecond))
	uid := string(mustNS(t, "kube-system").UID)

	// Outputs: per volume, totals, snapshots by target claim, the claims created.
	vols, _ := out["volumes"].([]any)
	if len(vols) != 2 {
		t.Fatalf("volumes %v", out["volumes"])
	}
	data := vols[0].(map[string]any)
	if data["claim"] != "data" || data["targetClaim"] != "data" || data["targetNamespace"] != e.ns || plantest.Num(t, data, "files") != 3 ||
		plantest.Num(t, data, "bytes") != 5+6+4 || plantest.Num(t, data, "warnings") != 2 || data["createdClaim"] != true || data["verified"] != true {
		t.Errorf("volume data: %v", data)
	}
	snap, _ := data["snapshot"].(string)
	if !strings.HasPrefix(snap, "fake.warn.3.15.") {
		t.Errorf("snapshot %q", snap)
	}
	snaps, _ := out["snapshots"].(map[string]any)
	if len(snaps) != 2 || snaps[e.ns+"/data"] != snap {
		t.Errorf("snapshots %v", snaps)
	}
	if got := fmt.Sprint(out["createdClaims"]); got != fmt.Sprintf("[%s/data %s/logs]", e.ns, e.ns) {
		t.Errorf("createdClaims %s", got)
	}
	if plantest.Num(t, out, "files") != 4 || plantest.Num(t, out, "bytes") != 25 || plantest.Num(t, out, "uploadedBytes") != 7+5 || plantest.Num(t, out, "writtenBytes") != 25 {
		t.Errorf("totals %v", out)
	}
	if s := out["summary"]; s != "2 volumes: 25 B in 4 files; 12 B uploaded, 25 B written; verified; 2 warnings" {
		t.Errorf("summary %q", s)
	}
	// Progress ends at the totals; the mover's warnings were passed on.
	if o.last.Done != 4 || o.last.Total != 4 || o.last.Bytes != 25 || o.last.TotalBytes != 25 || o.last.Unit != "files" {
		t.Errorf("last progress %+v (%d reports)", o.last, o.reports)
	}
	wantWarn := []string{"claim " + e.ns + "/data (backup): a.txt: changed while read", "claim " + e.ns + "/data (backup): b.txt: vanished while read"}
	for _, w := range wantWarn {
		if !slices.Contains(o.warnings, w) {
			t.Errorf("warnings %q lack %q", o.warnings, w)
		}
	}

	// The target claims: made from the source's spec, with the step's annotations; the restore
	// wrote into them.
	for _, name := range []string{"data", "logs"} {
		pvc, err := dst().CoreV1().PersistentVolumeClaims(e.ns).Get(ctx(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if *pvc.Spec.StorageClassName != controlplane.LocalStorageClass || pvc.Spec.Resources.Requests.Storage().Cmp(resource.MustParse("1Gi")) != 0 ||
			pvc.Annotations["planrun.dev/copied-from"] != "source/"+e.ns+"/"+name || pvc.Annotations["planrun.dev/run"] != "stage1" {
			t.Errorf("target claim %s: %+v %v", name, pvc.Spec, pvc.Annotations)
		}
		if name == "data" && pvc.Labels["app"] != "shop" {
			t.Errorf("target claim data labels %v", pvc.Labels)
		}
		if got := readFile(t, filepath.Join(volumeDir(t, clusters[1], e.ns, name), ".restored-from")); got != fmt.Sprint(snaps[e.ns+"/"+name])+"\n" {
			t.Errorf("target claim %s: restored from %q, want %q", name, got, snaps[e.ns+"/"+name])
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
	if ctr.Image != controlplane.BusyboxImage || ctr.ImagePullPolicy != corev1.PullIfNotPresent || spec.RestartPolicy != corev1.RestartPolicyNever || !spec.HostNetwork {
		t.Errorf("backup pod: image %s %s, restart %s, hostNetwork %v", ctr.Image, ctr.ImagePullPolicy, spec.RestartPolicy, spec.HostNetwork)
	}
	if *spec.SecurityContext.RunAsUser != 0 || *ctr.SecurityContext.Privileged || *ctr.SecurityContext.AllowPrivilegeEscalation || !*ctr.SecurityContext.ReadOnlyRootFilesystem ||
		fmt.Sprint(ctr.SecurityContext.Capabilities.Drop) != "[ALL]" || fmt.Sprint(ctr.SecurityContext.Capabilities.Add) != "[CHOWN DAC_OVERRIDE FOWNER FSETID]" {
		t.Errorf("backup pod security: %+v %+v", spec.SecurityContext, ctr.SecurityContext)
	}
	var claimVol *corev1.Volume
	for i, v := range spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			claimVol = &spec.Volumes[i]
		}
	}
	if claimVol == nil || claimVol.PersistentVolumeClaim.ClaimName != "data" || !claimVol.PersistentVolumeClaim.ReadOnly || !ctr.VolumeMounts[0].ReadOnly {
		t.Errorf("backup pod's claim: %+v mounts %+v", claimVol, ctr.VolumeMounts)
	}
	if spec.Affinity != nil {
		t.Errorf("backup pod of an unused claim is pinned: %+v", spec.Affinity)
	}
	if b.Labels[kubevolumes.StepLabel] != kubevolumes.StepHash("stage1", "s") || b.Labels[kubevolumes.RoleLabel] != "backup" || b.Annotations["planrun.dev/claim"] != e.ns+"/data" {
		t.Errorf("backup pod labels %v annotations %v", b.Labels, b.Annotations)
	}
	if b.Name != kubevolumes.ObjectName("planrun-backup-", "data", "stage1", "s", e.ns, "data") {
		t.Errorf("backup pod name %s", b.Name)
	}
	var pwEnv bool
	for _, env := range ctr.Env {
		pwEnv = pwEnv || env.Name == "PLANRUN_MOVER_PASSWORD" && env.ValueFrom != nil && env.ValueFrom.SecretKeyRef.Key == "planrun-mover-password"
	}
	if !pwEnv {
		t.Errorf("backup pod env %+v: no password from its Secret", ctr.Env)
	}
	// The claim in use is copied from its user's node.
	logsPods := srcPods.get("planrun-backup-logs-")
	if len(logsPods) != 1 || logsPods[0].Spec.Affinity == nil ||
		fmt.Sprint(logsPods[0].Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchFields) != "[{metadata.name In [localhost]}]" {
		t.Errorf("backup pod of a claim in use: %+v", logsPods)
	}
	restores := dstPods.get("planrun-restore-data-")
	if len(restores) != 1 || restores[0].Spec.Volumes[0].PersistentVolumeClaim.ReadOnly || restores[0].Spec.Containers[0].VolumeMounts[0].ReadOnly {
		t.Errorf("restore pods of data: %+v", restores)
	}

	// The arguments the mover got, in the logs kept.
	kept := logs(t, o, "stage1")
	backupLog := kept["source-"+e.ns+"-"+b.Name+"-"+string(b.UID)[:8]+".log"]
	wantArgs := fmt.Sprintf("args: mover backup --dir /data --repository %s --source %s/%s/data --stage --workdir /work --credentials-dir /credentials", e.repo, uid, e.ns)
	if !strings.HasPrefix(backupLog, wantArgs+"\n") {
		t.Errorf("backup log:\n%s\nwant it to start with %q (kept: %v)", backupLog, wantArgs, keys(kept))
	}
	restoreLog := kept["target-"+e.ns+"-"+restores[0].Name+"-"+string(restores[0].UID)[:8]+".log"]
	if want := fmt.Sprintf("args: mover restore --dir /data --repository %s --snapshot %s --verify --workdir /work --credentials-dir /credentials", e.repo, snap); !strings.HasPrefix(restoreLog, want+"\n") {
		t.Errorf("restore log:\n%s\nwant it to start with %q", restoreLog, want)
	}
	e.nothingLeft()

	// A second stage into the claims the first one created: none created, the app still runs.
	o2 := apply(t, load(t, e.copyStep(", stage: true")), nil, "stage2", false, nil)
	out2 := o2.outputs(t)
	if fmt.Sprint(out2["createdClaims"]) != "[]" || out2["summary"] != "2 volumes: 25 B in 4 files; 12 B uploaded, 25 B written; 2 warnings" {
		t.Errorf("second stage: %v", out2)
	}
	e.nothingLeft()
	if pod, err := src().CoreV1().Pods(e.ns).Get(ctx(), app, metav1.GetOptions{}); err != nil || pod.Status.Phase != corev1.PodRunning {
		t.Errorf("the app after the copies: %v", err)
	}
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
	defer kubevolumes.SetMoverCommand(fakeMover)()
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
// target claim it did not create stays, and the source claims are untouched.
func TestRollback(t *testing.T) {
	defer kubevolumes.SetMoverCommand(fakeMover)()
	e := newEnv(t)
	e.claimWithData(src(), e.ns, "data", map[string]string{"a": "1"}, nil)
	e.claimWithData(src(), e.ns, "kept", map[string]string{"b": "2"}, nil)
	e.boundClaim(dst(), e.ns, "kept", controlplane.LocalStorageClass)
	body := e.copyStep("") + "  - {id: boom, type: assert, with: {that: 'false'}}\n"
	o := apply(t, load(t, body), nil, "r", false, nil)
	if o.err == nil || !strings.Contains(o.err.Error(), "rolled back") {
		t.Fatalf("run: %v", o.err)
	}
	if rec := o.j.Step("s"); rec.Status != engine.StepRolledBack || fmt.Sprint(rec.Outputs["createdClaims"]) != "["+e.ns+"/data]" {
		t.Fatalf("step s: %s %v", rec.Status, rec.Outputs)
	}
	kubeWaitGone(t, e.ns, "data")
	if got := claimNames(t, dst(), e.ns); fmt.Sprint(got) != "[kept]" {
		t.Errorf("target claims after the rollback: %v", got)
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
