package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"planrun.dev/planrun/internal/images"
)

// TestCompleteCluster starts a cluster with controllers, scheduler and a node, and checks what
// only those make happen: pods run and have tokens and logs, Jobs succeed, Deployments make pods,
// the garbage collector deletes dependents, and a deleted namespace finishes terminating.
func TestCompleteCluster(t *testing.T) {
	skipIfAsked(t)
	// The planrun image (ko, hack/images) is what later work runs in clusters: the node gets it
	// imported beside the pause and busybox images.
	built, err := images.Build(t.Context(), images.Planrun)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cp := StartForTest(t, WithNode(built[images.Planrun]))
	t.Logf("complete cluster started in %s", time.Since(start).Round(time.Millisecond))
	cs := kubernetes.NewForConfigOrDie(cp.Config)
	ctx := t.Context()

	t.Run("node Ready with its pod CIDR", func(t *testing.T) {
		n, err := cs.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if n.Spec.PodCIDR != cp.node.slot.podCIDR() {
			t.Errorf("podCIDR %q, want %q", n.Spec.PodCIDR, cp.node.slot.podCIDR())
		}
	})

	t.Run("pod runs with a service account token, logs through the API", func(t *testing.T) {
		ns := testNamespace(t, cs)
		pod := busyboxPod("token", "echo hello; wc -c < /var/run/secrets/kubernetes.io/serviceaccount/token")
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPodPhase(t, cs, ns, "token", corev1.PodSucceeded)
		logs, err := cs.CoreV1().Pods(ns).GetLogs("token", &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Fields(string(logs))
		if len(lines) != 2 || lines[0] != "hello" || lines[1] == "0" {
			t.Errorf("logs %q, want hello and a token length", logs)
		}
	})

	t.Run("Job succeeds", func(t *testing.T) {
		ns := testNamespace(t, cs)
		job := &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: "job"},
			Spec: batchv1.JobSpec{BackoffLimit: ptr.To[int32](0), Template: corev1.PodTemplateSpec{
				Spec: busyboxPod("", "echo done").Spec,
			}},
		}
		if _, err := cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		poll(t, "Job succeeded", func() (bool, error) {
			j, err := cs.BatchV1().Jobs(ns).Get(ctx, "job", metav1.GetOptions{})
			return err == nil && j.Status.Succeeded == 1, err
		})
	})

	t.Run("Job runs the planrun image as non-root", func(t *testing.T) {
		ns := testNamespace(t, cs)
		job := &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: "planrun-version"},
			Spec: batchv1.JobSpec{BackoffLimit: ptr.To[int32](0), Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				// The kubelet refuses to start an image whose user is root (or not numeric)
				// when runAsNonRoot is set: the pod running proves the image's user.
				SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)},
				Containers: []corev1.Container{{
					Name: "planrun", Image: images.PlanrunImage, ImagePullPolicy: corev1.PullNever,
					Args: []string{"version", "-o", "json"},
				}},
			}}},
		}
		if _, err := cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		poll(t, "the planrun Job to succeed", func() (bool, error) {
			j, err := cs.BatchV1().Jobs(ns).Get(ctx, "planrun-version", metav1.GetOptions{})
			if err == nil && j.Status.Failed > 0 {
				return false, fmt.Errorf("the planrun Job failed: %+v", j.Status.Conditions)
			}
			return err == nil && j.Status.Succeeded == 1, err
		})
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=planrun-version"})
		if err != nil || len(pods.Items) != 1 {
			t.Fatalf("pods of the Job: %v %v", pods, err)
		}
		logs, err := cs.CoreV1().Pods(ns).GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ Version, GoVersion, Commit string }
		if err := json.Unmarshal(logs, &v); err != nil || v.Version == "" || v.Version == "unknown" || !strings.HasPrefix(v.GoVersion, "go") {
			t.Errorf("planrun version -o json in the pod printed %q (%v)", logs, err)
		}
	})

	t.Run("Deployment runs a pod, scaled to 0 the pod goes", func(t *testing.T) {
		ns := testNamespace(t, cs)
		labels := map[string]string{"app": "sleeper"}
		pod := busyboxPod("", "sleep 3600")
		pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
		pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](1)
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "sleeper"},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](1),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod.Spec},
			},
		}
		if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		poll(t, "a Running pod", func() (bool, error) {
			return countPods(ctx, cs, ns, corev1.PodRunning) == 1, nil
		})
		if _, err := cs.AppsV1().Deployments(ns).Patch(ctx, "sleeper", types.MergePatchType, []byte(`{"spec":{"replicas":0}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		poll(t, "no pods", func() (bool, error) {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return err == nil && len(pods.Items) == 0, err
		})
	})

	t.Run("garbage collector deletes dependents", func(t *testing.T) {
		ns := testNamespace(t, cs)
		owner, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dependent := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "dependent", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID,
		}}}}
		if _, err := cs.CoreV1().Secrets(ns).Create(ctx, dependent, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := cs.CoreV1().ConfigMaps(ns).Delete(ctx, "owner", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		poll(t, "the dependent Secret deleted", func() (bool, error) {
			_, err := cs.CoreV1().Secrets(ns).Get(ctx, "dependent", metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	})

	t.Run("deleted namespace with a running pod finishes terminating", func(t *testing.T) {
		ns := testNamespace(t, cs)
		pod := busyboxPod("sleeper", "sleep 3600")
		pod.Spec.TerminationGracePeriodSeconds = ptr.To[int64](1)
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPodPhase(t, cs, ns, "sleeper", corev1.PodRunning)
		if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		poll(t, "namespace gone", func() (bool, error) {
			_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	})
}

// TestTwoClustersWithNodes: two complete clusters at once, each with a node of its own (slot,
// bridge, pod CIDR, cgroups), each running a pod.
func TestTwoClustersWithNodes(t *testing.T) {
	cps := StartManyForTest(t, 2, WithNode())
	if a, b := cps[0].node.slot.podCIDR(), cps[1].node.slot.podCIDR(); a == b {
		t.Fatalf("both nodes have pod CIDR %s", a)
	}
	for i, cp := range cps {
		cs := kubernetes.NewForConfigOrDie(cp.Config)
		name := fmt.Sprintf("hello-%d", i)
		if _, err := cs.CoreV1().Pods("default").Create(t.Context(), busyboxPod(name, "echo "+name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() { waitPodPhase(t, cs, "default", name, corev1.PodSucceeded) }()
	}
}

// TestNodeStartFailsFast: a kubelet or a containerd that exits at once fails Start in seconds
// with an error naming the component, its log file and its last words; the log outlives the
// failed cluster, and nothing else is left behind.
func TestNodeStartFailsFast(t *testing.T) {
	skipIfAsked(t)
	real, err := findBinaries(t.Context(), completeBinaries...)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		component string // replaced by a script that fails
		last      string // what it prints before exiting
	}{
		{"kubelet", "failed to run Kubelet: cannot start here"},
		{"containerd", "containerd: failed to load TOML: cannot start here"},
	} {
		t.Run(tc.component, func(t *testing.T) {
			bin, path := t.TempDir(), t.TempDir()
			for _, name := range completeBinaries {
				if err := os.Symlink(filepath.Join(real, name), filepath.Join(bin, name)); err != nil {
					t.Fatal(err)
				}
			}
			// kubelet comes from the binary folder, containerd from PATH.
			broken := filepath.Join(bin, tc.component)
			if tc.component == "containerd" {
				broken = filepath.Join(path, tc.component)
				t.Setenv("PATH", path+":"+os.Getenv("PATH"))
			}
			os.Remove(broken)
			if err := os.WriteFile(broken, []byte("#!/bin/sh\necho '"+tc.last+"' >&2\nexit 1\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			cp, err := Start(t.Context(), Options{BinaryDir: bin, Node: true})
			if err == nil {
				cp.Stop()
				t.Fatalf("Start succeeded with a %s that exits", tc.component)
			}
			for _, want := range []string{tc.component + " exited", tc.component + ".log", tc.last} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error lacks %q:\n%v", want, err)
				}
			}
			t.Logf("failed after %s: %v", time.Since(start).Round(time.Millisecond), strings.SplitN(err.Error(), "\n", 2)[0])
			if strings.Contains(err.Error(), "after ") {
				t.Error("the failure waited for a time-out instead of noticing the exit")
			}
			_, rest, _ := strings.Cut(err.Error(), "log: ")
			logPath, _, _ := strings.Cut(rest, "\n")
			b, readErr := os.ReadFile(logPath)
			if readErr != nil || !strings.Contains(string(b), tc.last) {
				t.Errorf("log %q named by the error: %v %q", logPath, readErr, b)
			}
			if strings.HasPrefix(logPath, os.TempDir()) {
				os.RemoveAll(filepath.Dir(logPath))
			}
		})
	}
}

// busyboxPod is a pod running script in the busybox image, which never needs a pull.
func busyboxPod(name, script string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "main", Image: BusyboxImage, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sh", "-c", script},
			}},
		},
	}
}

// testNamespace creates a namespace for one subtest and waits for its default service account.
func testNamespace(t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	ns, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, "default service account", func() (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns.Name).Get(t.Context(), "default", metav1.GetOptions{})
		return err == nil, nil
	})
	return ns.Name
}

func waitPodPhase(t *testing.T, cs kubernetes.Interface, ns, name string, phase corev1.PodPhase) {
	t.Helper()
	poll(t, fmt.Sprintf("pod %s/%s %s", ns, name, phase), func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Status.Phase == corev1.PodFailed && phase != corev1.PodFailed {
			return false, fmt.Errorf("pod failed: %+v", p.Status.ContainerStatuses)
		}
		return p.Status.Phase == phase, nil
	})
}

func countPods(ctx context.Context, cs kubernetes.Interface, ns string, phase corev1.PodPhase) int {
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return -1
	}
	n := 0
	for _, p := range pods.Items {
		if p.Status.Phase == phase && p.DeletionTimestamp == nil {
			n++
		}
	}
	return n
}

// poll waits up to two minutes for cond; a cluster on a loaded 2-core machine may take a while
// to schedule, start or collect, never that long.
func poll(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		return cond()
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// TestSlotSweepsWhatAKilledNodeLeft: a slot whose owner died without cleaning up is swept by the
// next owner: processes in the node's cgroups, mounts under its folder, its bridge, its cgroups
// and its folder.
func TestSlotSweepsWhatAKilledNodeLeft(t *testing.T) {
	skipIfAsked(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root, as nodes do")
	}
	slot, err := acquireSlot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	own, err := ownCgroup()
	if err != nil {
		t.Fatal(err)
	}
	rec := slotRecord{Dir: filepath.Join(dir, "node"), CgroupRoot: own + "/planrun-sweep-test", Bridge: slot.bridgeName(), Socket: filepath.Join(dir, "c.sock"), Network: slot.network()}
	if err := slot.record(rec); err != nil {
		t.Fatal(err)
	}
	// What a node leaves when killed: a process in its cgroup, a mount, a bridge.
	if err := createCgroups(rec.CgroupRoot); err != nil {
		t.Fatal(err)
	}
	sleeper := exec.Command("sleep", "600")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	hierarchies, _ := cgroupHierarchies()
	for _, h := range hierarchies {
		if strings.HasSuffix(h, "/memory") {
			if err := os.WriteFile(filepath.Join(h, rec.CgroupRoot, "cgroup.procs"), []byte(fmt.Sprint(sleeper.Process.Pid)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	mnt := filepath.Join(rec.Dir, "volumes", "tmp")
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "link", "add", rec.Bridge, "type", "bridge").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	cniResult := filepath.Join(cniResults, rec.Network+"-0123abcd-eth0")
	if err := os.MkdirAll(cniResults, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cniResult, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The owner dies: its descriptor closes without the record being emptied.
	slot.file.Close()

	again, err := acquireSlot()
	if err != nil {
		t.Fatal(err)
	}
	defer again.release()
	if again.index != slot.index {
		t.Fatalf("got slot %d, want the freed %d", again.index, slot.index)
	}
	waitDone := make(chan error, 1)
	go func() { waitDone <- sleeper.Wait() }()
	select {
	case <-waitDone:
	case <-time.After(10 * time.Second):
		t.Error("the process in the node's cgroup is still running")
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), rec.Dir) {
		t.Error("a mount under the node folder is left")
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", rec.Bridge)); err == nil {
		t.Error("the bridge is left")
	}
	for _, left := range append([]string{rec.Dir, cniResult}, func() (dirs []string) {
		for _, h := range hierarchies {
			dirs = append(dirs, filepath.Join(h, rec.CgroupRoot))
		}
		return dirs
	}()...) {
		if _, err := os.Stat(left); err == nil {
			t.Errorf("%s is left", left)
		}
	}
	if b, _ := os.ReadFile(again.file.Name()); len(b) != 0 {
		t.Errorf("slot record after the sweep: %s", b)
	}
}

// TestNodePrerequisites: a machine without the node's packages is told which one and how to
// install it, before anything starts.
func TestNodePrerequisites(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the root check comes first")
	}
	for _, tc := range []struct {
		name, path, binaryDir, want string
	}{
		{"no containerd in PATH", t.TempDir(), "", "containerd not found in PATH: install Debian's containerd (run hack/install-node-deps.sh"},
		{"no kubelet", os.Getenv("PATH"), t.TempDir(), "kubelet not found: build it with hack/build-control-plane.sh kubelet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("PATH", tc.path)
			err := checkNodePrerequisites(tc.binaryDir)
			if !errors.Is(err, ErrNodePrerequisite) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("not one line: %q", err)
			}
		})
	}
}

// TestLocalVolumes: two clusters, each with local volumes of its own. A claim of class "local"
// waits for its first pod (WaitForFirstConsumer), is then bound by the scheduler to one of the
// node's volumes, and what the pod writes lands in that volume's folder on this machine; what a
// pod wrote as root, unreadable to others, goes with the node.
func TestLocalVolumes(t *testing.T) {
	start := time.Now()
	cps := StartManyForTest(t, 2, WithLocalVolumes(2, "2Gi"))
	t.Logf("two clusters with local volumes started in %s", time.Since(start).Round(time.Millisecond))
	var folders []string
	for i, cp := range cps {
		if len(cp.LocalVolumes) != 2 {
			t.Fatalf("cluster %d: local volumes %+v", i, cp.LocalVolumes)
		}
		for _, v := range cp.LocalVolumes {
			folders = append(folders, v.Path)
		}
		cs := kubernetes.NewForConfigOrDie(cp.Config)
		ctx := t.Context()
		ns := testNamespace(t, cs)
		claim := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Name: "data"},
			Spec: corev1.PersistentVolumeClaimSpec{
				StorageClassName: ptr.To(LocalStorageClass),
				AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}
		if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// No pod yet: the claim waits for its first consumer.
		time.Sleep(time.Second)
		if c, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{}); err != nil || c.Status.Phase != corev1.ClaimPending {
			t.Fatalf("claim before its first pod: %v %v", c.Status.Phase, err)
		}
		name := fmt.Sprintf("cluster-%d", i)
		pod := busyboxPod("writer", "echo "+name+" > /data/hello && mkdir -m 0700 /data/private && echo secret > /data/private/f && chmod 0 /data/private")
		pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPodPhase(t, cs, ns, "writer", corev1.PodSucceeded)
		c, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data", metav1.GetOptions{})
		if err != nil || c.Status.Phase != corev1.ClaimBound {
			t.Fatalf("claim after its pod ran: %v %v", c.Status.Phase, err)
		}
		var path string
		for _, v := range cp.LocalVolumes {
			if v.Name == c.Spec.VolumeName {
				path = v.Path
			}
		}
		if path == "" {
			t.Fatalf("claim bound to %q, not one of the node's local volumes %+v", c.Spec.VolumeName, cp.LocalVolumes)
		}
		if b, err := os.ReadFile(filepath.Join(path, "hello")); err != nil || string(b) != name+"\n" {
			t.Fatalf("volume folder %s holds %q (%v), want what the pod wrote", path, b, err)
		}
		for _, other := range cps[1-i].LocalVolumes {
			if other.Path == path {
				t.Fatalf("both clusters have volume folder %s", path)
			}
		}
	}
	for _, cp := range cps {
		if err := cp.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range folders {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("local volume folder %s left after the node stopped (%v)", f, err)
		}
	}
}
