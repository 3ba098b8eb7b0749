package plans_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
	"planrun.dev/planrun/internal/s3test"
)

const (
	camPlan       = "cam-namespace-migration.yaml"
	camHookNS     = "migration-hooks"
	camHookSA     = "hook-runner"
	camNFSServer  = "nfs.example.com"
	camRefusedCM  = "legacy-settings"         // in camNamespaces[1]; the target refuses it in TestCAMRollsBack
	camOtherNS    = "other"                   // not migrated
	camHookImage  = controlplane.BusyboxImage // on the nodes already: hooks run without a pull
	camMappedShop = "shop-migrated"
	// camPendingClaim is a claim in camNamespaces[1] pre-bound (spec.volumeName) to a volume that
	// does not exist yet, so Pending: not a bound PV for the PV limit nor for Retain.
	camPendingClaim = "scratch"
	// camBoundPVs is how many claims of the migrated namespaces are Bound: 3 per namespace.
	camBoundPVs = 9
	// camWorkloads is how many workloads kube.quiesce finds in the migrated namespaces: per
	// namespace 3 Deployments, a StatefulSet and a CronJob (the Deployments' ReplicaSets are
	// left to them), and the Job, DaemonSet and bare ReplicaSet of camNamespaces[2].
	camWorkloads = 5*3 + 3
	// camGrace is the grace period of the seeded pods: sleep as PID 1 ignores SIGTERM, so a
	// deleted pod runs on this long, as an application finishing its requests would.
	camGrace = 3
)

// camHook is one of the plan's hooks: the param that sets it, its step, the hook phase and the
// cluster it runs on.
type camHook struct{ Param, Step, Phase, Cluster string }

var (
	camNamespaces = []string{"shop", "payments", "search"}
	camMapping    = map[string]string{"shop": camMappedShop}
	// camHooks in the order they run; on the clusters the seed says: PreBackup and PostBackup
	// on the source, PreRestore and PostRestore on the target. Each runs the playbook
	// <param>.yml (camHookArgs).
	camHooks = []camHook{
		{"preBackupHook", "pre-backup-hook", "PreBackup", "source"},
		{"postBackupHook", "post-backup-hook", "PostBackup", "source"},
		{"preRestoreHook", "pre-restore-hook", "PreRestore", "target"},
		{"postRestoreHook", "post-restore-hook", "PostRestore", "target"},
	}
	// camNotRestored are resources the plan leaves to the target's controllers.
	camNotRestored = map[string]bool{"/pods": true, "/endpoints": true, "discovery.k8s.io/endpointslices": true, "apps/controllerrevisions": true}
)

// camClusterMade is whether the object of snapshot key k is one a cluster's controllers make on
// their own: of camNotRestored, or the "default" ServiceAccount and the kube-root-ca.crt
// ConfigMap every namespace gets.
func camClusterMade(k string) bool {
	gr, name := camKeyResource(k), k[strings.LastIndex(k, "/")+1:]
	return camNotRestored[gr] || gr == "/serviceaccounts" && name == "default" || gr == "/configmaps" && name == "kube-root-ca.crt"
}

// camHookSteps are the "cluster:step" of hooks (of camHooks), in order.
func camHookSteps(hooks []camHook) []string {
	var out []string
	for _, h := range hooks {
		out = append(out, h.Cluster+":"+h.Step)
	}
	return out
}

// camSeenSteps are the "cluster:step" of the hook Jobs seen, in order.
func camSeenSteps(jobs []camJob) []string {
	var out []string
	for _, j := range jobs {
		out = append(out, j.Cluster+":"+j.Step)
	}
	return out
}

// camEnv is a source and a target cluster, each complete (controllers, scheduler, a node), the
// source seeded with namespaces to migrate whose workloads run.
type camEnv struct {
	dir      string
	src, dst *controlplane.ControlPlane
	scs, dcs kubernetes.Interface
	hooks    *camHookRecorder
	// pods is how many pods the seeded workloads run in each migrated namespace (source name).
	pods map[string]int
	// watch, when set, sees every event of the runs (with -o json), after the hook recorder.
	watch func(engine.Event)
}

func startCAM(t *testing.T) *camEnv {
	t.Helper()
	cps := controlplane.StartManyForTest(t, 2, controlplane.WithNode())
	e := &camEnv{dir: t.TempDir(), src: cps[0], dst: cps[1]}
	kc, err := os.ReadFile(e.dst.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	// The plan reads the target cluster from ./target.kubeconfig.
	if err := os.WriteFile(filepath.Join(e.dir, "target.kubeconfig"), kc, 0o600); err != nil {
		t.Fatal(err)
	}
	e.scs, e.dcs = camClient(e.src), camClient(e.dst)
	for _, cs := range []kubernetes.Interface{e.scs, e.dcs} {
		if _, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: camHookNS}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().ServiceAccounts(camHookNS).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: camHookSA}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	camSeed(t, e.scs)
	e.pods = camSettle(t, e.scs)
	e.hooks = &camHookRecorder{clusters: map[string]kubernetes.Interface{"source": e.scs, "target": e.dcs}}
	return e
}

func camClient(cp *controlplane.ControlPlane) kubernetes.Interface {
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = -1, 0
	cfg.WarningHandler = rest.NoWarnings{}
	return kubernetes.NewForConfigOrDie(cfg)
}

// camSeed fills the source: per namespace a ServiceAccount, 50 ConfigMaps, 8 Secrets, a Role and
// its RoleBinding, a Service, 3 Deployments rolled out twice (so each owns 2 ReplicaSets), a
// StatefulSet and its 2 claims, a third claim, the 3 claims bound to NFS PersistentVolumes, and
// a CronJob; in camNamespaces[1] also a Pending claim pre-bound to a volume that does not exist
// (camPendingClaim); in camNamespaces[2] also a Job, a DaemonSet and a ReplicaSet without owner
// (camSeedWorkloads); and a namespace that is not migrated, with a claim and its volume.
func camSeed(t *testing.T, cs kubernetes.Interface) {
	t.Helper()
	ctx := t.Context()
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	do := func(f func() error) {
		wg.Go(func() {
			if err := f(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	for _, ns := range append(slices.Clone(camNamespaces), camOtherNS) {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns,
			Labels: map[string]string{"team": ns}, Annotations: map[string]string{"openshift.io/sa.scc.uid-range": "1000680000/10000"}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pvIndex := 0
	var statefulSets []string
	for _, ns := range append(slices.Clone(camNamespaces), camOtherNS) {
		claims := []string{"uploads"}
		if ns != camOtherNS {
			claims = append(claims, "data-db-0", "data-db-1")
		}
		for _, claim := range claims {
			policy := corev1.PersistentVolumeReclaimDelete
			if pvIndex%4 == 1 {
				policy = corev1.PersistentVolumeReclaimRecycle
			}
			pvIndex++
			do(func() error { return camSeedVolume(ctx, cs, ns, claim, policy) })
		}
		if ns == camOtherNS {
			continue
		}
		do(func() error {
			_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "app", Labels: map[string]string{"app": "web"}}}, metav1.CreateOptions{})
			return err
		})
		if ns == camNamespaces[1] {
			do(func() error { return camSeedPendingClaim(ctx, cs, ns) })
		}
		if ns == camNamespaces[2] {
			do(func() error { return camSeedWorkloads(ctx, cs, ns) })
		}
		for i := range 50 {
			name := fmt.Sprintf("config-%02d", i)
			if ns == camNamespaces[1] && i == 0 {
				name = camRefusedCM
			}
			do(func() error {
				_, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%3)}, Annotations: map[string]string{"example.com/rev": fmt.Sprint(i)}},
					Data:       map[string]string{"settings.yaml": strings.Repeat(fmt.Sprintf("key-%d: %s-%d\n", i, ns, i), 10)},
				}, metav1.CreateOptions{})
				return err
			})
		}
		for i := range 8 {
			do(func() error {
				_, err := cs.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("secret-%d", i)},
					Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"password": fmt.Appendf(nil, "s3cret-%s-%d", ns, i)}}, metav1.CreateOptions{})
				return err
			})
		}
		do(func() error {
			_, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "app-reader"},
				Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps", "secrets"}, Verbs: []string{"get", "list"}}}}, metav1.CreateOptions{})
			if err != nil {
				return err
			}
			_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "app-reader"},
				RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "app-reader"},
				Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "app", Namespace: ns}}}, metav1.CreateOptions{})
			return err
		})
		do(func() error {
			_, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "app-0"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}, metav1.CreateOptions{})
			return err
		})
		for d := range 3 {
			do(func() error {
				return camSeedDeployment(ctx, cs, ns, fmt.Sprintf("app-%d", d), camDeploymentReplicas(d))
			})
		}
		// After its claims (below): the StatefulSet controller would create them first.
		statefulSets = append(statefulSets, ns)
		do(func() error {
			_, err := cs.BatchV1().CronJobs(ns).Create(ctx, &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "report"},
				Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
					Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{camContainer("report")}}}}}}},
				metav1.CreateOptions{})
			return err
		})
	}
	wg.Wait()
	for _, ns := range statefulSets {
		do(func() error { return camSeedStatefulSet(ctx, cs, ns) })
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("seeding the source: %d errors, first: %v", len(errs), errs[0])
	}
}

// camSeedVolume creates a claim and an NFS PersistentVolume for it (claimRef with the claim's
// uid); the PV controller binds them (both Bound, the bind annotation on the claim).
func camSeedVolume(ctx context.Context, cs kubernetes.Interface, ns, claim string, policy corev1.PersistentVolumeReclaimPolicy) error {
	pvName := "pv-" + ns + "-" + claim
	size := resource.MustParse("5Gi")
	pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claim, Labels: map[string]string{"app": "db"}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, VolumeName: pvName,
			StorageClassName: new(""), Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName, Labels: map[string]string{"storage": "nfs"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			PersistentVolumeReclaimPolicy: policy,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: camNFSServer, Path: "/exports/" + ns + "/" + claim}},
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: claim, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion},
		},
	}, metav1.CreateOptions{})
	return err
}

// camSeedPendingClaim creates camPendingClaim, pre-bound by spec.volumeName to a volume that
// is not there (yet): the claim stays Pending, and its volume is no bound PV.
func camSeedPendingClaim(ctx context.Context, cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: camPendingClaim, Labels: map[string]string{"app": "batch"}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, VolumeName: "pv-" + ns + "-" + camPendingClaim + "-reserved",
			StorageClassName: new(""), Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}},
	}, metav1.CreateOptions{})
	return err
}

// camSeedWorkloads creates the workloads the other namespaces lack: a Job (parallelism 1 of 3
// completions, its pod never done), a DaemonSet with a nodeSelector of its own (the node has
// it), and a ReplicaSet without owner. (Few pods: each costs a sandbox on the test's node.)
func camSeedWorkloads(ctx context.Context, cs kubernetes.Interface, ns string) error {
	jobSpec := camRunPodSpec("reindex")
	jobSpec.RestartPolicy = corev1.RestartPolicyNever
	if _, err := cs.BatchV1().Jobs(ns).Create(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "reindex", Labels: map[string]string{"app": "reindex"}},
		Spec: batchv1.JobSpec{Parallelism: new(int32(1)), Completions: new(int32(3)), BackoffLimit: new(int32(3)),
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "reindex"}}, Spec: jobSpec}}},
		metav1.CreateOptions{}); err != nil {
		return err
	}
	dsLabels := map[string]string{"app": "log-agent"}
	dsSpec := camRunPodSpec("log-agent")
	dsSpec.NodeSelector = map[string]string{"kubernetes.io/os": "linux"}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "log-agent", Labels: dsLabels},
		Spec: appsv1.DaemonSetSpec{Selector: &metav1.LabelSelector{MatchLabels: dsLabels}, Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: dsLabels}, Spec: dsSpec}}},
		metav1.CreateOptions{}); err != nil {
		return err
	}
	rsLabels := map[string]string{"app": "legacy-worker"}
	_, err := cs.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "legacy-worker", Labels: rsLabels},
		Spec: appsv1.ReplicaSetSpec{Replicas: new(int32(1)), Selector: &metav1.LabelSelector{MatchLabels: rsLabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: rsLabels}, Spec: camRunPodSpec("legacy-worker")}}},
		metav1.CreateOptions{})
	return err
}

// camContainer is busybox sleeping, from the node's images.
func camContainer(name string) corev1.Container {
	return corev1.Container{Name: name, Image: controlplane.BusyboxImage, ImagePullPolicy: corev1.PullNever, Command: []string{"sleep", "3600"}}
}

// camRunPodSpec is a pod of one camContainer with the grace period camGrace.
func camRunPodSpec(name string) corev1.PodSpec {
	return corev1.PodSpec{TerminationGracePeriodSeconds: new(int64(camGrace)), Containers: []corev1.Container{camContainer(name)}}
}

// camPodSpec is the pod of the test's Deployments: run by the service account "app", with the
// claim "uploads" among its volumes but mounted by no container. The seed's volumes are on an
// NFS server that does not exist; the kubelet leaves alone a volume no container mounts, while
// the scheduler still wants the claim bound.
func camPodSpec(name string) corev1.PodSpec {
	spec := camRunPodSpec(name)
	spec.ServiceAccountName = "app"
	spec.Volumes = []corev1.Volume{{Name: "uploads", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "uploads"}}}}
	return spec
}

// camDeploymentReplicas is the replicas of Deployment app-<d>.
func camDeploymentReplicas(d int) int32 { return int32(d%2 + 1) }

// camSeedDeployment creates a Deployment and rolls it out a second time once its controller
// made the first ReplicaSet, so that it owns two: revision 1 at 0 replicas, revision 2 running
// n pods. Revision 1 has 0 replicas from the start, so that its pods need not start and stop.
func camSeedDeployment(ctx context.Context, cs kubernetes.Interface, ns, name string, n int32) error {
	labels := map[string]string{"app": name}
	spec := camPodSpec(name)
	spec.Containers[0].Env = []corev1.EnvVar{{Name: "REVISION", Value: "1"}}
	d, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{Replicas: new(int32(0)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
		if err != nil {
			return false, err
		}
		for _, rs := range l.Items {
			if ref := metav1.GetControllerOf(&rs); ref != nil && ref.UID == d.UID {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("the first ReplicaSet of Deployment %s/%s: %w", ns, name, err)
	}
	_, err = cs.AppsV1().Deployments(ns).Patch(ctx, name, types.JSONPatchType,
		fmt.Appendf(nil, `[{"op": "replace", "path": "/spec/template/spec/containers/0/env/0/value", "value": "2"}, {"op": "replace", "path": "/spec/replicas", "value": %d}]`, n), metav1.PatchOptions{})
	return err
}

// camSettle waits until the seeded workloads of cs run as seeded: every Deployment rolled out
// (its second ReplicaSet has all the replicas, the first none), and in each migrated namespace
// exactly the pods of its workloads, all Running and Ready, none terminating. It returns how many
// that is per namespace.
func camSettle(t *testing.T, cs kubernetes.Interface) map[string]int {
	t.Helper()
	want := map[string]int{}
	for _, ns := range camNamespaces {
		for d := range 3 {
			want[ns] += int(camDeploymentReplicas(d))
		}
		want[ns]++ // the StatefulSet
	}
	want[camNamespaces[2]] += 1 + 1 + 1 // the Job's parallelism, the DaemonSet on the node, the ReplicaSet
	for _, ns := range append(slices.Clone(camNamespaces), camOtherNS) {
		poll(t, "the claims of "+ns+" bound by the PV controller", func() (bool, string, error) {
			l, err := cs.CoreV1().PersistentVolumeClaims(ns).List(t.Context(), metav1.ListOptions{})
			if err != nil {
				return false, "", err
			}
			var unbound []string
			for _, c := range l.Items {
				if c.Name != camPendingClaim && (c.Status.Phase != corev1.ClaimBound || c.Annotations["pv.kubernetes.io/bind-completed"] == "") {
					unbound = append(unbound, c.Name+" "+string(c.Status.Phase))
				}
			}
			return len(l.Items) > 0 && len(unbound) == 0, fmt.Sprint(unbound), nil
		})
	}
	for _, ns := range camNamespaces {
		poll(t, "the Deployments of "+ns+" rolled out", func() (bool, string, error) {
			l, err := cs.AppsV1().Deployments(ns).List(t.Context(), metav1.ListOptions{})
			if err != nil {
				return false, "", err
			}
			var pending []string
			for _, d := range l.Items {
				st := d.Status
				if st.ObservedGeneration != d.Generation || st.Replicas != *d.Spec.Replicas || st.UpdatedReplicas != st.Replicas || st.AvailableReplicas != st.Replicas {
					pending = append(pending, fmt.Sprintf("%s %+v", d.Name, st))
				}
			}
			return len(l.Items) == 3 && len(pending) == 0, fmt.Sprint(pending), nil
		})
		waitPods(t, cs, ns, "", want[ns])
	}
	return want
}

// camSeedStatefulSet creates the StatefulSet db at 1 replica: its claim data-db-1 is left from
// when it had 2.
func camSeedStatefulSet(ctx context.Context, cs kubernetes.Interface, ns string) error {
	n := int32(1)
	labels := map[string]string{"app": "db"}
	_, err := cs.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Labels: labels},
		Spec: appsv1.StatefulSetSpec{Replicas: &n, ServiceName: "db", Selector: &metav1.LabelSelector{MatchLabels: labels},
			// The claims' volumes are on an NFS server that does not exist: no container mounts
			// them (see camPodSpec).
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: camRunPodSpec("db")},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}, Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("5Gi")}}}}}},
	}, metav1.CreateOptions{})
	return err
}

// camHookRecorder records, as each hook step of a run succeeds, the Jobs of that step on each
// cluster (a hook's Jobs are deleted when a run rolls back, so they are looked at while they
// are there), with their pods and what the pods printed, read from the API.
type camHookRecorder struct {
	clusters map[string]kubernetes.Interface
	mu       sync.Mutex
	seen     []camJob
	errs     []error
}

// camJob is a hook Job found on a cluster.
type camJob struct {
	Cluster, Step, Hook, Namespace, Name, Image, ServiceAccount string
	BackoffLimit                                                int32 // -1: not set
	Command, Args                                               []string
	// Pods are the Job's pods as "name phase node"; Logs what each printed, by pod name.
	Pods []string
	Logs map[string]string
}

func (r *camHookRecorder) observe(ctx context.Context, ev engine.Event) {
	if ev.Type != engine.EventStepSucceeded || !slices.ContainsFunc(camHooks, func(h camHook) bool { return h.Step == ev.StepID }) {
		return
	}
	var found []camJob
	var errs []error
	for _, cluster := range []string{"source", "target"} {
		jobs, err := r.jobs(ctx, cluster, ev.RunID, ev.StepID)
		found = append(found, jobs...)
		errs = append(errs, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, found...)
	if err := errors.Join(errs...); err != nil {
		r.errs = append(r.errs, fmt.Errorf("after %s: %w", ev.StepID, err))
	}
}

// jobs are the Jobs of run and step on cluster, with their pods and logs.
func (r *camHookRecorder) jobs(ctx context.Context, cluster, run, step string) ([]camJob, error) {
	cs := r.clusters[cluster]
	l, err := cs.BatchV1().Jobs("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []camJob
	for _, j := range l.Items {
		if j.Annotations["planrun.dev/step"] != step || j.Annotations["planrun.dev/run"] != run {
			continue // an application's Job, or another step's or run's
		}
		rec := camJob{Cluster: cluster, Step: step, Hook: j.Labels["migration.planrun.dev/hook"], Namespace: j.Namespace, Name: j.Name,
			ServiceAccount: j.Spec.Template.Spec.ServiceAccountName, BackoffLimit: -1, Logs: map[string]string{}}
		if c := j.Spec.Template.Spec.Containers; len(c) > 0 {
			rec.Image, rec.Command, rec.Args = c[0].Image, c[0].Command, c[0].Args
		}
		if j.Spec.BackoffLimit != nil {
			rec.BackoffLimit = *j.Spec.BackoffLimit
		}
		pods, err := cs.CoreV1().Pods(j.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + j.Name})
		if err != nil {
			return out, err
		}
		for _, p := range pods.Items {
			if ref := metav1.GetControllerOf(&p); ref == nil || ref.UID != j.UID {
				continue
			}
			rec.Pods = append(rec.Pods, fmt.Sprintf("%s %s %s", p.Name, p.Status.Phase, p.Spec.NodeName))
			b, err := cs.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
			if err != nil {
				return out, fmt.Errorf("logs of %s pod %s/%s: %w", cluster, p.Namespace, p.Name, err)
			}
			rec.Logs[p.Name] = string(b)
		}
		out = append(out, rec)
	}
	return out, nil
}

// Seen is what was recorded, in order; the test fails if the recording met errors.
func (r *camHookRecorder) Seen(t *testing.T) []camJob {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := errors.Join(r.errs...); err != nil {
		t.Errorf("recording the hooks: %v", err)
	}
	return slices.Clone(r.seen)
}

// hookJobs lists the Jobs of any hook step on both clusters, as "cluster ns/name".
func (e *camEnv) hookJobs(t *testing.T) []string {
	t.Helper()
	var out []string
	for name, cs := range map[string]kubernetes.Interface{"source": e.scs, "target": e.dcs} {
		jobs, err := cs.BatchV1().Jobs("").List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, job := range jobs.Items {
			if _, hook := job.Annotations["planrun.dev/step"]; hook || job.Namespace == camHookNS {
				out = append(out, name+" "+job.Namespace+"/"+job.Name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// camRunningPods counts the pods of ns that run (neither Succeeded nor Failed), terminating ones
// included, as "name phase" (or "name terminating").
func camRunningPods(t *testing.T, cs kubernetes.Interface, ns string) []string {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pods.Items {
		switch {
		case p.DeletionTimestamp != nil:
			out = append(out, p.Name+" terminating")
		case p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed:
			out = append(out, p.Name+" "+string(p.Status.Phase))
		}
	}
	return out
}

// assertSourceStopped checks that no pod runs in the migrated namespaces of the source: the
// quiesce waited for them.
func (e *camEnv) assertSourceStopped(t *testing.T) {
	t.Helper()
	for _, ns := range camNamespaces {
		if pods := camRunningPods(t, e.scs, ns); len(pods) != 0 {
			t.Errorf("source: pods of %s still run after the quiesce: %v", ns, pods)
		}
	}
}

// waitRunning waits until every migrated namespace on cs (named by mapNS) runs its workloads'
// pods again: as many as on the source before, all Running and Ready.
func (e *camEnv) waitRunning(t *testing.T, cs kubernetes.Interface, mapNS func(string) string) {
	t.Helper()
	for _, ns := range camNamespaces {
		waitPods(t, cs, mapNS(ns), "", e.pods[ns])
	}
}

// waitNamespacesGone waits until the namespaces are gone from the target: deleted, and emptied
// and removed by its namespace controller.
func (e *camEnv) waitNamespacesGone(t *testing.T, namespaces []string) {
	t.Helper()
	for _, ns := range namespaces {
		poll(t, "target namespace "+ns+" gone", func() (bool, string, error) {
			n, err := e.dcs.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, "", nil
			}
			if err != nil {
				return false, "", err
			}
			return false, fmt.Sprintf("%s, %v", n.Status.Phase, n.Status.Conditions), nil
		})
	}
}

// camHookArgs sets the four hooks, each a Job in camHookNS run by camHookSA that prints a line
// of its own (camHookMessage).
func camHookArgs() []string {
	var args []string
	for _, h := range camHooks {
		args = append(args, "--set", camHookParam(h, `[echo]`, fmt.Sprintf(`["%s"]`, camHookMessage(h))))
	}
	return args
}

// camHookParam is the param value of hook h running command with args (YAML lists).
func camHookParam(h camHook, command, args string) string {
	return fmt.Sprintf("%s={image: %s, namespace: %s, serviceAccount: %s, command: %s, args: %s, timeout: 2m}",
		h.Param, camHookImage, camHookNS, camHookSA, command, args)
}

// camHookMessage is what the hook h prints: its phase and the playbook it stands for.
func camHookMessage(h camHook) string { return h.Phase + " hook: run " + h.Param + ".yml" }

func (e *camEnv) applyArgs(runID string, extra ...string) []string {
	plan, _ := filepath.Abs(camPlan)
	m, _ := json.Marshal(camMapping)
	args := []string{"apply", plan, "--kubeconfig", e.src.Kubeconfig, "--run-id", runID,
		"--set", "namespaces=[" + strings.Join(camNamespaces, ", ") + "]", "--set", "namespaceMapping=" + string(m)}
	return append(args, extra...)
}

func (e *camEnv) run(t *testing.T, k *plantest.KillPoint, plain bool, args ...string) plantest.Result {
	t.Helper()
	ctx := t.Context()
	return plantest.RunBinary(t, planrunBin, e.dir, plantest.RunOptions{Kill: k, Plain: plain, OnEvent: func(ev engine.Event) {
		e.hooks.observe(ctx, ev)
		if e.watch != nil {
			e.watch(ev)
		}
	}}, args...)
}

func camMapNS(ns string) string {
	if n, ok := camMapping[ns]; ok {
		return n
	}
	return ns
}

// camSnapshot is every object of the namespaces (all listable namespaced resources but events),
// the Namespace objects and every PersistentVolume, by "group/resource ns/name".
func camSnapshot(t *testing.T, cp *controlplane.ControlPlane, namespaces []string) map[string]map[string]any {
	t.Helper()
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = -1, 0
	cfg.WarningHandler = rest.NoWarnings{}
	dc := discovery.NewDiscoveryClientForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	lists, err := dc.ServerPreferredNamespacedResources()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	add := func(gr string, items []map[string]any) {
		for _, o := range items {
			md := o["metadata"].(map[string]any)
			ns, _ := md["namespace"].(string)
			out[gr+" "+ns+"/"+md["name"].(string)] = o
		}
	}
	list := func(gvr schema.GroupVersionResource, ns string) []map[string]any {
		var r dynamic.ResourceInterface = dyn.Resource(gvr)
		if ns != "" {
			r = dyn.Resource(gvr).Namespace(ns)
		}
		l, err := r.List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list %s: %v", gvr.Resource, err)
		}
		var items []map[string]any
		for _, o := range l.Items {
			items = append(items, o.Object)
		}
		return items
	}
	for _, l := range lists {
		gv, _ := schema.ParseGroupVersion(l.GroupVersion)
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || r.Name == "events" || !slices.Contains(r.Verbs, "list") {
				continue
			}
			for _, ns := range namespaces {
				add(gv.Group+"/"+r.Name, list(gv.WithResource(r.Name), ns))
			}
		}
	}
	for _, ns := range list(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, "") {
		if slices.Contains(namespaces, ns["metadata"].(map[string]any)["name"].(string)) {
			add("/namespaces", []map[string]any{ns})
		}
	}
	add("/persistentvolumes", list(schema.GroupVersionResource{Version: "v1", Resource: "persistentvolumes"}, ""))
	return out
}

// camKeyResource is the "group/resource" of a snapshot key.
func camKeyResource(k string) string { return k[:strings.Index(k, " ")] }

// camSourceObjects are the snapshot's objects of the migrated namespaces and their bound
// volumes, the Namespace objects included: what a migration takes.
func camSourceObjects(snap map[string]map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for k, o := range snap {
		md := o["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		name, _ := md["name"].(string)
		switch gr := camKeyResource(k); {
		case gr == "/namespaces":
			if slices.Contains(camNamespaces, name) {
				out[k] = o
			}
		case gr == "/persistentvolumes":
			if slices.Contains(camNamespaces, camStrAt(o, "spec", "claimRef", "namespace")) {
				out[k] = o
			}
		case slices.Contains(camNamespaces, ns):
			out[k] = o
		}
	}
	return out
}

// camNorm is an object as the migration should leave it on the target, or as it is there, for
// comparison: server fields gone (uid, resourceVersion, creationTimestamp, managedFields,
// generation; the uid of owner references; a Service's cluster IPs; a Job's controller-uid in
// its selector and pod labels), the namespace mapped when mapNS is given, claims and volumes
// without their binding state (status, bind annotations, a claimRef's uid).
func camNorm(gr string, obj map[string]any, mapNS func(string) string, pvAction, storageClass string) map[string]any {
	b, _ := json.Marshal(obj)
	var o map[string]any
	json.Unmarshal(b, &o)
	md := o["metadata"].(map[string]any)
	for _, f := range []string{"uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink"} {
		delete(md, f)
	}
	if refs, ok := md["ownerReferences"].([]any); ok {
		for _, r := range refs {
			delete(r.(map[string]any), "uid")
		}
	}
	camStripControllers(o)
	if mapNS == nil {
		mapNS = func(s string) string { return s }
	}
	if ns, ok := md["namespace"].(string); ok {
		md["namespace"] = mapNS(ns)
	}
	spec, _ := o["spec"].(map[string]any)
	switch gr {
	case "/namespaces":
		md["name"] = mapNS(md["name"].(string))
		md["labels"].(map[string]any)["kubernetes.io/metadata.name"] = md["name"]
	case "/services":
		delete(spec, "clusterIP")
		delete(spec, "clusterIPs")
	case "batch/jobs":
		// The selector and pod labels the API server generates from the Job's uid.
		for _, l := range []map[string]any{camMapAt(spec, "selector", "matchLabels"), camMapAt(spec, "template", "metadata", "labels")} {
			delete(l, "controller-uid")
			delete(l, "batch.kubernetes.io/controller-uid")
		}
	case "/persistentvolumeclaims":
		delete(o, "status")
		if ann, ok := md["annotations"].(map[string]any); ok {
			delete(ann, "pv.kubernetes.io/bind-completed")
			delete(ann, "pv.kubernetes.io/bound-by-controller")
			if len(ann) == 0 {
				delete(md, "annotations")
			}
		}
		if pvAction == "copy" {
			delete(spec, "volumeName")
			if storageClass != "" {
				spec["storageClassName"] = storageClass
			}
		}
	case "/persistentvolumes":
		delete(o, "status")
		if ref, ok := spec["claimRef"].(map[string]any); ok {
			delete(ref, "uid")
			delete(ref, "resourceVersion")
			ref["namespace"] = mapNS(camStrAt(ref, "namespace"))
		}
		if pvAction == "move" {
			spec["persistentVolumeReclaimPolicy"] = "Retain"
		}
	}
	return o
}

// camTargetKey is where the object of source key k is on the target.
func camTargetKey(k string) string {
	gr, rest, _ := strings.Cut(k, " ")
	ns, name, _ := strings.Cut(rest, "/")
	if gr == "/namespaces" {
		return gr + " /" + camMapNS(name)
	}
	if ns != "" {
		ns = camMapNS(ns)
	}
	return gr + " " + ns + "/" + name
}

// camExpect says what a run was asked to do.
type camExpect struct {
	pvAction, storageClass string
	stage                  bool // only Namespaces and claims on the target; the source running
}

// camRestored is whether the object of source key k is one the run restores on the target.
func camRestored(k string, want camExpect) bool {
	gr := camKeyResource(k)
	return !camNotRestored[gr] && (want.pvAction != "copy" || gr != "/persistentvolumes") &&
		(!want.stage || gr == "/namespaces" || gr == "/persistentvolumeclaims")
}

// camAt is the value at path in a JSON-shaped object; nil where a part of the path is missing
// or not an object.
func camAt(o map[string]any, path ...string) any {
	var v any = o
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

// camMapAt is the object at path in o, nil when there is none.
func camMapAt(o map[string]any, path ...string) map[string]any {
	m, _ := camAt(o, path...).(map[string]any)
	return m
}

// camStrAt is the string at path in o, "" when there is none.
func camStrAt(o map[string]any, path ...string) string {
	s, _ := camAt(o, path...).(string)
	return s
}

// camSet sets the value at path in o, making the objects on the way.
func camSet(o map[string]any, v any, path ...string) {
	for _, p := range path[:len(path)-1] {
		m, ok := o[p].(map[string]any)
		if !ok {
			m = map[string]any{}
			o[p] = m
		}
		o = m
	}
	o[path[len(path)-1]] = v
}

// camQuiesceField is the field kube.quiesce stops on an object of resource gr, and the
// annotation it keeps the field's old value in; ok is false for what it leaves alone
// (ReplicaSets that have a controller among them: their Deployment decides).
func camQuiesceField(gr string, o map[string]any) (path []string, annotation string, ok bool) {
	switch gr {
	case "apps/deployments", "apps/statefulsets":
		return []string{"spec", "replicas"}, "planrun.dev/previous-replicas", true
	case "apps/replicasets":
		refs, _ := camAt(o, "metadata", "ownerReferences").([]any)
		for _, r := range refs {
			if ref, _ := r.(map[string]any); ref["controller"] == true {
				return nil, "", false
			}
		}
		return []string{"spec", "replicas"}, "planrun.dev/previous-replicas", true
	case "batch/jobs":
		return []string{"spec", "parallelism"}, "planrun.dev/previous-parallelism", true
	case "batch/cronjobs":
		return []string{"spec", "suspend"}, "planrun.dev/previous-suspend", true
	case "apps/daemonsets":
		return []string{"spec", "template", "spec", "nodeSelector", "planrun.dev/quiesced"}, "planrun.dev/previous-node-selector", true
	}
	return nil, "", false
}

// camQuiesced is a source object as it was before the migration, server fields stripped (as
// camStripServer), with exactly what kube.quiesce changes: the field of camQuiesceField stopped
// (replicas or parallelism 0, suspend true, the DaemonSet's pods on nodeSelector
// planrun.dev/quiesced=true) and the annotation holding the old value as JSON. ok is false, and
// the object only stripped, for objects quiesce leaves alone.
func camQuiesced(gr string, before map[string]any) (o map[string]any, ok bool) {
	o = camStripServer(before)
	path, annotation, ok := camQuiesceField(gr, before)
	if !ok {
		return o, false
	}
	old := camAt(o, path...)
	var stopped any
	switch path[len(path)-1] {
	case "replicas", "parallelism":
		if old == nil {
			old = 1
		}
		stopped = 0
	case "suspend":
		if old == nil {
			old = false
		}
		stopped = true
	default: // the DaemonSet's node selector key: whether it was there, and its value
		if old == nil {
			old = map[string]any{"existed": false}
		} else {
			old = map[string]any{"existed": true, "value": old}
		}
		stopped = "true"
	}
	camSet(o, stopped, path...)
	prev, _ := json.Marshal(old)
	camSet(o, string(prev), "metadata", "annotations", annotation)
	return o, true
}

// camAssertMigrated checks the end state field by field: every source object the plan migrates
// is on the target as it was on the source (namespace mapped, server fields aside, owner
// references to the target's new UIDs, status restored, workloads with the replicas,
// parallelism and node selector they had before the quiesce), nothing else of the source
// namespaces is; volumes moved or left for the target to provision; the source quiesced
// (exactly what camQuiesced says) with its bound volumes on Retain after a final migrate,
// untouched after a stage.
func camAssertMigrated(t *testing.T, e *camEnv, before map[string]map[string]any, want camExpect) {
	t.Helper()
	mapped := []string{}
	for _, ns := range camNamespaces {
		mapped = append(mapped, camMapNS(ns))
	}
	target := camSnapshot(t, e.dst, append(mapped, camOtherNS))
	source := camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))
	src := camSourceObjects(before)
	problems := 0
	problem := func(format string, args ...any) {
		if problems++; problems <= 25 {
			t.Errorf(format, args...)
		}
	}
	wantKeys := map[string]bool{}
	// Every namespace's kube-root-ca.crt holds its cluster's CA, put there by the cluster's own
	// publisher: the target's, not the source's, whatever the restore did to it.
	targetCA, err := e.dcs.CoreV1().ConfigMaps(camHookNS).Get(t.Context(), "kube-root-ca.crt", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k, o := range src {
		if !camRestored(k, want) {
			continue
		}
		gr := camKeyResource(k)
		tk := camTargetKey(k)
		wantKeys[tk] = true
		got, ok := target[tk]
		if !ok {
			problem("target: %s missing (source %s)", tk, k)
			continue
		}
		if gr == "/configmaps" && camStrAt(got, "metadata", "name") == "kube-root-ca.crt" {
			if g, w := normalized(got["data"]), normalized(targetCA.Data); g != w {
				problem("target: %s holds %s, want the target's CA %s", tk, g, w)
			}
			continue
		}
		w := normalized(camNorm(gr, o, camMapNS, want.pvAction, want.storageClass))
		g := normalized(camNorm(gr, got, nil, "", ""))
		if w != g {
			problem("target: %s differs from the source's %s:\n want %s\n got  %s", tk, k, w, g)
		}
		if uid := camAt(got, "metadata", "uid"); uid == camAt(o, "metadata", "uid") {
			problem("target: %s has the source's UID", tk)
		}
	}
	// Nothing else on the target: neither what the plan leaves out nor anything of the
	// namespace that is not migrated (its objects, its Namespace, its volume).
	for tk := range target {
		if !wantKeys[tk] && !camClusterMade(tk) { // pods and the like: the target's controllers make them
			problem("target: %s was not asked for", tk)
		}
	}
	// Owner references point at the owners created on the target.
	owners := 0
	for tk, o := range target {
		if camNotRestored[camKeyResource(tk)] {
			continue // owned by what the target's controllers run
		}
		refs, _ := camAt(o, "metadata", "ownerReferences").([]any)
		for _, r := range refs {
			ref, _ := r.(map[string]any)
			owner, ok := target["apps/deployments "+camStrAt(o, "metadata", "namespace")+"/"+camStrAt(ref, "name")]
			if !ok || ref["uid"] != camAt(owner, "metadata", "uid") {
				problem("target: %s: owner reference %v does not point at the target's Deployment", tk, ref)
			}
			owners++
		}
	}
	if !want.stage && owners != 6*len(camNamespaces) {
		problem("target: %d owner references, want %d (2 ReplicaSets per Deployment)", owners, 6*len(camNamespaces))
	}
	// Workloads on the target are as on the source before the quiesce (the backup is taken
	// before it): replicas, a Job's parallelism, a CronJob's suspend, a DaemonSet's node
	// selector; none with a quiesce annotation.
	workloads := 0
	for k, o := range src {
		path, annotation, ok := camQuiesceField(camKeyResource(k), o)
		if want.stage || !ok {
			continue
		}
		workloads++
		got, found := target[camTargetKey(k)]
		if !found {
			continue // reported above
		}
		stopped, _ := camQuiesced(camKeyResource(k), o)
		field := strings.Join(path, ".")
		if g, w := normalized(camAt(got, path...)), normalized(camAt(o, path...)); g != w || g == normalized(camAt(stopped, path...)) {
			problem("target: %s %s %s, want the source's before the quiesce %s", camTargetKey(k), field, g, w)
		}
		if a := camAt(got, "metadata", "annotations", annotation); a != nil {
			problem("target: %s has the quiesce annotation %s=%v", camTargetKey(k), annotation, a)
		}
	}
	if !want.stage && workloads != camWorkloads {
		problem("%d workloads migrated, want %d", workloads, camWorkloads)
	}
	// Volumes.
	for k, o := range src {
		switch camKeyResource(k) {
		case "/persistentvolumes":
			spec := camMapAt(o, "spec")
			refNS, refName := camStrAt(spec, "claimRef", "namespace"), camStrAt(spec, "claimRef", "name")
			if want.pvAction == "move" && !want.stage {
				if got, ok := target[camTargetKey(k)]; ok {
					gs := camMapAt(got, "spec")
					if camStrAt(gs, "nfs", "server") != camNFSServer || camAt(gs, "nfs", "path") != camAt(spec, "nfs", "path") || gs["persistentVolumeReclaimPolicy"] != "Retain" ||
						camStrAt(gs, "claimRef", "namespace") != camMapNS(refNS) || camStrAt(gs, "claimRef", "name") != refName ||
						camAt(gs, "claimRef", "uid") != camAt(target["/persistentvolumeclaims "+camMapNS(refNS)+"/"+refName], "metadata", "uid") {
						problem("target: %s: nfs %v, reclaim %v, claimRef %v; want the source's nfs %v, Retain, claimRef to %s/%s, bound by the target to that claim's uid",
							camTargetKey(k), gs["nfs"], gs["persistentVolumeReclaimPolicy"], gs["claimRef"], spec["nfs"], camMapNS(refNS), refName)
					}
				}
			}
		case "/persistentvolumeclaims":
			got, ok := target[camTargetKey(k)]
			if !ok {
				continue // reported above
			}
			gs := camMapAt(got, "spec")
			vn := camStrAt(gs, "volumeName")
			switch {
			case want.pvAction == "copy" && (vn != "" || want.storageClass != "" && gs["storageClassName"] != want.storageClass):
				problem("target: %s volumeName %q storageClassName %v; want none and %q (provisioned by the target)", camTargetKey(k), vn, gs["storageClassName"], want.storageClass)
			case want.pvAction == "move" && vn != camStrAt(o, "spec", "volumeName"):
				problem("target: %s volumeName %q, want the moved volume %q", camTargetKey(k), vn, camStrAt(o, "spec", "volumeName"))
			}
		}
	}
	// The source: after a final migrate, the workloads quiesced and nothing else changed (each
	// whole object compared with camQuiesced of the one before), its bound volumes on Retain
	// and nothing else changed; after a stage, everything as it was.
	quiesced := map[string]int{}
	for k, o := range src {
		gr := camKeyResource(k)
		if camNotRestored[gr] {
			continue // pods and the like come and go with the workloads; the tests look at pods
		}
		cur, ok := source[k]
		if !ok {
			problem("source: %s is gone", k)
			continue
		}
		w := camStripServer(o)
		if !want.stage {
			var q bool
			if w, q = camQuiesced(gr, o); q {
				quiesced[gr]++
			}
			if gr == "/persistentvolumes" {
				camSet(w, "Retain", "spec", "persistentVolumeReclaimPolicy")
			}
		}
		if normalized(w) != normalized(camStripServer(cur)) {
			problem("source: %s not as expected:\n want %s\n got  %s", k, normalized(w), normalized(camStripServer(cur)))
		}
	}
	if !want.stage {
		// The seed's Job, DaemonSet and ReplicaSet without owner among them.
		ns := camNamespaces[2]
		for _, c := range []struct {
			key  string
			path []string
			want string
		}{
			{"batch/jobs " + ns + "/reindex", []string{"spec", "parallelism"}, "0"},
			{"apps/daemonsets " + ns + "/log-agent", []string{"spec", "template", "spec", "nodeSelector"}, `{"kubernetes.io/os":"linux","planrun.dev/quiesced":"true"}`},
			{"apps/replicasets " + ns + "/legacy-worker", []string{"spec", "replicas"}, "0"},
		} {
			if got := normalized(camAt(source[c.key], c.path...)); got != c.want {
				problem("source: %s %s %s, want %s (quiesced)", c.key, strings.Join(c.path, "."), got, c.want)
			}
		}
		n := 0
		for _, c := range quiesced {
			n += c
		}
		if n != camWorkloads || quiesced["batch/jobs"] != 1 || quiesced["apps/daemonsets"] != 1 || quiesced["apps/replicasets"] != 1 {
			problem("source: quiesced %v (%d), want %d workloads, 1 Job, 1 DaemonSet, 1 ReplicaSet without owner", quiesced, n, camWorkloads)
		}
	}
	if problems > 25 {
		t.Errorf("… %d problems in all", problems)
	}
	t.Logf("compared %d objects on the target, %d owner references, %d objects on the source", len(wantKeys), owners, len(src))
}

// camStep is the record of step id in the journal j; the test fails when there is none.
func camStep(t *testing.T, j *engine.Journal, id string) *engine.StepRecord {
	t.Helper()
	rec := j.Step(id)
	if rec == nil {
		t.Fatalf("run %s: no step %q in the journal", j.RunID, id)
	}
	return rec
}

// camStripServer removes what changes when nothing but the server touches an object.
func camStripServer(obj map[string]any) map[string]any {
	b, _ := json.Marshal(obj)
	var o map[string]any
	json.Unmarshal(b, &o)
	md := o["metadata"].(map[string]any)
	for _, f := range []string{"resourceVersion", "managedFields", "generation"} {
		delete(md, f)
	}
	// The API server keeps a DaemonSet's template generation in an annotation, as generation.
	if ann, _ := md["annotations"].(map[string]any); ann != nil {
		delete(ann, "deprecated.daemonset.template.generation")
		if len(ann) == 0 {
			delete(md, "annotations")
		}
	}
	camStripControllers(o)
	return o
}

// camWorkloadKinds are the kinds whose status their controllers keep.
var camWorkloadKinds = map[string]bool{"Deployment": true, "ReplicaSet": true, "StatefulSet": true, "DaemonSet": true, "Job": true, "CronJob": true}

// camStripControllers removes from o (in place) what the clusters' controllers change on their
// own: a workload's status (counts of its pods, conditions with their times); on a ReplicaSet
// that a Deployment controls, the replicas and the annotations the Deployment sets on it (its
// Deployment scales it, as when quiesced, and copies its own annotations to it, the quiesce's
// planrun.dev/previous-replicas too, which the Deployment controller never removes again); a
// claim's Unused condition (whether a pod uses it).
func camStripControllers(o map[string]any) {
	kind, _ := o["kind"].(string)
	if kind == "PersistentVolumeClaim" {
		if conds, ok := camAt(o, "status", "conditions").([]any); ok {
			conds = slices.DeleteFunc(slices.Clone(conds), func(c any) bool {
				m, _ := c.(map[string]any)
				return m["type"] == "Unused"
			})
			camSet(o, conds, "status", "conditions")
			if len(conds) == 0 {
				delete(camMapAt(o, "status"), "conditions")
			}
		}
		return
	}
	if !camWorkloadKinds[kind] {
		return
	}
	delete(o, "status")
	md := o["metadata"].(map[string]any)
	if refs, _ := md["ownerReferences"].([]any); kind == "ReplicaSet" && slices.ContainsFunc(refs, func(r any) bool {
		ref, _ := r.(map[string]any)
		return ref["controller"] == true
	}) {
		delete(camMapAt(o, "spec"), "replicas")
		if ann, _ := md["annotations"].(map[string]any); ann != nil {
			delete(ann, "deployment.kubernetes.io/desired-replicas")
			delete(ann, "deployment.kubernetes.io/max-replicas")
			delete(ann, "planrun.dev/previous-replicas")
			if len(ann) == 0 {
				delete(md, "annotations")
			}
		}
	}
}

// camAssertHookJobs checks that hooks ran, in order, as the Jobs seen: each on the cluster the
// seed says and not on the other, labelled with its phase, with the image, namespace, service
// account, command and backoffLimit asked for and the args of its own hook; each ran one pod, on
// that cluster's node, that Succeeded and printed the hook's line, in the logs read from the
// API and in the log planrun kept in the run's folder (j's outputs of the hook step).
func camAssertHookJobs(t *testing.T, e *camEnv, jobs []camJob, hooks []camHook, j *engine.Journal) {
	t.Helper()
	if got, want := camSeenSteps(jobs), camHookSteps(hooks); !slices.Equal(got, want) {
		t.Errorf("hook Jobs seen %v, want %v", got, want)
	}
	for i, job := range jobs[:min(len(jobs), len(hooks))] {
		h := hooks[i]
		if job.Hook != h.Phase {
			t.Errorf("hook Job of %s: label migration.planrun.dev/hook=%q, want %s", job.Step, job.Hook, h.Phase)
		}
		msg := camHookMessage(h)
		if job.Namespace != camHookNS || job.Image != camHookImage || job.ServiceAccount != camHookSA || job.BackoffLimit != 6 ||
			!slices.Equal(job.Command, []string{"echo"}) || !slices.Equal(job.Args, []string{msg}) {
			t.Errorf("hook Job of %s: %+v; want namespace %s, image %s, service account %s, backoffLimit 6, command [echo], args [%s]",
				h.Step, job, camHookNS, camHookImage, camHookSA, msg)
		}
		if len(job.Pods) != 1 || !strings.HasSuffix(job.Pods[0], " Succeeded localhost") {
			t.Errorf("hook Job of %s on the %s: pods %v, want one Succeeded on its node", h.Step, job.Cluster, job.Pods)
			continue
		}
		pod, _, _ := strings.Cut(job.Pods[0], " ")
		if got := job.Logs[pod]; got != msg+"\n" {
			t.Errorf("hook %s: pod %s printed %q, want %q", h.Step, pod, got, msg+"\n")
		}
		out := camStep(t, j, h.Step).Outputs
		logs, _ := out["logs"].([]any)
		dir, _ := out["logDir"].(string)
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(e.dir, dir) // planrun ran there
		}
		if len(logs) != 1 || fmt.Sprint(logs[0]) != pod+".log" {
			t.Errorf("hook %s: logs kept %v, want %s.log", h.Step, logs, pod)
			continue
		}
		if b, err := os.ReadFile(filepath.Join(dir, pod+".log")); err != nil || string(b) != msg+"\n" {
			t.Errorf("hook %s: the log planrun kept: %q (%v), want %q", h.Step, b, err, msg+"\n")
		}
	}
}

// camAssertHooks checks that the four hooks ran (camAssertHookJobs) around the right steps of
// the run r.
func camAssertHooks(t *testing.T, e *camEnv, r plantest.Result) {
	t.Helper()
	camAssertHookJobs(t, e, e.hooks.Seen(t), camHooks, loadJournal(t, e.dir, r.Events[0].RunID))
	// Around the right steps: the order in which steps finished.
	var order []string
	for _, ev := range r.Events {
		if ev.Type == engine.EventStepSucceeded {
			order = append(order, ev.StepID)
		}
	}
	wantOrder := []string{"pre-backup-hook", "backup", "verify-backup", "post-backup-hook", "quiesce", "retain-source-volumes", "pre-restore-hook", "restore", "post-restore-hook"}
	var seen []string
	for _, s := range order {
		if slices.Contains(wantOrder, s) {
			seen = append(seen, s)
		}
	}
	if !slices.Equal(seen, wantOrder) {
		t.Errorf("steps finished in the order %v, want %v", seen, wantOrder)
	}
}

// TestCAMFinalMigrateMove: a final migrate with PV move, a namespace mapping and the four hooks.
func TestCAMFinalMigrateMove(t *testing.T) {
	e := startCAM(t)
	before := camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))
	t.Logf("source: %d objects (%d to migrate)", len(before), len(camSourceObjects(before)))
	// Right after the quiesce, before anything reaches the target, no pod of the application
	// runs on the source any more.
	var afterQuiesce []string
	e.watch = func(ev engine.Event) {
		if ev.Type == engine.EventStepStarted && ev.StepID == "retain-source-volumes" {
			for _, ns := range camNamespaces {
				pods, err := e.scs.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{})
				if err != nil {
					afterQuiesce = append(afterQuiesce, err.Error())
				}
				for _, p := range pods.Items {
					if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
						afterQuiesce = append(afterQuiesce, ns+"/"+p.Name)
					}
				}
			}
			afterQuiesce = append(afterQuiesce, "listed")
		}
	}
	r := e.run(t, nil, false, e.applyArgs("final", append([]string{"--set", "pvAction=move"}, camHookArgs()...)...)...)
	if r.Code != 0 {
		t.Fatalf("apply exited %d\n%s", r.Code, r)
	}
	if !slices.Equal(afterQuiesce, []string{"listed"}) {
		t.Errorf("source pods when the quiesce had finished: %v; want none", afterQuiesce)
	}
	// The application runs on the target: its controllers made the pods again, on the claims
	// of the moved volumes (bound by then); on the source it stays stopped.
	e.waitRunning(t, e.dcs, camMapNS)
	e.assertSourceStopped(t)
	camAssertMigrated(t, e, before, camExpect{pvAction: "move"})
	camAssertHooks(t, e, r)
	j := loadJournal(t, e.dir, "final")
	if out := camStep(t, j, "pod-limit").Outputs; out["ok"] != true {
		t.Errorf("pod-limit outputs %v", out)
	}
	if out := camStep(t, j, "restore").Outputs; plantest.Num(t, out, "failed") != 0 || plantest.Num(t, out, "restored") < 150 {
		t.Errorf("restore outputs %v", out)
	}
	// Every workload quiesced; Retain on the volumes of the Bound claims only (not on the one
	// camPendingClaim names, which does not exist: it would be outputs.missing).
	if out := camStep(t, j, "quiesce").Outputs; plantest.Num(t, out, "count") != camWorkloads || plantest.Num(t, out, "changed") != camWorkloads {
		t.Errorf("quiesce outputs count %v changed %v, want %d", out["count"], out["changed"], camWorkloads)
	}
	if out := camStep(t, j, "retain-source-volumes").Outputs; plantest.Num(t, out, "count") != camBoundPVs || out["missing"] != nil && normalized(out["missing"]) != "[]" {
		t.Errorf("retain-source-volumes outputs count %v missing %v, want %d bound volumes and none missing", out["count"], out["missing"], camBoundPVs)
	}
}

// TestCAMStageThenFinalCopy: two stages (the application keeps running, only Namespaces and
// claims on the target, new volumes of the storage class asked for), a change on the source,
// then the final migrate, which converges over what the stages created. No hooks: they are
// skipped. The backups go through a replication repository, an S3 bucket, with its keys in a
// Secret on the source cluster as MTC keeps them; each run replaces the previous backup there.
func TestCAMStageThenFinalCopy(t *testing.T) {
	e := startCAM(t)
	repo := s3test.StartForTest(t)
	if err := repo.CreateBucket("replication"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.scs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "openshift-migration"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.scs.CoreV1().Secrets("openshift-migration").Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "migstorage-creds"},
		StringData: map[string]string{"aws-access-key-id": repo.AccessKey, "aws-secret-access-key": repo.SecretKey}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))
	// volumeData=false: the claims are recreated empty (NFS volumes: nothing a mover pod could
	// mount here); TestCAMMigratesVolumeData copies data.
	copyArgs := []string{"--set", "pvAction=copy", "--set", "volumeData=false", "--set", "storageClass=fast-ceph",
		"--set", "repository=" + repo.URL("replication", "shop-and-search"), "--set", "repositoryCredentials={namespace: openshift-migration, name: migstorage-creds}"}
	defer func() {
		// The backups went to the repository, none to the local folder, and the repository's
		// key is nowhere in the runs' files.
		if _, err := os.Stat(filepath.Join(e.dir, "cam-backup")); !os.IsNotExist(err) {
			t.Errorf("a local backup folder was written (%v)", err)
		}
		if _, err := repo.Client().HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String("replication"), Key: aws.String("shop-and-search/manifest.json")}); err != nil {
			t.Errorf("no backup manifest in the repository: %v", err)
		}
		plantest.NoSecrets(t, e.dir, "", repo.SecretKey)
	}()
	for _, id := range []string{"stage-1", "stage-2"} {
		r := e.run(t, nil, false, e.applyArgs(id, append([]string{"--set", "stage=true"}, copyArgs...)...)...)
		if r.Code != 0 {
			t.Fatalf("%s exited %d\n%s", id, r.Code, r)
		}
		camAssertMigrated(t, e, before, camExpect{pvAction: "copy", storageClass: "fast-ceph", stage: true})
		j := loadJournal(t, e.dir, id)
		// A stage restores with restore-claims only; volumeData=false copies no data.
		skipped := []string{"quiesce", "retain-source-volumes", "restore", "copy-volumes"}
		for _, h := range camHooks {
			skipped = append(skipped, h.Step)
		}
		for _, s := range skipped {
			if st := camStep(t, j, s).Status; st != engine.StepSkipped {
				t.Errorf("%s: step %s %s, want Skipped", id, s, st)
			}
		}
		// A stage does not stop the application.
		for _, ns := range camNamespaces {
			if pods := camRunningPods(t, e.scs, ns); len(pods) != e.pods[ns] || slices.ContainsFunc(pods, func(p string) bool { return !strings.HasSuffix(p, " Running") }) {
				t.Errorf("%s: source pods of %s: %v; want its %d pods Running", id, ns, pods, e.pods[ns])
			}
		}
	}
	if jobs, left := e.hooks.Seen(t), e.hookJobs(t); len(jobs) != 0 || len(left) != 0 {
		t.Errorf("hooks left empty ran: %v, Jobs %v", jobs, left)
	}
	// The application changes between the stages and the final migrate.
	cm, err := e.scs.CoreV1().ConfigMaps("search").Get(t.Context(), "config-07", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["settings.yaml"] = "changed: after the stages\n"
	if _, err := e.scs.CoreV1().ConfigMaps("search").Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A patch: the claim's controllers write its status meanwhile, so an update could conflict.
	if _, err := e.scs.CoreV1().PersistentVolumeClaims("shop").Patch(t.Context(), "uploads", types.MergePatchType, []byte(`{"metadata":{"labels":{"tier":"gold"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	before = camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))
	r := e.run(t, nil, false, e.applyArgs("final", copyArgs...)...)
	if r.Code != 0 {
		t.Fatalf("final exited %d\n%s", r.Code, r)
	}
	camAssertMigrated(t, e, before, camExpect{pvAction: "copy", storageClass: "fast-ceph"})
	e.assertSourceStopped(t)
	// volumeData=false: the final migrate restores everything in one step, as before the plan
	// copied data.
	jf := loadJournal(t, e.dir, "final")
	for _, s := range []string{"restore-claims", "copy-volumes"} {
		if st := camStep(t, jf, s).Status; st != engine.StepSkipped {
			t.Errorf("final with volumeData=false: step %s %s, want Skipped", s, st)
		}
	}
	// The claims the stages created are kept: the unchanged ones as they are, the changed one
	// updated.
	out := camStep(t, jf, "restore").Outputs
	claims := camMapAt(out, "resources", "persistentvolumeclaims")
	if normalized(claims) != `{"failed":0,"restored":0,"skipped":9,"updated":1}` {
		t.Errorf("final restore of the staged claims: %v; want 9 skipped (unchanged) and 1 updated", claims)
	}
}

// TestCAMKilledAndResumed: planrun is SIGKILLed in the middle of the restore (at its first
// progress event past a quarter of the objects); the resumed run recognises what the killed one
// created, restores the rest and reaches the same end state as one that was not killed.
func TestCAMKilledAndResumed(t *testing.T) {
	e := startCAM(t)
	before := camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))
	want := camExpect{pvAction: "move"}
	restores := map[string]bool{} // target keys of what the restore creates
	for k := range camSourceObjects(before) {
		if camRestored(k, want) {
			restores[camTargetKey(k)] = true
		}
	}
	total := len(restores)
	args := e.applyArgs("r", append([]string{"--set", "pvAction=move", "--set", "restoreWorkers=1"}, camHookArgs()...)...)
	// The restore reports progress every 250 ms; with one worker the first report comes with
	// about half of the objects done: kill at the first report past a quarter.
	kill := &plantest.KillPoint{Event: engine.EventStepProgress, Step: "restore", MinDone: int64(total / 4)}
	r := e.run(t, kill, false, args...)
	if !r.Killed {
		t.Fatalf("not killed during the restore at %s (exit %d)\n%s", kill, r.Code, r)
	}
	if st := camStep(t, loadJournal(t, e.dir, "r"), "restore").Status; st != engine.StepRunning {
		t.Fatalf("killed with the restore %s", st)
	}
	// Half-done: more than the Namespaces (created first), not all, of what the restore creates
	// is on the target. (A restore so fast that it ends before its first progress report
	// would fail here, not pass without a resume to test.)
	mapped := []string{}
	for _, ns := range camNamespaces {
		mapped = append(mapped, camMapNS(ns))
	}
	partial := 0
	for tk := range camSnapshot(t, e.dst, mapped) {
		if restores[tk] {
			partial++
		}
	}
	if partial <= len(camNamespaces) || partial >= total {
		t.Fatalf("killed at %s with %d of the %d objects on the target; want a restore half-done", kill, partial, total)
	}
	t.Logf("killed at %s with %d of the %d objects on the target", kill, partial, total)

	r = e.run(t, nil, false, "resume", "r", "--break-lock", "--kubeconfig", e.src.Kubeconfig)
	if r.Code != 0 {
		t.Fatalf("resume exited %d\n%s", r.Code, r)
	}
	j := loadJournal(t, e.dir, "r")
	if j.Status != engine.RunSucceeded {
		t.Fatalf("run %s", j.Status)
	}
	// The resumed restore recognised what the killed one created and restored the rest.
	out := camStep(t, j, "restore").Outputs
	already, restored := plantest.Num(t, out, "alreadyRestored"), plantest.Num(t, out, "restored")
	if already == 0 || restored == 0 || plantest.Num(t, out, "failed") != 0 {
		t.Errorf("resumed restore outputs alreadyRestored %d, restored %d, failed %v; want both parts of the restore, none failed", already, restored, out["failed"])
	}
	t.Logf("resumed restore: %d already restored by the killed attempt, %d restored", already, restored)
	e.waitRunning(t, e.dcs, camMapNS)
	e.assertSourceStopped(t)
	camAssertMigrated(t, e, before, want)
	// Each hook ran once, over the killed run and the resumed one: one Job each, still there.
	camAssertHookJobs(t, e, e.hooks.Seen(t), camHooks, j)
	if jobs := e.hookJobs(t); len(jobs) != len(camHooks) {
		t.Errorf("hook Jobs on the clusters: %v, want one per hook", jobs)
	}
}

// TestCAMRollsBack: the target refuses one object (an admission policy), after the source was
// quiesced and its volumes set to Retain; the run rolls back and leaves the source as it was
// and nothing of the run on the target.
func TestCAMRollsBack(t *testing.T) {
	e := startCAM(t)
	ctx := t.Context()
	policy := &admissionv1.ValidatingAdmissionPolicy{ObjectMeta: metav1.ObjectMeta{Name: "no-legacy-settings"},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: new(admissionv1.Fail),
			MatchConstraints: &admissionv1.MatchResources{ResourceRules: []admissionv1.NamedRuleWithOperations{{RuleWithOperations: admissionv1.RuleWithOperations{
				Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
				Rule:       admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}}}}}},
			Validations: []admissionv1.Validation{{Expression: "object.metadata.name != '" + camRefusedCM + "'", Message: camRefusedCM + " is not allowed on this cluster"}},
		}}
	if _, err := e.dcs.AdmissionregistrationV1().ValidatingAdmissionPolicies().Create(ctx, policy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{ObjectMeta: metav1.ObjectMeta{Name: "no-legacy-settings"},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{PolicyName: policy.Name, ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny}}}
	if _, err := e.dcs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, err := e.dcs.CoreV1().ConfigMaps(camHookNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: camRefusedCM}}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the admission policy never took effect")
		}
		time.Sleep(200 * time.Millisecond)
	}
	before := camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))
	targetBefore := camSnapshot(t, e.dst, []string{camMappedShop, "payments", "search", camOtherNS})
	r := e.run(t, nil, false, e.applyArgs("r", append([]string{"--set", "pvAction=move"}, camHookArgs()...)...)...)
	if r.Code != 1 {
		t.Fatalf("apply exited %d, want 1\n%s", r.Code, r)
	}
	j := loadJournal(t, e.dir, "r")
	if j.Status != engine.RunRolledBack {
		t.Fatalf("run %s, want RolledBack\n%s", j.Status, r)
	}
	if rec := camStep(t, j, "restore"); rec.Status != engine.StepFailed || !strings.Contains(rec.Error, "ConfigMap payments/"+camRefusedCM) ||
		!strings.Contains(rec.Error, camRefusedCM+" is not allowed on this cluster") || !strings.Contains(rec.Error, "deleted again (undoOnFailure)") {
		t.Errorf("restore %s: %s", rec.Status, rec.Error)
	}
	for _, s := range []string{"quiesce", "retain-source-volumes", camHooks[0].Step, camHooks[1].Step, camHooks[2].Step} {
		if st := camStep(t, j, s).Status; st != engine.StepRolledBack {
			t.Errorf("step %s %s, want RolledBack", s, st)
		}
	}
	// The quiesce had stopped every workload (the Job, the DaemonSet and the ReplicaSet without
	// owner among them) before the rollback gave them back.
	stopped := map[string]int{}
	objs, _ := camStep(t, j, "quiesce").Outputs["objects"].([]any)
	for _, o := range objs {
		if rec, _ := o.(map[string]any); rec["changed"] == true {
			stopped[camStrAt(rec, "kind")]++
		}
	}
	if len(objs) != camWorkloads || stopped["Job"] != 1 || stopped["DaemonSet"] != 1 || stopped["ReplicaSet"] != 1 || stopped["CronJob"] != len(camNamespaces) {
		t.Errorf("quiesce stopped %v of %d workloads, want all %d: a Job, a DaemonSet, a ReplicaSet, %d CronJobs among them", stopped, len(objs), camWorkloads, len(camNamespaces))
	}
	// The source as it was: replicas, parallelism, node selectors, CronJobs, reclaim policies,
	// everything (the server's and the controllers' bookkeeping aside), its pods running again;
	// no hook Job left on either cluster, nor their pods.
	for _, k := range []string{"batch/jobs " + camNamespaces[2] + "/reindex", "apps/daemonsets " + camNamespaces[2] + "/log-agent", "apps/replicasets " + camNamespaces[2] + "/legacy-worker"} {
		if before[k] == nil {
			t.Errorf("source: no %s seeded", k)
		}
	}
	same := func(ns string) string { return ns }
	e.waitRunning(t, e.scs, same)
	after := camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))
	for k, o := range before {
		if camNotRestored[camKeyResource(k)] {
			continue // the pods and the like are new ones
		}
		a, ok := after[k]
		if !ok {
			t.Errorf("source: %s is gone", k)
			continue
		}
		if normalized(camStripServer(o)) != normalized(camStripServer(a)) {
			t.Errorf("source: %s not as it was:\n before %s\n after  %s", k, normalized(camStripServer(o)), normalized(camStripServer(a)))
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok && !camNotRestored[camKeyResource(k)] {
			t.Errorf("source: %s was added", k)
		}
	}
	if left := e.hookJobs(t); len(left) != 0 {
		t.Errorf("hook Jobs left: %v", left)
	}
	camAssertHookJobs(t, e, e.hooks.Seen(t), camHooks[:3], j)
	for _, cs := range []kubernetes.Interface{e.scs, e.dcs} {
		waitPods(t, cs, camHookNS, "migration.planrun.dev/hook", 0) // the collector deletes the deleted Jobs' pods
	}
	// The target: nothing the run created; the namespaces it created finish terminating.
	mapped := []string{camMappedShop, "payments", "search"}
	e.waitNamespacesGone(t, mapped)
	poll(t, "the target without what the run created", func() (bool, string, error) {
		var left []string
		for k := range camSnapshot(t, e.dst, append(slices.Clone(mapped), camOtherNS)) {
			if _, ok := targetBefore[k]; !ok {
				left = append(left, k)
			}
		}
		return len(left) == 0, fmt.Sprint(left), nil
	})

	// Rolled back after the restore: the application's pods ran on the target when the operator
	// gave up during the PostRestore hook (deleting its Job). The namespaces the restore created
	// are deleted with their running pods, and finish terminating; the source runs again.
	if err := e.dcs.AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Delete(ctx, binding.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the admission policy lifted", func() (bool, string, error) {
		_, err := e.dcs.CoreV1().ConfigMaps(camHookNS).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: camRefusedCM}}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil, fmt.Sprint(err), nil
	})
	hookArgs := camHookArgs()
	if !strings.HasPrefix(hookArgs[len(hookArgs)-1], camHooks[3].Param+"=") {
		t.Fatalf("the last hook param is not %s: %s", camHooks[3].Param, hookArgs[len(hookArgs)-1])
	}
	hookArgs[len(hookArgs)-1] = strings.Replace(camHookParam(camHooks[3], `[sleep]`, `["3600"]`), "timeout: 2m", "timeout: 10m", 1)
	var ranOnTarget []string
	var abortErr error
	e.watch = func(ev engine.Event) {
		if ev.Type != engine.EventStepStarted || ev.StepID != camHooks[3].Step {
			return
		}
		abortErr = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			ranOnTarget = nil
			for _, ns := range mapped {
				pods, ready, err := podsOf(ctx, e.dcs, ns, "")
				if err != nil || ready == 0 {
					return false, err
				}
				ranOnTarget = append(ranOnTarget, fmt.Sprintf("%s: %v", ns, pods))
			}
			jobs, err := e.dcs.BatchV1().Jobs(camHookNS).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err
			}
			for _, job := range jobs.Items {
				if job.Annotations["planrun.dev/run"] == "r2" && job.Annotations["planrun.dev/step"] == camHooks[3].Step {
					return true, e.dcs.BatchV1().Jobs(camHookNS).Delete(ctx, job.Name, metav1.DeleteOptions{PropagationPolicy: new(metav1.DeletePropagationBackground)})
				}
			}
			return false, nil
		})
	}
	r = e.run(t, nil, false, e.applyArgs("r2", append([]string{"--set", "pvAction=move"}, hookArgs...)...)...)
	e.watch = nil
	if abortErr != nil {
		t.Fatalf("waiting for the application's pods on the target, then aborting the PostRestore hook: %v (pods %v)", abortErr, ranOnTarget)
	}
	t.Logf("running on the target when the hook was aborted: %v", ranOnTarget)
	if r.Code != 1 {
		t.Fatalf("second apply exited %d, want 1\n%s", r.Code, r)
	}
	j = loadJournal(t, e.dir, "r2")
	if j.Status != engine.RunRolledBack {
		t.Fatalf("second run %s, want RolledBack\n%s", j.Status, r)
	}
	if rec := camStep(t, j, camHooks[3].Step); rec.Status != engine.StepFailed || !strings.Contains(rec.Error, "was deleted while waiting for it") {
		t.Errorf("%s %s: %s; want failed, its Job deleted", camHooks[3].Step, rec.Status, rec.Error)
	}
	if st := camStep(t, j, "restore").Status; st != engine.StepRolledBack {
		t.Errorf("second run: restore %s, want RolledBack", st)
	}
	e.waitNamespacesGone(t, mapped)
	e.waitRunning(t, e.scs, same)
}

// TestCAMDryRunThenLimits shares one pair of clusters: the dry run changes nothing, so the
// limits find them as seeded.
func TestCAMDryRunThenLimits(t *testing.T) {
	e := startCAM(t)
	if !t.Run("dry run", func(t *testing.T) { camDryRun(t, e) }) {
		return
	}
	t.Run("limits", func(t *testing.T) { camLimits(t, e) })
}

// camDryRun changes nothing on either cluster and says what would happen.
func camDryRun(t *testing.T, e *camEnv) {
	namespaces := append(slices.Clone(camNamespaces), camOtherNS, camHookNS)
	srcBefore := camSnapshot(t, e.src, namespaces)
	dstBefore := camSnapshot(t, e.dst, append(namespaces, camMappedShop))
	r := e.run(t, nil, true, e.applyArgs("r", append([]string{"--dry-run", "--set", "pvAction=move"}, camHookArgs()...)...)...)
	if r.Code != 0 {
		t.Fatalf("dry run exited %d\n%s", r.Code, r)
	}
	t.Logf("dry run output:\n%s", r.Stdout)
	// What each step would do, then that it did not.
	wantLines := []string{
		"▶ backup (kube.backup): back up all resources in namespaces " + strings.Join(camNamespaces, ", ") + " with their bound PersistentVolumes to ./cam-backup",
		"✔ backup dry run: not applied",
		"✔ verify-backup done",
		"▶ quiesce (kube.quiesce): quiesce the workloads of namespace(s) [" + strings.Join(camNamespaces, " ") + "]",
		"✔ quiesce dry run: not applied",
		fmt.Sprintf("▶ retain-source-volumes (kube.patch): merge patch %d PersistentVolume object(s)", camBoundPVs),
		"✔ retain-source-volumes dry run: not applied",
		"✔ restore dry run: not applied",
	}
	for _, h := range camHooks {
		wantLines = append(wantLines, fmt.Sprintf("▶ [%s] %s (kube.job): run Job %s/(generated) with image %s", h.Phase, h.Step, camHookNS, camHookImage),
			fmt.Sprintf("✔ [%s] %s dry run: not applied", h.Phase, h.Step))
	}
	for _, want := range wantLines {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("the dry run does not say %q", want)
		}
	}
	// The same with -o json: what the steps found, in their outputs.
	r = e.run(t, nil, false, e.applyArgs("r", append([]string{"--dry-run", "--set", "pvAction=move"}, camHookArgs()...)...)...)
	if r.Code != 0 {
		t.Fatalf("dry run -o json exited %d\n%s", r.Code, r)
	}
	outs := map[string]engine.Outputs{}
	for _, ev := range r.Events {
		if ev.Type == engine.EventStepSucceeded {
			outs[ev.StepID] = ev.Outputs
		}
	}
	if out := outs["quiesce"]; out["dryRun"] != true || plantest.Num(t, out, "count") != camWorkloads || plantest.Num(t, out, "changed") != camWorkloads {
		t.Errorf("quiesce outputs %v; want dryRun, count and changed %d (the workloads)", out, camWorkloads)
	}
	if out := outs["retain-source-volumes"]; out["dryRun"] != true || plantest.Num(t, out, "count") != camBoundPVs || out["missing"] != nil && normalized(out["missing"]) != "[]" {
		t.Errorf("retain-source-volumes outputs %v; want dryRun, count %d (the bound volumes), none missing", out, camBoundPVs)
	}
	var pvs []string
	for k, o := range camSourceObjects(srcBefore) {
		if camKeyResource(k) == "/persistentvolumes" && camStrAt(o, "status", "phase") == "Bound" {
			pvs = append(pvs, camStrAt(o, "metadata", "name"))
		}
	}
	var patched []string
	list, _ := outs["retain-source-volumes"]["patched"].([]any)
	for _, p := range list {
		m, _ := p.(map[string]any)
		patched = append(patched, camStrAt(m, "name"))
	}
	slices.Sort(pvs)
	slices.Sort(patched)
	if len(pvs) != camBoundPVs || !slices.Equal(patched, pvs) {
		t.Errorf("retain-source-volumes would patch %v, want the %d bound volumes %v", patched, camBoundPVs, pvs)
	}
	// The backup would take every object of the namespaces (events aside, and v1 Endpoints,
	// left to their EndpointSlices), their Namespaces and bound volumes.
	wantBackup := 0
	for k := range camSourceObjects(srcBefore) {
		if camKeyResource(k) != "/endpoints" {
			wantBackup++
		}
	}
	if out := outs["backup"]; out["dryRun"] != true || plantest.Num(t, out, "objects") != int64(wantBackup) {
		t.Errorf("backup outputs %v; want dryRun and %d objects", out, wantBackup)
	}
	// The verify checks the backup the dry run took (into a temporary folder), and the restore
	// says what it would create on the target, each object validated there by a server-side
	// dry run: everything the backup holds, nothing failing.
	backupObjects := plantest.Num(t, outs["backup"], "objects")
	if out := outs["verify-backup"]; plantest.Num(t, out, "objects") != backupObjects {
		t.Errorf("verify-backup outputs %v; want the %d objects of the dry run's backup", out, backupObjects)
	}
	if out := outs["restore"]; out["dryRun"] != true || plantest.Num(t, out, "failed") != 0 || plantest.Num(t, out, "restored") == 0 ||
		plantest.Num(t, out, "restored")+plantest.Num(t, out, "updated")+plantest.Num(t, out, "skipped") > backupObjects {
		t.Errorf("restore outputs %v; want a dry run that would restore the backup's objects (%d at most) with none failing", out, backupObjects)
	} else {
		t.Logf("the dry-run restore would restore %v, update %v, skip %v", out["restored"], out["updated"], out["skipped"])
	}
	// With pvAction copy (the default) before any stage, the target has none of the namespaces
	// yet (a dry run's restore-claims creates nothing): copy-volumes checks the source side of
	// each claim and the repository, warns that the target side waits for its namespaces, and
	// says what it would copy. Nothing is written to the repository.
	repo := s3test.StartForTest(t)
	if err := repo.CreateBucket("replication"); err != nil {
		t.Fatal(err)
	}
	for _, kv := range repo.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	r = e.run(t, nil, false, e.applyArgs("r", "--dry-run", "--set", "volumeRepository="+repo.URL("replication", "volumes"))...)
	if r.Code != 0 {
		t.Fatalf("dry run with pvAction copy exited %d\n%s", r.Code, r)
	}
	var warned []string
	status := map[string]engine.EventType{}
	var summary any
	for _, ev := range r.Events {
		if ev.Type == engine.EventStepWarning && ev.StepID == "copy-volumes" {
			warned = append(warned, ev.Message)
		}
		if ev.Type == engine.EventStepSucceeded && ev.StepID == "copy-volumes" {
			summary = ev.Outputs["summary"]
		}
		if ev.Type == engine.EventStepSucceeded || ev.Type == engine.EventStepSkipped || ev.Type == engine.EventStepFailed {
			status[ev.StepID] = ev.Type
		}
	}
	t.Logf("dry run with pvAction copy: %v; warnings %q", summary, warned)
	if want := fmt.Sprintf("would copy %d volumes (", camBoundPVs); !strings.HasPrefix(fmt.Sprint(summary), want) {
		t.Errorf("dry run with pvAction copy: copy-volumes summary %q; want %q…", summary, want)
	}
	if len(warned) == 0 || !strings.Contains(strings.Join(warned, "\n"), "does not exist yet") {
		t.Errorf("dry run with pvAction copy: copy-volumes warned %q; want that the target namespaces do not exist yet", warned)
	}
	for step, want := range map[string]engine.EventType{"restore-claims": engine.EventStepSucceeded, "copy-volumes": engine.EventStepSucceeded, "restore": engine.EventStepSucceeded} {
		if status[step] != want {
			t.Errorf("dry run with pvAction copy: step %s %s, want %s", step, status[step], want)
		}
	}
	if list, err := repo.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String("replication")}); err != nil || len(list.Contents) != 0 {
		t.Errorf("a dry run wrote into the repository's bucket: %v", err)
	}
	for name, c := range map[string]struct {
		cp     *controlplane.ControlPlane
		before map[string]map[string]any
		ns     []string
	}{"source": {e.src, srcBefore, namespaces}, "target": {e.dst, dstBefore, append(namespaces, camMappedShop)}} {
		after := camSnapshot(t, c.cp, c.ns)
		if len(after) != len(c.before) {
			t.Errorf("%s: %d objects after the dry run, %d before", name, len(after), len(c.before))
		}
		for k, o := range c.before {
			if !camNotRestored[camKeyResource(k)] && normalized(o) != normalized(after[k]) { // the kubelets update their pods
				t.Errorf("%s: the dry run changed %s", name, k)
			}
		}
	}
	if jobs, left := e.hooks.Seen(t), e.hookJobs(t); len(jobs) != 0 || len(left) != 0 {
		t.Errorf("the dry run started Jobs: %v, %v", jobs, left)
	}
	for _, p := range []string{filepath.Join(e.dir, "runs", "r"), filepath.Join(e.dir, "cam-backup")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("the dry run left %s (%v)", p, err)
		}
	}
}

// camLimits: one over the namespace limit the plan refuses before anything is touched; one
// over the pod and PV limits it warns (a warning line in plain output, step.warning events and
// outputs.warning with -o json) and goes on; exactly at the three limits it neither refuses nor
// warns. Bound PVs are the Bound claims' (camBoundPVs): the Pending camPendingClaim, which names
// a volume too, does not count.
func camLimits(t *testing.T, e *camEnv) {
	ctx := t.Context()
	// The pods of the namespaces: those of their workloads, and 5 more without owner.
	const workers = 5
	pods := workers
	for _, n := range e.pods {
		pods += n
	}
	perNS := map[string]int{}
	for i := range workers {
		ns := camNamespaces[i%3]
		perNS[ns]++
		if _, err := e.scs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("worker-%d", i), Labels: map[string]string{"app": "worker"}},
			Spec: camRunPodSpec("w")}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for ns, n := range perNS {
		waitPods(t, e.scs, ns, "app=worker", n) // running, so that nothing changes while the runs compare
	}
	before := camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))

	r := e.run(t, nil, true, e.applyArgs("refused", "--set", fmt.Sprintf("namespaceLimit=%d", len(camNamespaces)-1))...)
	if r.Code != 1 {
		t.Fatalf("apply over the namespace limit exited %d, want 1\n%s", r.Code, r)
	}
	refusal := fmt.Sprintf("Namespace limit exceeded: %d namespaces, the limit is %d (param namespaceLimit)", len(camNamespaces), len(camNamespaces)-1)
	if !strings.Contains(r.Stdout+r.Stderr, refusal) {
		t.Errorf("output does not say %q:\n%s\n%s", refusal, r.Stdout, r.Stderr)
	}
	j := loadJournal(t, e.dir, "refused")
	for _, rec := range j.Steps {
		if want := engine.StepPending; rec.ID != "check-params" && rec.ID != "namespace-limit" && rec.Status != want {
			t.Errorf("refused run: step %s %s, want %s", rec.ID, rec.Status, want)
		}
	}
	if _, err := os.Stat(filepath.Join(e.dir, "cam-backup")); !os.IsNotExist(err) {
		t.Errorf("the refused run wrote a backup (%v)", err)
	}
	after := camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))
	for k, o := range before {
		if !camNotRestored[camKeyResource(k)] && normalized(o) != normalized(after[k]) { // the kubelets update their pods
			t.Errorf("the refused run changed %s", k)
		}
	}

	// Exactly at the three limits: no refusal, no warning.
	// pvAction copy (the default) with volumeData=false: the NFS volumes' claims are recreated
	// empty, without a repository.
	atLimits := []string{"--set", "stage=true", "--set", "volumeData=false", "--set", fmt.Sprintf("namespaceLimit=%d", len(camNamespaces)),
		"--set", fmt.Sprintf("podLimit=%d", pods), "--set", fmt.Sprintf("pvLimit=%d", camBoundPVs)}
	r = e.run(t, nil, false, e.applyArgs("at-limits", atLimits...)...)
	if r.Code != 0 {
		t.Fatalf("apply at the limits exited %d\n%s", r.Code, r)
	}
	for _, ev := range r.Events {
		if ev.Type == engine.EventStepWarning || ev.Outputs["warning"] != nil || strings.Contains(ev.Message, "exceeded") {
			t.Errorf("at the limits: %s %s: %q, outputs.warning %v", ev.Type, ev.StepID, ev.Message, ev.Outputs["warning"])
		}
	}
	j = loadJournal(t, e.dir, "at-limits")
	if st := camStep(t, j, "namespace-limit").Status; st != engine.StepSucceeded {
		t.Errorf("at the limits: step namespace-limit %s, want Succeeded", st)
	}
	for _, s := range []string{"pod-limit", "pv-limit"} {
		if rec := camStep(t, j, s); rec.Status != engine.StepSucceeded || rec.Outputs["ok"] != true || rec.Outputs["warning"] != nil {
			t.Errorf("at the limits: step %s %s, outputs %v; want Succeeded, ok, no warning", s, rec.Status, rec.Outputs)
		}
	}

	// One over the pod and PV limits: warnings, and the stage runs on.
	podWarning := fmt.Sprintf("Pod limit: %d exceeded, found: %d", pods-1, pods)
	pvWarning := fmt.Sprintf("Persistent volume limit: %d exceeded, found: %d", camBoundPVs-1, camBoundPVs)
	overLimits := []string{"--set", "stage=true", "--set", "volumeData=false", "--set", fmt.Sprintf("podLimit=%d", pods-1), "--set", fmt.Sprintf("pvLimit=%d", camBoundPVs-1)}
	r = e.run(t, nil, true, e.applyArgs("plain", overLimits...)...)
	if r.Code != 0 {
		t.Fatalf("apply over the pod and PV limits exited %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for step, w := range map[string]string{"pod-limit": podWarning, "pv-limit": pvWarning} {
		if !strings.Contains(r.Stdout, "⚠ "+step+": "+w) {
			t.Errorf("plain output: no warning line %q:\n%s", "⚠ "+step+": "+w, r.Stdout)
		}
	}
	r = e.run(t, nil, false, e.applyArgs("json", overLimits...)...)
	if r.Code != 0 {
		t.Fatalf("apply -o json exited %d\n%s", r.Code, r)
	}
	warnings, events := map[string]string{}, map[string]string{}
	for _, ev := range r.Events {
		if ev.Type == engine.EventStepSucceeded && ev.Outputs["warning"] != nil {
			warnings[ev.StepID] = fmt.Sprint(ev.Outputs["warning"])
		}
		if ev.Type == engine.EventStepWarning {
			events[ev.StepID] = ev.Message
		}
	}
	for what, got := range map[string]map[string]string{"outputs.warning": warnings, "step.warning events": events} {
		if !strings.HasPrefix(got["pod-limit"], podWarning) || !strings.HasPrefix(got["pv-limit"], pvWarning) || len(got) != 2 {
			t.Errorf("%s in the JSON output: %v; want %q and %q", what, got, podWarning, pvWarning)
		}
	}
	if st := camStep(t, loadJournal(t, e.dir, "json"), "restore-claims").Status; st != engine.StepSucceeded {
		t.Errorf("restore-claims %s after the warnings", st)
	}
	if _, err := e.dcs.CoreV1().PersistentVolumeClaims(camMappedShop).Get(ctx, "uploads", metav1.GetOptions{}); err != nil {
		t.Errorf("the stage did not run on after the warnings: %v", err)
	}
}
