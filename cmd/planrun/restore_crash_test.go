package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
)

// restoreCrashObjects is how many config maps the restore crash test backs up and restores.
const restoreCrashObjects = 3000

// TestRestoreCrashAndResume backs up a namespace of a few thousand config maps owned by a
// Deployment and restores it into another namespace with a planrun that is SIGKILLed right after
// the restore starts, then in the middle of the resumed restore, twice, and resumes once more. Every
// object must then be there exactly once, with the content of the backup and its owner reference
// pointing at the UID of the restored Deployment; the step's outputs must count every object as
// restored by one attempt or the other, and its undo record must list every object it created.
func TestRestoreCrashAndResume(t *testing.T) {
	cp := controlplane.StartForTest(t)
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = -1, 0 // thousands of creates: the server is the limit, not the client
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx := t.Context()

	// The source: one Deployment and the config maps it owns.
	const src, dst, owner = "src", "dst", "owner"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: src}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "crash-restore"}
	dep, err := cs.AppsV1().Deployments(src).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: owner, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}},
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{} // config map name → data
	for i := range restoreCrashObjects {
		want[fmt.Sprintf("cm-%04d", i)] = configMapData(i)
	}
	createConfigMaps(t, cs, src, want, metav1.OwnerReference{
		APIVersion: "apps/v1", Kind: "Deployment", Name: owner, UID: dep.UID, Controller: new(true),
	})

	dir := t.TempDir()
	backupDir := filepath.Join(dir, "backup")
	header := fmt.Sprintf("apiVersion: planrun.dev/v1alpha1\nkind: Plan\nclusters:\n  main: {kubeconfig: %q, context: %q}\n", cp.Kubeconfig, cp.ContextName)
	backupPlan := writePlan(t, dir, "backup.yaml", header+fmt.Sprintf(`metadata: {name: crash-backup}
steps:
  - id: backup
    type: kube.backup
    with:
      to: %q
      resources: [configmaps, deployments.apps]
      namespaces: [%s]
`, backupDir, src))
	restorePlan := writePlan(t, dir, "restore.yaml", header+fmt.Sprintf(`metadata: {name: crash-restore}
steps:
  - id: restore
    type: kube.restore
    with:
      from: %q
      namespaceMapping: {%s: %s}
`, backupDir, src, dst))

	if r := runPlanrun(t, dir, nil, "apply", backupPlan, "--run-id", "backup"); r.Code != 0 {
		t.Fatalf("backup exited %d\n%s", r.Code, r)
	}

	// Four attempts: killed right after the step starts (whatever it did by then: perhaps only
	// the target namespace), killed a third of the way, killed again further on, then to the
	// end. Each attempt starts the step over and counts the objects restored before as done, so
	// each kill point lies past what the previous attempts restored.
	started := time.Now()
	kp := plantest.KillPoint{Event: engine.EventStepStarted, Step: "restore", Delay: 100 * time.Millisecond}
	r := runPlanrun(t, dir, &kp, "apply", restorePlan, "--run-id", "r")
	if !r.Killed {
		t.Fatalf("the restore ended (exit %d) before it was killed at %s\n%s", r.Code, kp, r)
	}
	before := assertKilledMidRestore(t, cs, dir, dst, 0)
	t.Logf("killed at %s with %d of %d config maps restored", kp, before, restoreCrashObjects)
	for _, frac := range []int64{3, 2} {
		kp := plantest.KillPoint{Event: engine.EventStepProgress, Step: "restore", MinDone: int64(before) + (restoreCrashObjects-int64(before))/frac}
		r := runPlanrun(t, dir, &kp, "resume", "r", "--break-lock")
		if !r.Killed {
			t.Fatalf("the resumed restore ended (exit %d) before it was killed at %s\n%s", r.Code, kp, r)
		}
		before = assertKilledMidRestore(t, cs, dir, dst, before)
		t.Logf("killed at %s with %d of %d config maps restored", kp, before, restoreCrashObjects)
	}

	if r := runPlanrun(t, dir, nil, "resume", "r", "--break-lock"); r.Code != 0 {
		t.Fatalf("resume exited %d\n%s", r.Code, r)
	}
	t.Logf("restore finished after three kills (%s)", time.Since(started).Round(time.Millisecond))

	// The Deployment, once, with a new UID.
	deps, err := cs.AppsV1().Deployments(dst).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) != 1 || deps.Items[0].Name != owner {
		t.Fatalf("namespace %s holds %d deployments (%v), want only %s", dst, len(deps.Items), deploymentNames(deps.Items), owner)
	}
	newOwner := deps.Items[0].UID
	if newOwner == dep.UID || newOwner == "" {
		t.Fatalf("restored deployment has UID %q, the source one had %q", newOwner, dep.UID)
	}

	// Every config map, once, with its content and its owner reference remapped.
	got := listConfigMaps(t, cs, dst)
	uids := map[string]bool{string(newOwner): true}
	problems := 0
	problem := func(format string, args ...any) {
		if problems++; problems <= 20 {
			t.Errorf(format, args...)
		}
	}
	for _, cm := range got {
		uids[string(cm.UID)] = true
		data, ok := want[cm.Name]
		if !ok {
			problem("ConfigMap %s/%s was not in the backup", dst, cm.Name)
			continue
		}
		if !maps.Equal(cm.Data, data) {
			problem("ConfigMap %s/%s: data differs from the source", dst, cm.Name)
		}
		if !maps.Equal(cm.Labels, labels) {
			problem("ConfigMap %s/%s: labels %v, want %v", dst, cm.Name, cm.Labels, labels)
		}
		refs := cm.OwnerReferences
		if len(refs) != 1 {
			problem("ConfigMap %s/%s: %d owner references, want 1: %v", dst, cm.Name, len(refs), refs)
			continue
		}
		ref := refs[0]
		if ref.UID != newOwner || ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" || ref.Name != owner || ref.Controller == nil || !*ref.Controller {
			problem("ConfigMap %s/%s: owner reference %+v, want Deployment %s with UID %s (source UID %s)", dst, cm.Name, ref, owner, newOwner, dep.UID)
		}
	}
	if len(got) != len(want) {
		missing := 0
		for name := range want {
			if _, ok := got[name]; !ok {
				missing++
			}
		}
		t.Errorf("namespace %s holds %d config maps, want %d (%d missing)", dst, len(got), len(want), missing)
	}
	if problems > 20 {
		t.Errorf("… %d problems in all", problems)
	}

	// The step's outputs: the last attempt restored what the earlier ones had not, and found the
	// rest already restored by this backup.
	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	rec := j.Step("restore")
	if j.Status != engine.RunSucceeded || rec.Status != engine.StepSucceeded {
		t.Fatalf("run %s, step restore %s: %s", j.Status, rec.Status, rec.Error)
	}
	out := rec.Outputs
	restored, already := outputInt(t, out, "restored"), outputInt(t, out, "alreadyRestored")
	for _, k := range []string{"failed", "updated"} {
		if n := outputInt(t, out, k); n != 0 {
			t.Errorf("outputs.%s = %d, want 0 (outputs %v)", k, n, out)
		}
	}
	if restored+already != restoreCrashObjects+1 {
		t.Errorf("outputs: restored %d + alreadyRestored %d = %d, want %d (every object, the Deployment included)", restored, already, restored+already, restoreCrashObjects+1)
	}
	if already < int64(before) {
		t.Errorf("outputs.alreadyRestored = %d, but %d config maps were there before the last attempt", already, before)
	}

	// Undo deletes what the record lists: every object the run created must be there, the
	// namespace too, whichever attempt created it.
	recorded := recordedUIDs(t, out)
	ns, err := cs.CoreV1().Namespaces().Get(ctx, dst, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	uids[string(ns.UID)] = true
	missing := 0
	for uid := range uids {
		if !recorded[uid] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("the undo record %v lists %d UIDs; %d of the %d objects the run created are not in it (namespace %s in it: %v)",
			out["createdFile"], len(recorded), missing, len(uids), dst, recorded[string(ns.UID)])
	}
}

// configMapData is the content of config map i: about 1 KiB, different for every i.
func configMapData(i int) map[string]string {
	var b strings.Builder
	seed := fmt.Appendf(nil, "config map %d", i)
	for b.Len() < 1024 {
		sum := sha256.Sum256(seed)
		b.WriteString(hex.EncodeToString(sum[:]))
		seed = sum[:]
	}
	return map[string]string{"index": fmt.Sprint(i), "blob": b.String()}
}

// createConfigMaps creates the config maps in parallel, each owned by owner.
func createConfigMaps(t *testing.T, cs kubernetes.Interface, ns string, data map[string]map[string]string, owner metav1.OwnerReference) {
	t.Helper()
	names := make(chan string)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for range 32 {
		wg.Go(func() {
			for name := range names {
				cm := &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "crash-restore"}, OwnerReferences: []metav1.OwnerReference{owner}},
					Data:       data[name],
				}
				if _, err := cs.CoreV1().ConfigMaps(ns).Create(t.Context(), cm, metav1.CreateOptions{}); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		})
	}
	for name := range data {
		names <- name
	}
	close(names)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("creating %d config maps: %d failed, first: %v", len(data), len(errs), errs[0])
	}
}

// listConfigMaps lists a namespace's config maps by name, in pages.
func listConfigMaps(t *testing.T, cs kubernetes.Interface, ns string) map[string]corev1.ConfigMap {
	t.Helper()
	out := map[string]corev1.ConfigMap{}
	opts := metav1.ListOptions{Limit: 500}
	for {
		l, err := cs.CoreV1().ConfigMaps(ns).List(t.Context(), opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, cm := range l.Items {
			if _, dup := out[cm.Name]; dup {
				t.Fatalf("ConfigMap %s/%s listed twice", ns, cm.Name)
			}
			out[cm.Name] = cm
		}
		if l.Continue == "" {
			return out
		}
		opts.Continue = l.Continue
	}
}

// assertKilledMidRestore checks that a killed run stopped inside the restore step, with fewer
// than all config maps restored and more than floor (unless floor is 0), and returns how many were.
func assertKilledMidRestore(t *testing.T, cs kubernetes.Interface, dir, ns string, floor int) int {
	t.Helper()
	j, err := engine.NewDirStore(filepath.Join(dir, "runs")).Load(t.Context(), "r")
	if err != nil {
		t.Fatal(err)
	}
	if rec := j.Step("restore"); j.Status != engine.RunRunning || rec == nil || rec.Status != engine.StepRunning {
		t.Fatalf("after SIGKILL the journal says run %s, step %+v; want a run and a step still Running", j.Status, rec)
	}
	n := len(listConfigMaps(t, cs, ns))
	if n >= restoreCrashObjects || floor > 0 && n <= floor {
		t.Fatalf("killed with %d of %d config maps restored (%d before this attempt): not in the middle of the restore", n, restoreCrashObjects, floor)
	}
	return n
}

func deploymentNames(ds []appsv1.Deployment) []string {
	var names []string
	for _, d := range ds {
		names = append(names, d.Name)
	}
	return names
}

// recordedUIDs reads the UIDs listed in the restore's undo record (outputs.createdFile).
func recordedUIDs(t *testing.T, out engine.Outputs) map[string]bool {
	t.Helper()
	path, _ := out["createdFile"].(string)
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("undo record (outputs.createdFile %q): %v", out["createdFile"], err)
	}
	defer f.Close()
	uids := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r struct {
			UID string `json:"uid"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("%s: line %q: %v", path, sc.Text(), err)
		}
		uids[r.UID] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return uids
}
