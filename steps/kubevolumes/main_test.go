package kubevolumes_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/images"
	"planrun.dev/planrun/internal/s3test"
	_ "planrun.dev/planrun/steps"
	"planrun.dev/planrun/steps/kube/kubetest"
	"planrun.dev/planrun/steps/kubevolumes"
)

// clusters are a source and a target, each complete (controllers, scheduler, a node with the
// planrun image) with local volumes (StorageClass local): what a cluster without a dynamic
// provisioner has.
var clusters []*kubetest.Cluster

// localVolumes per cluster: each claim bound by a pod takes one for good (reclaim policy
// Retain), so there are enough for every test of the package.
const localVolumes = 24

func TestMain(m *testing.M) {
	if os.Getenv(controlplane.SkipEnv) == "1" {
		os.Exit(m.Run())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	built, err := images.Build(ctx, images.Planrun)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	kubetest.MainWith(m, 2, &clusters, controlplane.WithNode(built[images.Planrun]), controlplane.WithLocalVolumes(localVolumes, "1Gi"))
}

func ctx() context.Context { return context.Background() }

func src() kubernetes.Interface { return clusters[0].Typed }
func dst() kubernetes.Interface { return clusters[1].Typed }

// both are the plan's clusters: source and target.
func both() map[string]*kubetest.Cluster {
	return map[string]*kubetest.Cluster{"source": clusters[0], "target": clusters[1]}
}

const clustersHeader = "clusters: {source: {}, target: {}}\n"

// env is one test's world: a namespace of the same name on both clusters, an S3 server with a
// bucket for the repository, and a Secret with its keys.
type env struct {
	t    *testing.T
	ns   string
	s3   *s3test.Server
	repo string // the repository URL
}

// credsSecret is the Secret, in the test's namespace on the source, with the S3 server's keys.
const credsSecret = "repo-creds"

// testSecrets are the Secrets tests make themselves: any other Secret was made by a step.
var testSecrets = map[string]bool{credsSecret: true, "pw": true}

func newEnv(t *testing.T) *env {
	t.Helper()
	kubetest.Need(t, clusters)
	e := &env{t: t, ns: clusters[0].Namespace(t)}
	targetNamespace(t, e.ns)
	e.s3 = s3test.StartForTest(t)
	if err := e.s3.CreateBucket("volumes"); err != nil {
		t.Fatal(err)
	}
	e.repo = e.s3.URL("volumes", "repo/"+e.ns)
	_, err := src().CoreV1().Secrets(e.ns).Create(ctx(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: credsSecret},
		Data:       map[string][]byte{"AWS_ACCESS_KEY_ID": []byte(e.s3.AccessKey), "AWS_SECRET_ACCESS_KEY": []byte(e.s3.SecretKey)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// targetNamespace creates ns on the target and waits for its default service account.
func targetNamespace(t *testing.T, ns string) {
	t.Helper()
	if _, err := dst().CoreV1().Namespaces().Create(ctx(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubetest.Poll(t, "the default service account of "+ns+" on the target", func() (bool, error) {
		_, err := dst().CoreV1().ServiceAccounts(ns).Get(ctx(), "default", metav1.GetOptions{})
		return err == nil, nil
	})
}

// with is the mover part of a step's with: the repository, its credentials and host network (the
// S3 server listens on the machine's loopback). The mover pods run the planrun image built from
// this checkout, as in production.
func (e *env) with() string {
	return fmt.Sprintf("repository: %q, credentialsFrom: {cluster: source, namespace: %s, name: %s}, hostNetwork: true", e.repo, e.ns, credsSecret)
}

// copyStep is a plan with one kube.copyVolumes step "s" copying the test's namespace, with
// extra fields.
func (e *env) copyStep(extra string) string {
	return clustersHeader + fmt.Sprintf("steps:\n  - {id: s, type: kube.copyVolumes, with: {from: source, to: target, namespaces: [%s], %s%s}}\n",
		e.ns, e.with(), extra)
}

func claimSpec(class string, size string, modes ...corev1.PersistentVolumeAccessMode) corev1.PersistentVolumeClaimSpec {
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	return corev1.PersistentVolumeClaimSpec{
		StorageClassName: &class,
		AccessModes:      modes,
		Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
	}
}

// claimWithScript makes a claim of class local on the source filled by a pod running script
// (which binds it to one of the node's local volumes); the pod is gone when it returns.
func (e *env) claimWithScript(name, script string, labels map[string]string) *corev1.PersistentVolumeClaim {
	e.t.Helper()
	cs, ns := src(), e.ns
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: claimSpec(controlplane.LocalStorageClass, "500Mi")}
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx(), pvc, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	pod := e.podUsing(cs, ns, "writer-"+name, name, script)
	waitPod(e.t, cs, ns, pod, corev1.PodSucceeded)
	if err := cs.CoreV1().Pods(ns).Delete(ctx(), pod, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	kubetest.Poll(e.t, "pod "+pod+" gone", func() (bool, error) {
		_, err := cs.CoreV1().Pods(ns).Get(ctx(), pod, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	got, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx(), name, metav1.GetOptions{})
	if err != nil || got.Status.Phase != corev1.ClaimBound {
		e.t.Fatalf("claim %s/%s after its writer: %v %v", ns, name, got.Status.Phase, err)
	}
	return got
}

// podUsing starts a busybox pod that mounts claim at /data and runs script; returns its name.
func (e *env) podUsing(cs kubernetes.Interface, ns, name, claim, script string) string {
	e.t.Helper()
	spec := kubetest.BusyboxSpec(script)
	spec.RestartPolicy = corev1.RestartPolicyNever
	spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}
	spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx(), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "test"}}, Spec: spec}, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	return name
}

// boundClaim makes a claim bound to a volume of its own (a folder of the test, not one of the
// node's local volumes), without a pod, and returns the folder.
func (e *env) boundClaim(cs kubernetes.Interface, ns, name, class string, modes ...corev1.PersistentVolumeAccessMode) string {
	e.t.Helper()
	spec := claimSpec(class, "100Mi", modes...)
	pvName := "pv-" + ns + "-" + name
	dir := filepath.Join(e.t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("100Mi")},
			AccessModes:                   spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}},
			ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: name},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{"localhost"}}},
			}}}},
		},
	}
	if _, err := cs.CoreV1().PersistentVolumes().Create(ctx(), pv, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	spec.VolumeName = pvName
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx(), &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	kubetest.Poll(e.t, "claim "+ns+"/"+name+" Bound", func() (bool, error) {
		c, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx(), name, metav1.GetOptions{})
		return err == nil && c.Status.Phase == corev1.ClaimBound, err
	})
	return dir
}

func waitPod(t *testing.T, cs kubernetes.Interface, ns, name string, phase corev1.PodPhase) {
	t.Helper()
	kubetest.Poll(t, fmt.Sprintf("pod %s/%s %s", ns, name, phase), func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Status.Phase == corev1.PodFailed && phase != corev1.PodFailed {
			return false, fmt.Errorf("pod failed: %+v", p.Status.ContainerStatuses)
		}
		return p.Status.Phase == phase, nil
	})
}

// moverObjects lists what mover pods and Secrets (of any step) are in ns on cs.
func moverObjects(t *testing.T, cs kubernetes.Interface, ns string) []string {
	t.Helper()
	var out []string
	pods, err := cs.CoreV1().Pods(ns).List(ctx(), metav1.ListOptions{LabelSelector: kubevolumes.StepLabel})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		out = append(out, "pod "+p.Name)
	}
	secrets, err := cs.CoreV1().Secrets(ns).List(ctx(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		if !testSecrets[s.Name] {
			out = append(out, "Secret "+s.Name)
		}
	}
	return out
}

// nothingLeft fails the test if a mover pod or Secret is left in the test's namespace on either
// cluster.
func (e *env) nothingLeft() {
	e.t.Helper()
	for i, cs := range []kubernetes.Interface{src(), dst()} {
		// Pods are deleted in the background: they may take a moment to go.
		var left []string
		err := wait.PollUntilContextTimeout(ctx(), 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			left = moverObjects(e.t, cs, e.ns)
			return len(left) == 0, nil
		})
		if err != nil {
			e.t.Errorf("left on cluster %d: %v", i, left)
		}
	}
}

// claimNames lists the claims of ns on cs.
func claimNames(t *testing.T, cs kubernetes.Interface, ns string) []string {
	t.Helper()
	list, err := cs.CoreV1().PersistentVolumeClaims(ns).List(ctx(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range list.Items {
		names = append(names, c.Name)
	}
	sort.Strings(names)
	return names
}
