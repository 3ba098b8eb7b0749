package plans_test

// The CAM plan's volume data end to end (issue 13): an application's tree copied between two
// clusters with nodes and local volumes by the real mover (the planrun image built from this
// checkout) through a real S3 server, in two stages while the application runs and a final
// migrate after its quiesce, verified; then the application starts on the target on its data.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/fstree"
	"planrun.dev/planrun/internal/images"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/s3test"
)

const (
	camDataNS       = "shop"
	camDataTargetNS = "shop-migrated"
	camDataApp      = "db"
	camDataClaim    = "data-db-0" // the StatefulSet's claim of its pod db-0
	camDataPod      = "db-0"
)

// camDataScript is the application: on a claim without its marker it writes the tree (thousands
// of small files in nested folders, random files, a 40 MiB one, a sparse file, symlinks, hard
// links, modes, owners, old mtimes, an empty folder), then the marker; on every start it prints
// the sha256 of every file between SUMS-BEGIN and SUMS-END (the test compares what the target's
// pod prints with the source's data), then runs until stopped.
const camDataScript = `set -e
cd /data
if [ ! -e .written ]; then
  for a in 0 1 2 3 4 5 6 7 8 9; do
    for b in 0 1 2 3 4 5 6 7 8 9; do
      mkdir -p tree/$a/$b
      for c in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29; do
        echo "file $a/$b/$c of the application's tree" > tree/$a/$b/f$c.txt
      done
      head -c 65536 /dev/urandom > tree/$a/$b/blob.bin
    done
  done
  head -c 41943040 /dev/urandom > big.bin
  chmod 0600 big.bin
  printf start > sparse.bin
  printf end | dd of=sparse.bin bs=1 seek=67108864 conv=notrunc 2>/dev/null
  truncate -s 134217728 sparse-hole.bin
  ln -s tree/0/0/f0.txt link-file
  ln -s tree/1 link-dir
  ln -s ../missing/target tree/dangling
  ln tree/2/2/f2.txt hardlink-1
  ln tree/2/2/f2.txt tree/3/hardlink-2
  mkdir -p owned/sub empty
  printf secret > owned/sub/key
  chown -R 1234:5678 owned
  chown 1000:2000 tree/4/4/f4.txt
  chmod 0640 owned/sub/key
  chmod 0750 tree/4
  printf x > setuid
  chmod 4755 setuid
  chmod 0700 empty
  touch -d "2020-01-02 03:04:05" tree/5/5/f5.txt big.bin
  touch .written
fi
echo SUMS-BEGIN
find . -type f | sort | xargs sha256sum
echo SUMS-END
trap 'exit 0' TERM
while true; do sleep 1; done
`

// camDataChange1 changes about 1% of the tree while the application runs: 30 files rewritten,
// 30 deleted, 30 added, one random blob rewritten.
const camDataChange1 = `set -e
cd /data
for a in 0 1 2 3 4 5 6 7 8 9; do
  for c in 0 1 2; do
    echo "rewritten $a/$c" > tree/$a/0/f$c.txt
    rm tree/$a/9/f$c.txt
  done
  mkdir -p tree/new/$a
  for c in 0 1 2; do echo "added $a/$c" > tree/new/$a/n$c.txt; done
done
head -c 65536 /dev/urandom > tree/7/7/blob.bin
`

// camDataChange2 is what the application changes after the last stage: the final copy takes it.
const camDataChange2 = `set -e
cd /data
echo "written after the stages" > after-stages.txt
rm tree/8/8/f8.txt
rm -r tree/new/9
`

// TestCAMMigratesVolumeData: a StatefulSet's claim (a local volume) with a tree of its
// application's files: stage 1 copies it while the application runs; the application changes
// about 1% of it; stage 2 moves only that change (the deletions mirrored); a dry run of the
// final migrate says what it would copy and changes nothing; the final migrate quiesces the
// source, copies the last change, verifies every file on the target, then restores the
// StatefulSet, whose pod starts on the target on the copied data and reads back every file's
// sha256, as the source had them. The trees compare equal on modes, owners, mtimes, symlinks,
// hard links and sparseness.
func TestCAMMigratesVolumeData(t *testing.T) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	built, err := images.Build(ctx, images.Planrun)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	cps := controlplane.StartManyForTest(t, 2, controlplane.WithNode(built[images.Planrun]), controlplane.WithLocalVolumes(2, "1Gi"))
	e := &camEnv{dir: t.TempDir(), src: cps[0], dst: cps[1]}
	kc, err := os.ReadFile(e.dst.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.dir, "target.kubeconfig"), kc, 0o600); err != nil {
		t.Fatal(err)
	}
	e.scs, e.dcs = camClient(e.src), camClient(e.dst)
	e.hooks = &camHookRecorder{clusters: map[string]kubernetes.Interface{"source": e.scs, "target": e.dcs}}
	t.Logf("image and clusters in %s", time.Since(start).Round(time.Millisecond))

	// The replication repository: an S3 bucket, its keys in a Secret on the source as MTC keeps
	// them. The mover pods run on their node's network: the S3 server listens on loopback.
	repo := s3test.StartForTest(t)
	if err := repo.CreateBucket("replication"); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"openshift-migration", camDataNS} {
		if _, err := e.scs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.scs.CoreV1().Secrets("openshift-migration").Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "migstorage-creds"},
		StringData: map[string]string{"aws-access-key-id": repo.AccessKey, "aws-secret-access-key": repo.SecretKey}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer plantest.NoSecrets(t, e.dir, "", repo.SecretKey)
	args := func(runID string, extra ...string) []string {
		plan, _ := filepath.Abs(camPlan)
		return append([]string{"apply", plan, "--kubeconfig", e.src.Kubeconfig, "--run-id", runID,
			"--set", "namespaces=[" + camDataNS + "]", "--set", "namespaceMapping={" + camDataNS + ": " + camDataTargetNS + "}",
			"--set", "pvAction=copy", "--set", "repository=" + repo.URL("replication", "shop"),
			"--set", "repositoryCredentials={namespace: openshift-migration, name: migstorage-creds}",
			"--set", "moverHostNetwork=true", "--set", "moverImage=" + images.PlanrunImage}, extra...)
	}

	// The application writes its tree, then runs on.
	camDataStatefulSet(t, e.scs)
	sums := camDataWaitSums(t, e.scs, camDataNS)
	srcDir := camDataVolumeDir(t, e.src, e.scs, camDataNS, camDataClaim)
	appUID := camDataPodUID(t, e.scs, camDataNS)
	if diff := camDataSumsDiff(camDataHostSums(t, srcDir), sums); len(diff) > 0 {
		t.Fatalf("the application's sums differ from the files on the host:\n%s", strings.Join(diff[:min(len(diff), 20)], "\n"))
	}
	srcTree := camDataTree(t, srcDir)
	var bytes int64
	for _, n := range srcTree {
		bytes += n.Size
	}
	t.Logf("source: %d entries, %d files (%d MiB apparent), written in %s since the start", len(srcTree), len(sums), bytes>>20, time.Since(start).Round(time.Millisecond))

	// Stage 1: the claim and its data on the target, the application still running.
	at := time.Now()
	stage1 := camDataRun(t, e, args("stage-1", "--set", "stage=true"))
	t.Logf("stage 1 in %s: %s", time.Since(at).Round(time.Millisecond), stage1["summary"])
	dstDir := camDataVolumeDir(t, e.dst, e.dcs, camDataTargetNS, camDataClaim)
	camDataSameTree(t, "stage 1", srcDir, dstDir)
	camDataStillRuns(t, e.scs, appUID, "stage 1")
	up1 := plantest.Num(t, stage1, "uploadedBytes")
	if up1 < 40<<20 || plantest.Num(t, stage1, "writtenBytes") < 40<<20 {
		t.Errorf("stage 1 uploaded %d and wrote %d bytes, less than the application's random files", up1, plantest.Num(t, stage1, "writtenBytes"))
	}

	// The application changes about 1% of its tree; stage 2 moves only that.
	camDataChange(t, e.scs, "change-1", camDataChange1)
	at = time.Now()
	stage2 := camDataRun(t, e, args("stage-2", "--set", "stage=true"))
	t.Logf("stage 2 in %s: %s", time.Since(at).Round(time.Millisecond), stage2["summary"])
	camDataSameTree(t, "stage 2", srcDir, dstDir)
	camDataStillRuns(t, e.scs, appUID, "stage 2")
	if up2 := plantest.Num(t, stage2, "uploadedBytes"); up2 > up1/20 {
		t.Errorf("stage 2 uploaded %d bytes, stage 1 %d: not incremental", up2, up1)
	}
	if w2 := plantest.Num(t, stage2, "writtenBytes"); w2 > up1/20 {
		t.Errorf("stage 2 wrote %d bytes on the target: not incremental", w2)
	}
	if vol := camDataVolume(t, stage2); plantest.Num(t, vol, "deleted") < 30 {
		t.Errorf("stage 2 deleted %v files on the target, want the 30 the application deleted: %v", vol["deleted"], vol)
	}

	// The last change before the final migrate, then what the target's application must read.
	camDataChange(t, e.scs, "change-2", camDataChange2)
	finalSums := camDataHostSums(t, srcDir)

	// A dry run of the final migrate says what copy-volumes would copy and changes nothing.
	t.Run("dry run", func(t *testing.T) { camDataDryRun(t, e, args("dry", "--dry-run"), dstDir, appUID) })

	// The final migrate: the application stopped before the copy, the last change copied and
	// verified, then the StatefulSet restored.
	var atCopy []string
	e.watch = func(ev engine.Event) {
		if ev.Type == engine.EventStepStarted && ev.StepID == "copy-volumes" {
			atCopy = append(camRunningPods(t, e.scs, camDataNS), "listed")
		}
	}
	at = time.Now()
	final := camDataRun(t, e, args("final"))
	e.watch = nil
	t.Logf("final migrate in %s: %s", time.Since(at).Round(time.Millisecond), final["summary"])
	if !slices.Equal(atCopy, []string{"listed"}) {
		t.Errorf("source pods when copy-volumes started: %v; want none (quiesced)", atCopy)
	}
	if vol := camDataVolume(t, final); vol["verified"] != true || plantest.Num(t, vol, "deleted") < 2 || !strings.Contains(fmt.Sprint(final["summary"]), "verified") {
		t.Errorf("final copy: %v, summary %q; want verified, the 2 deletions", vol, final["summary"])
	}
	if up := plantest.Num(t, final, "uploadedBytes"); up > up1/20 {
		t.Errorf("the final copy uploaded %d bytes, stage 1 %d: not incremental", up, up1)
	}
	j := loadJournal(t, e.dir, "final")
	order := []string{"quiesce", "retain-source-volumes", "restore-claims", "copy-volumes", "restore"}
	var finished []string
	for _, rec := range j.Steps {
		if slices.Contains(order, rec.ID) && rec.Status == engine.StepSucceeded {
			finished = append(finished, rec.ID)
		}
	}
	if !slices.Equal(finished, order) {
		t.Errorf("final migrate: steps succeeded %v, want %v", finished, order)
	}

	// The application runs on the target on its data, and reads every file as the source had it.
	targetSums := camDataWaitSums(t, e.dcs, camDataTargetNS)
	if diff := camDataSumsDiff(finalSums, targetSums); len(diff) > 0 {
		t.Errorf("the application on the target reads %d files differently from the source:\n%s", len(diff), strings.Join(diff[:min(len(diff), 20)], "\n"))
	}
	if _, ok := targetSums["./after-stages.txt"]; !ok || len(targetSums) != len(finalSums) {
		t.Errorf("the target's application read %d files (after-stages.txt: %v), the source had %d", len(targetSums), ok, len(finalSums))
	}
	camDataSameTree(t, "final", srcDir, dstDir)
	if pods := camRunningPods(t, e.scs, camDataNS); len(pods) != 0 {
		t.Errorf("source pods after the final migrate: %v; want none", pods)
	}
	t.Logf("moved: stage 1 uploaded %d B wrote %d B; stage 2 uploaded %d B wrote %d B; final uploaded %d B wrote %d B; %d files verified; test %s",
		up1, plantest.Num(t, stage1, "writtenBytes"), plantest.Num(t, stage2, "uploadedBytes"), plantest.Num(t, stage2, "writtenBytes"),
		plantest.Num(t, final, "uploadedBytes"), plantest.Num(t, final, "writtenBytes"), len(targetSums), time.Since(start).Round(time.Second))
}

// camDataRun applies the plan with args and returns copy-volumes' outputs from the run's
// journal (its summary and figures present).
func camDataRun(t *testing.T, e *camEnv, args []string) engine.Outputs {
	t.Helper()
	id := args[slices.Index(args, "--run-id")+1]
	r := e.run(t, nil, false, args...)
	if r.Code != 0 {
		t.Fatalf("%s exited %d\n%s", id, r.Code, r)
	}
	rec := camStep(t, loadJournal(t, e.dir, id), "copy-volumes")
	if rec.Status != engine.StepSucceeded {
		t.Fatalf("%s: copy-volumes %s", id, rec.Status)
	}
	for _, k := range []string{"summary", "files", "bytes", "uploadedBytes", "writtenBytes", "volumes", "snapshots"} {
		if _, ok := rec.Outputs[k]; !ok {
			t.Errorf("%s: copy-volumes outputs have no %s: %v", id, k, rec.Outputs)
		}
	}
	return rec.Outputs
}

// camDataVolume is the one volume of copy-volumes' outputs.
func camDataVolume(t *testing.T, out engine.Outputs) map[string]any {
	t.Helper()
	vols, _ := out["volumes"].([]any)
	if len(vols) != 1 {
		t.Fatalf("copy-volumes outputs volumes %v, want one", out["volumes"])
	}
	v, _ := vols[0].(map[string]any)
	if v["claim"] != camDataClaim || v["targetNamespace"] != camDataTargetNS {
		t.Errorf("copy-volumes copied %v, want %s/%s to %s", v, camDataNS, camDataClaim, camDataTargetNS)
	}
	return v
}

// camDataDryRun: the dry run of the final migrate says which claims copy-volumes would copy and
// how large they are, and changes nothing: the application runs on, the target's data and
// objects stay as they are, no run is recorded.
func camDataDryRun(t *testing.T, e *camEnv, args []string, dstDir string, appUID string) {
	before := camDataTree(t, dstDir)
	r := e.run(t, nil, false, args...)
	if r.Code != 0 {
		t.Fatalf("dry run exited %d\n%s", r.Code, r)
	}
	var out engine.Outputs
	for _, ev := range r.Events {
		if ev.Type == engine.EventStepSucceeded && ev.StepID == "copy-volumes" {
			out = ev.Outputs
		}
	}
	if out == nil {
		t.Fatalf("the dry run did not run copy-volumes\n%s", r)
	}
	t.Logf("dry run: copy-volumes %s; volumes %v", out["summary"], out["volumes"])
	v := camDataVolume(t, out)
	if out["dryRun"] != true || v["size"] == nil || !strings.HasPrefix(fmt.Sprint(out["summary"]), "would copy 1 volume") {
		t.Errorf("dry run: copy-volumes outputs %v; want dryRun, the claim's size, a summary", out)
	}
	camDataStillRuns(t, e.scs, appUID, "the dry run")
	if diff := fstree.Diff(before, camDataTree(t, dstDir)); len(diff) > 0 {
		t.Errorf("the dry run changed the target's volume:\n%s", strings.Join(diff[:min(len(diff), 20)], "\n"))
	}
	if _, err := e.dcs.AppsV1().StatefulSets(camDataTargetNS).Get(t.Context(), camDataApp, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("after the dry run the target has StatefulSet %s (%v)", camDataApp, err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, "runs", "dry")); !os.IsNotExist(err) {
		t.Errorf("the dry run left its run (%v)", err)
	}
}

// camDataStatefulSet creates the application: a StatefulSet of one busybox pod running
// camDataScript on a claim of the local storage class.
func camDataStatefulSet(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	labels := map[string]string{"app": camDataApp}
	one, grace, class := int32(1), int64(5), controlplane.LocalStorageClass
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: camDataApp, Labels: labels},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &one, ServiceName: camDataApp, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				TerminationGracePeriodSeconds: &grace,
				Containers: []corev1.Container{{Name: "app", Image: controlplane.BusyboxImage, ImagePullPolicy: corev1.PullNever,
					Command: []string{"sh", "-c", camDataScript}, VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			}},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}, Spec: corev1.PersistentVolumeClaimSpec{
				StorageClassName: &class, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("500Mi")}},
			}}},
		},
	}
	if _, err := cs.AppsV1().StatefulSets(camDataNS).Create(t.Context(), sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// camDataWaitSums waits until the application's pod in ns has printed the sha256 of its files
// and returns them, path → sum.
func camDataWaitSums(t *testing.T, cs kubernetes.Interface, ns string) map[string]string {
	t.Helper()
	var log string
	poll(t, "pod "+ns+"/"+camDataPod+" to print its files' sums", func() (bool, string, error) {
		p, err := cs.CoreV1().Pods(ns).Get(t.Context(), camDataPod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, "no pod", nil
		} else if err != nil {
			return false, "", err
		}
		if p.Status.Phase == corev1.PodFailed {
			return false, "", fmt.Errorf("pod %s/%s failed: %+v", ns, p.Name, p.Status.ContainerStatuses)
		}
		if p.Status.Phase != corev1.PodRunning {
			return false, string(p.Status.Phase), nil
		}
		b, err := cs.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(t.Context())
		if err != nil {
			return false, err.Error(), nil
		}
		log = string(b)
		return strings.Contains(log, "SUMS-END\n"), fmt.Sprintf("%d bytes of log", len(log)), nil
	})
	_, body, _ := strings.Cut(log, "SUMS-BEGIN\n")
	body, _, _ = strings.Cut(body, "SUMS-END\n")
	sums := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		sum, path, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("pod %s/%s printed %q, not a sha256sum line", ns, camDataPod, sc.Text())
		}
		sums[path] = sum
	}
	if len(sums) < 3000 {
		t.Fatalf("pod %s/%s printed %d sums, want the tree's thousands", ns, camDataPod, len(sums))
	}
	return sums
}

// camDataHostSums computes, from the volume's folder on the host, what the application prints:
// "./path" → sha256 of every regular file.
func camDataHostSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		if _, err := io.Copy(h, f); err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		sums["./"+filepath.ToSlash(rel)] = hex.EncodeToString(h.Sum(nil))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sums
}

// camDataSumsDiff lists the files whose sums differ, or that only one side has.
func camDataSumsDiff(want, got map[string]string) []string {
	var out []string
	for p, w := range want {
		if g, ok := got[p]; !ok {
			out = append(out, p+": missing")
		} else if g != w {
			out = append(out, p+": sha256 "+g+", want "+w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			out = append(out, p+": unexpected")
		}
	}
	slices.Sort(out)
	return out
}

// camDataVolumeDir is the folder on this machine of the local volume bound to claim ns/name.
func camDataVolumeDir(t *testing.T, cp *controlplane.ControlPlane, cs kubernetes.Interface, ns, name string) string {
	t.Helper()
	pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range cp.LocalVolumes {
		if v.Name == pvc.Spec.VolumeName {
			return v.Path
		}
	}
	t.Fatalf("claim %s/%s is bound to %q, not one of the node's local volumes", ns, name, pvc.Spec.VolumeName)
	return ""
}

func camDataTree(t *testing.T, dir string) fstree.Tree {
	t.Helper()
	tree, err := fstree.Snapshot(dir)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// camDataSameTree fails the test with the differences between the source's volume and the
// target's.
func camDataSameTree(t *testing.T, when, srcDir, dstDir string) {
	t.Helper()
	if diff := fstree.Diff(camDataTree(t, srcDir), camDataTree(t, dstDir)); len(diff) > 0 {
		t.Errorf("%s: the target's volume differs from the source's in %d ways:\n%s", when, len(diff), strings.Join(diff[:min(len(diff), 30)], "\n"))
	}
}

// camDataPodUID is the UID of the application's pod on the source.
func camDataPodUID(t *testing.T, cs kubernetes.Interface, ns string) string {
	t.Helper()
	p, err := cs.CoreV1().Pods(ns).Get(t.Context(), camDataPod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return string(p.UID)
}

// camDataStillRuns checks that the application's pod on the source is the one it started with,
// Running, never restarted.
func camDataStillRuns(t *testing.T, cs kubernetes.Interface, uid, after string) {
	t.Helper()
	p, err := cs.CoreV1().Pods(camDataNS).Get(t.Context(), camDataPod, metav1.GetOptions{})
	if err != nil || string(p.UID) != uid || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil ||
		len(p.Status.ContainerStatuses) != 1 || p.Status.ContainerStatuses[0].RestartCount != 0 {
		t.Errorf("after %s: the application's pod on the source is not the one running before (%v)", after, err)
	}
}

// camDataChange runs script in a pod mounting the application's claim beside it (the same node:
// the volume is local) and waits for it to succeed, then deletes it.
func camDataChange(t *testing.T, cs kubernetes.Interface, name, script string) {
	t.Helper()
	never := int64(0)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: &never,
		Containers: []corev1.Container{{Name: "change", Image: controlplane.BusyboxImage, ImagePullPolicy: corev1.PullNever,
			Command: []string{"sh", "-c", script}, VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
		Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: camDataClaim}}}},
	}}
	if _, err := cs.CoreV1().Pods(camDataNS).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "pod "+name+" Succeeded", func() (bool, string, error) {
		p, err := cs.CoreV1().Pods(camDataNS).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		if p.Status.Phase == corev1.PodFailed {
			return false, "", fmt.Errorf("pod %s failed: %+v", name, p.Status.ContainerStatuses)
		}
		return p.Status.Phase == corev1.PodSucceeded, string(p.Status.Phase), nil
	})
	if err := cs.CoreV1().Pods(camDataNS).Delete(t.Context(), name, metav1.DeleteOptions{GracePeriodSeconds: &never}); err != nil {
		t.Fatal(err)
	}
	poll(t, "pod "+name+" gone", func() (bool, string, error) {
		_, err := cs.CoreV1().Pods(camDataNS).Get(t.Context(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), "", nil
	})
}
