package plans_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/controlplane"
	"planrun.dev/planrun/internal/plantest"
)

const (
	camPlan       = "cam-namespace-migration.yaml"
	camHookNS     = "migration-hooks"
	camHookSA     = "hook-runner"
	camNFSServer  = "nfs.example.com"
	camRefusedCM  = "legacy-settings" // in camNamespaces[1]; the target refuses it in TestCAMRollsBack
	camOtherNS    = "other"           // not migrated
	camHookImage  = "registry.example.com/migration/hook-runner:1.2"
	camMappedShop = "shop-migrated"
)

var (
	camNamespaces = []string{"shop", "payments", "search"}
	camMapping    = map[string]string{"shop": camMappedShop}
	camHooks      = map[string]string{"preBackupHook": "source", "postBackupHook": "source", "preRestoreHook": "target", "postRestoreHook": "target"}
	// camNotRestored are resources the plan leaves to the target's controllers.
	camNotRestored = map[string]bool{"/pods": true, "/endpoints": true, "discovery.k8s.io/endpointslices": true, "apps/controllerrevisions": true}
)

// camEnv is a source and a target cluster (each a kube-apiserver with its own etcd), the source
// seeded with namespaces to migrate, and a stand-in for the job controller on both.
type camEnv struct {
	dir      string
	src, dst *controlplane.ControlPlane
	scs, dcs kubernetes.Interface
	jobs     *camJobRunner
}

func startCAM(t *testing.T) *camEnv {
	t.Helper()
	cps := controlplane.StartManyForTest(t, 2)
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
	e.jobs = startCAMJobRunner(t, map[string]kubernetes.Interface{"source": e.scs, "target": e.dcs})
	return e
}

func camClient(cp *controlplane.ControlPlane) kubernetes.Interface {
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = -1, 0
	cfg.WarningHandler = rest.NoWarnings{}
	return kubernetes.NewForConfigOrDie(cfg)
}

// camSeed fills the source: per namespace a ServiceAccount, 50 ConfigMaps, 8 Secrets, a Role and
// its RoleBinding, a Service, 3 Deployments with status, each owning 2 ReplicaSets, a StatefulSet
// with status and its 2 claims, a third claim, the 3 claims bound to NFS PersistentVolumes, and
// a CronJob; and a namespace that is not migrated, with a claim and its volume.
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
			do(func() error { return camSeedDeployment(ctx, cs, ns, fmt.Sprintf("app-%d", d), int32(d+1)) })
		}
		do(func() error { return camSeedStatefulSet(ctx, cs, ns) })
		do(func() error {
			_, err := cs.BatchV1().CronJobs(ns).Create(ctx, &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "report"},
				Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
					Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "report", Image: "registry.example.com/report:3"}}}}}}}},
				metav1.CreateOptions{})
			return err
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("seeding the source: %d errors, first: %v", len(errs), errs[0])
	}
}

// camSeedVolume creates an NFS PersistentVolume and the claim bound to it, as the PV controller
// leaves them: claimRef with the claim's uid, both Bound, the bind annotations on the claim.
func camSeedVolume(ctx context.Context, cs kubernetes.Interface, ns, claim string, policy corev1.PersistentVolumeReclaimPolicy) error {
	pvName := "pv-" + ns + "-" + claim
	size := resource.MustParse("5Gi")
	pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claim, Labels: map[string]string{"app": "db"},
			Annotations: map[string]string{"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, VolumeName: pvName,
			StorageClassName: new(""), Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	pvc.Status = corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound, AccessModes: pvc.Spec.AccessModes, Capacity: corev1.ResourceList{corev1.ResourceStorage: size}}
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).UpdateStatus(ctx, pvc, metav1.UpdateOptions{}); err != nil {
		return err
	}
	pv, err := cs.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName, Labels: map[string]string{"storage": "nfs"}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			PersistentVolumeReclaimPolicy: policy,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: camNFSServer, Path: "/exports/" + ns + "/" + claim}},
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: ns, Name: claim, UID: pvc.UID, ResourceVersion: pvc.ResourceVersion},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	pv.Status = corev1.PersistentVolumeStatus{Phase: corev1.VolumeBound}
	_, err = cs.CoreV1().PersistentVolumes().UpdateStatus(ctx, pv, metav1.UpdateOptions{})
	return err
}

func camSeedDeployment(ctx context.Context, cs kubernetes.Interface, ns, name string, n int32) error {
	labels := map[string]string{"app": name}
	tmpl := func(image string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{ServiceAccountName: "app", Containers: []corev1.Container{{Name: name, Image: image,
				VolumeMounts: []corev1.VolumeMount{{Name: "uploads", MountPath: "/uploads"}}}},
				Volumes: []corev1.Volume{{Name: "uploads", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "uploads"}}}}}}
	}
	d, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: map[string]string{"deployment.kubernetes.io/revision": "2"}},
		Spec:       appsv1.DeploymentSpec{Replicas: &n, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl("registry.example.com/" + name + ":2")},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: n, ReadyReplicas: n, AvailableReplicas: n, UpdatedReplicas: n,
		Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue, Reason: "MinimumReplicasAvailable", Message: "Deployment has minimum availability."}}}
	if d, err = cs.AppsV1().Deployments(ns).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
		return err
	}
	for rev, replicas := range []int32{0, n} {
		r := replicas
		rs, err := cs.AppsV1().ReplicaSets(ns).Create(ctx, &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", name, rev+1), Labels: labels,
				Annotations:     map[string]string{"deployment.kubernetes.io/revision": fmt.Sprint(rev + 1)},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID, Controller: new(true), BlockOwnerDeletion: new(true)}}},
			Spec: appsv1.ReplicaSetSpec{Replicas: &r, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl(fmt.Sprintf("registry.example.com/%s:%d", name, rev+1))},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		rs.Status = appsv1.ReplicaSetStatus{Replicas: r, ReadyReplicas: r, AvailableReplicas: r, FullyLabeledReplicas: r, ObservedGeneration: 1}
		if _, err := cs.AppsV1().ReplicaSets(ns).UpdateStatus(ctx, rs, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	return nil
}

func camSeedStatefulSet(ctx context.Context, cs kubernetes.Interface, ns string) error {
	n := int32(2)
	labels := map[string]string{"app": "db"}
	s, err := cs.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Labels: labels},
		Spec: appsv1.StatefulSetSpec{Replicas: &n, ServiceName: "db", Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "registry.example.com/postgres:16",
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/var/lib/postgresql"}}}}}},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}, Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("5Gi")}}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	s.Status = appsv1.StatefulSetStatus{ObservedGeneration: 1, Replicas: n, ReadyReplicas: n, CurrentReplicas: n, UpdatedReplicas: n, AvailableReplicas: n, CurrentRevision: "db-1", UpdateRevision: "db-1"}
	_, err = cs.AppsV1().StatefulSets(ns).UpdateStatus(ctx, s, metav1.UpdateOptions{})
	return err
}

// camJobRunner stands in for the job controller on both clusters: it marks every new Job
// Complete, as the hook's pod would have made it, and records the order in which Jobs appeared.
type camJobRunner struct {
	mu   sync.Mutex
	seen []camJob
	fail map[string]bool // hook step ids whose Job fails
}

type camJob struct {
	Cluster, Step, Namespace, Name, Image, ServiceAccount string
	BackoffLimit                                          int32
	Command, Args                                         []string
}

func startCAMJobRunner(t *testing.T, clusters map[string]kubernetes.Interface) *camJobRunner {
	r := &camJobRunner{fail: map[string]bool{}}
	ctx := t.Context()
	done := make(chan struct{})
	go func() {
		defer close(done)
		handled := map[string]bool{}
		for ctx.Err() == nil {
			for cluster, cs := range clusters {
				l, err := cs.BatchV1().Jobs("").List(ctx, metav1.ListOptions{})
				if err != nil {
					continue
				}
				for _, j := range l.Items {
					key := cluster + "/" + string(j.UID)
					if handled[key] {
						continue
					}
					handled[key] = true
					step := j.Annotations["planrun.dev/step"]
					c := j.Spec.Template.Spec.Containers[0]
					r.mu.Lock()
					r.seen = append(r.seen, camJob{Cluster: cluster, Step: step, Namespace: j.Namespace, Name: j.Name, Image: c.Image,
						ServiceAccount: j.Spec.Template.Spec.ServiceAccountName, BackoffLimit: *j.Spec.BackoffLimit, Command: c.Command, Args: c.Args})
					fail := r.fail[step]
					r.mu.Unlock()
					now := metav1.Now()
					j.Status.StartTime = &now
					if fail {
						j.Status.Failed = 7
						j.Status.Conditions = []batchv1.JobCondition{
							{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit"},
							{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now, Reason: "BackoffLimitExceeded", Message: "Job has reached the specified backoff limit"}}
					} else {
						j.Status.Succeeded, j.Status.CompletionTime = 1, &now
						j.Status.Conditions = []batchv1.JobCondition{
							{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now, Reason: "CompletionsReached"},
							{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now, LastProbeTime: now, Reason: "CompletionsReached"}}
					}
					if _, err := cs.BatchV1().Jobs(j.Namespace).UpdateStatus(ctx, &j, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
						t.Logf("job stand-in: %s %s/%s: %v", cluster, j.Namespace, j.Name, err)
						handled[key] = false
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { <-done })
	return r
}

func (r *camJobRunner) Seen() []camJob {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

// camHookArgs sets the four hooks, each a Job in camHookNS run by camHookSA.
func camHookArgs() []string {
	var args []string
	for _, p := range []string{"preBackupHook", "postBackupHook", "preRestoreHook", "postRestoreHook"} {
		args = append(args, "--set", fmt.Sprintf("%s={image: %s, namespace: %s, serviceAccount: %s, command: [ansible-runner], args: [run, %s.yml], timeout: 2m}",
			p, camHookImage, camHookNS, camHookSA, p))
	}
	return args
}

func (e *camEnv) applyArgs(runID string, extra ...string) []string {
	plan, _ := filepath.Abs(camPlan)
	m, _ := json.Marshal(camMapping)
	args := []string{"apply", plan, "--kubeconfig", e.src.Kubeconfig, "--run-id", runID,
		"--set", "namespaces=[" + strings.Join(camNamespaces, ", ") + "]", "--set", "namespaceMapping=" + string(m)}
	return append(args, extra...)
}

func (e *camEnv) run(t *testing.T, k *plantest.KillPoint, plain bool, args ...string) plantest.Result {
	t.Helper()
	return plantest.RunBinary(t, planrunBin, e.dir, plantest.RunOptions{Kill: k, Plain: plain}, args...)
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
			ref, _ := o["spec"].(map[string]any)["claimRef"].(map[string]any)
			if ref != nil && slices.Contains(camNamespaces, ref["namespace"].(string)) {
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
// generation; the uid of owner references; a Service's cluster IPs), the namespace mapped when
// mapNS is given, claims and volumes without their binding state (status, bind annotations,
// a claimRef's uid).
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
			ref["namespace"] = mapNS(ref["namespace"].(string))
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

// camAssertMigrated checks the end state field by field: every source object the plan migrates
// is on the target as it was on the source (namespace mapped, server fields aside, owner
// references to the target's new UIDs, status restored, replicas as they were before the
// quiesce), nothing else of the source namespaces is; volumes moved or left for the target to
// provision; the source quiesced with its volumes on Retain after a final migrate, untouched
// after a stage.
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
	for k, o := range src {
		gr := camKeyResource(k)
		if camNotRestored[gr] || want.pvAction == "copy" && gr == "/persistentvolumes" ||
			want.stage && gr != "/namespaces" && gr != "/persistentvolumeclaims" {
			continue
		}
		tk := camTargetKey(k)
		wantKeys[tk] = true
		got, ok := target[tk]
		if !ok {
			problem("target: %s missing (source %s)", tk, k)
			continue
		}
		w := normalized(camNorm(gr, o, camMapNS, want.pvAction, want.storageClass))
		g := normalized(camNorm(gr, got, nil, "", ""))
		if w != g {
			problem("target: %s differs from the source's %s:\n want %s\n got  %s", tk, k, w, g)
		}
		if md := got["metadata"].(map[string]any); md["uid"] == o["metadata"].(map[string]any)["uid"] {
			problem("target: %s has the source's UID", tk)
		}
	}
	for tk := range target {
		if !wantKeys[tk] {
			problem("target: %s was not asked for", tk)
		}
	}
	// Owner references point at the owners created on the target.
	owners := 0
	for tk, o := range target {
		md := o["metadata"].(map[string]any)
		refs, _ := md["ownerReferences"].([]any)
		for _, r := range refs {
			ref := r.(map[string]any)
			owner, ok := target["apps/deployments "+md["namespace"].(string)+"/"+ref["name"].(string)]
			if !ok || ref["uid"] != owner["metadata"].(map[string]any)["uid"] {
				problem("target: %s: owner reference %v does not point at the target's Deployment", tk, ref)
			}
			owners++
		}
	}
	if !want.stage && owners != 6*len(camNamespaces) {
		problem("target: %d owner references, want %d (2 ReplicaSets per Deployment)", owners, 6*len(camNamespaces))
	}
	// Replicas on the target are the source's before the quiesce.
	for k, o := range src {
		if gr := camKeyResource(k); !want.stage && (gr == "apps/deployments" || gr == "apps/statefulsets") {
			wantR := o["spec"].(map[string]any)["replicas"]
			if got := target[camTargetKey(k)]["spec"].(map[string]any)["replicas"]; fmt.Sprint(got) != fmt.Sprint(wantR) || fmt.Sprint(got) == "0" {
				problem("target: %s replicas %v, want %v", camTargetKey(k), got, wantR)
			}
		}
	}
	// Volumes.
	for k, o := range src {
		switch camKeyResource(k) {
		case "/persistentvolumes":
			spec := o["spec"].(map[string]any)
			ref := spec["claimRef"].(map[string]any)
			if want.pvAction == "move" && !want.stage {
				got := target[camTargetKey(k)]
				gs := got["spec"].(map[string]any)
				gref := gs["claimRef"].(map[string]any)
				nfs := gs["nfs"].(map[string]any)
				if nfs["server"] != camNFSServer || nfs["path"] != spec["nfs"].(map[string]any)["path"] || gs["persistentVolumeReclaimPolicy"] != "Retain" ||
					gref["namespace"] != camMapNS(ref["namespace"].(string)) || gref["name"] != ref["name"] || gref["uid"] != nil {
					problem("target: %s: nfs %v, reclaim %v, claimRef %v; want the source's nfs %v, Retain, claimRef to %s/%s without uid",
						camTargetKey(k), nfs, gs["persistentVolumeReclaimPolicy"], gref, spec["nfs"], camMapNS(ref["namespace"].(string)), ref["name"])
				}
			}
			// On the source: Retain after a final migrate, untouched by a stage.
			wantPolicy := "Retain"
			if want.stage {
				wantPolicy = spec["persistentVolumeReclaimPolicy"].(string)
			}
			if got := source[k]["spec"].(map[string]any)["persistentVolumeReclaimPolicy"]; got != wantPolicy {
				problem("source: %s reclaim policy %v, want %s", k, got, wantPolicy)
			}
		case "/persistentvolumeclaims":
			gs := target[camTargetKey(k)]["spec"].(map[string]any)
			vn, _ := gs["volumeName"].(string)
			switch {
			case want.pvAction == "copy" && (vn != "" || want.storageClass != "" && gs["storageClassName"] != want.storageClass):
				problem("target: %s volumeName %q storageClassName %v; want none and %q (provisioned by the target)", camTargetKey(k), vn, gs["storageClassName"], want.storageClass)
			case want.pvAction == "move" && vn != o["spec"].(map[string]any)["volumeName"]:
				problem("target: %s volumeName %q, want the moved volume %v", camTargetKey(k), vn, o["spec"].(map[string]any)["volumeName"])
			}
		}
	}
	// The source: quiesced after a final migrate (replicas 0, the old count in an annotation,
	// CronJobs suspended); everything else as it was.
	for k, o := range src {
		gr := camKeyResource(k)
		cur, ok := source[k]
		if !ok {
			problem("source: %s is gone", k)
			continue
		}
		spec := o["spec"]
		curSpec := cur["spec"]
		switch {
		case !want.stage && (gr == "apps/deployments" || gr == "apps/statefulsets"):
			ann, _ := cur["metadata"].(map[string]any)["annotations"].(map[string]any)
			if r := curSpec.(map[string]any)["replicas"]; fmt.Sprint(r) != "0" || ann["planrun.dev/previous-replicas"] != fmt.Sprint(spec.(map[string]any)["replicas"]) {
				problem("source: %s replicas %v (annotation %v), want 0 and the annotation %v", k, r, ann["planrun.dev/previous-replicas"], spec.(map[string]any)["replicas"])
			}
		case !want.stage && gr == "batch/cronjobs":
			if curSpec.(map[string]any)["suspend"] != true {
				problem("source: %s not suspended", k)
			}
		case gr == "/persistentvolumes":
		default:
			if normalized(camStripServer(o)) != normalized(camStripServer(cur)) {
				problem("source: %s changed:\n before %s\n after  %s", k, normalized(camStripServer(o)), normalized(camStripServer(cur)))
			}
		}
	}
	// What is not migrated stays where it is.
	for k := range source {
		if strings.Contains(k, " "+camOtherNS+"/") || strings.HasPrefix(k, "/persistentvolumes /pv-"+camOtherNS) {
			if _, ok := target[camTargetKey(k)]; ok && camTargetKey(k) != k || ok && camKeyResource(k) != "/namespaces" {
				problem("target: %s was not to be migrated", k)
			}
		}
	}
	if problems > 25 {
		t.Errorf("… %d problems in all", problems)
	}
	t.Logf("compared %d objects on the target, %d owner references, %d objects on the source", len(wantKeys), owners, len(src))
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
	return o
}

// camAssertHooks checks that the hooks ran as Jobs in order, each on its cluster, with the
// image, namespace, service account and backoffLimit asked for, around the right steps.
func camAssertHooks(t *testing.T, e *camEnv, r plantest.Result) {
	t.Helper()
	var got []string
	for _, j := range e.jobs.Seen() {
		got = append(got, j.Cluster+":"+j.Step)
		if j.Namespace != camHookNS || j.Image != camHookImage || j.ServiceAccount != camHookSA || j.BackoffLimit != 6 ||
			!slices.Equal(j.Command, []string{"ansible-runner"}) || len(j.Args) != 2 || j.Args[0] != "run" {
			t.Errorf("hook Job %+v: want namespace %s, image %s, service account %s, backoffLimit 6, command ansible-runner run …", j, camHookNS, camHookImage, camHookSA)
		}
	}
	want := []string{"source:pre-backup-hook", "source:post-backup-hook", "target:pre-restore-hook", "target:post-restore-hook"}
	if !slices.Equal(got, want) {
		t.Errorf("hook Jobs seen %v, want %v", got, want)
	}
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
	r := e.run(t, nil, false, e.applyArgs("final", append([]string{"--set", "pvAction=move"}, camHookArgs()...)...)...)
	if r.Code != 0 {
		t.Fatalf("apply exited %d\n%s", r.Code, r)
	}
	camAssertMigrated(t, e, before, camExpect{pvAction: "move"})
	camAssertHooks(t, e, r)
	j := loadJournal(t, e.dir, "final")
	if out := j.Step("pod-limit").Outputs; out["ok"] != true {
		t.Errorf("pod-limit outputs %v", out)
	}
	if out := j.Step("restore").Outputs; plantest.Num(t, out, "failed") != 0 || plantest.Num(t, out, "restored") < 150 {
		t.Errorf("restore outputs %v", out)
	}
}

// TestCAMStageThenFinalCopy: two stages (the application keeps running, only Namespaces and
// claims on the target, new volumes of the storage class asked for), a change on the source,
// then the final migrate, which converges over what the stages created. No hooks: they are
// skipped.
func TestCAMStageThenFinalCopy(t *testing.T) {
	e := startCAM(t)
	before := camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))
	copyArgs := []string{"--set", "pvAction=copy", "--set", "storageClass=fast-ceph"}
	for _, id := range []string{"stage-1", "stage-2"} {
		r := e.run(t, nil, false, e.applyArgs(id, append([]string{"--set", "stage=true"}, copyArgs...)...)...)
		if r.Code != 0 {
			t.Fatalf("%s exited %d\n%s", id, r.Code, r)
		}
		camAssertMigrated(t, e, before, camExpect{pvAction: "copy", storageClass: "fast-ceph", stage: true})
		j := loadJournal(t, e.dir, id)
		for _, s := range []string{"pre-backup-hook", "post-backup-hook", "pre-restore-hook", "post-restore-hook", "quiesce", "retain-source-volumes"} {
			if st := j.Step(s).Status; st != engine.StepSkipped {
				t.Errorf("%s: step %s %s, want Skipped", id, s, st)
			}
		}
	}
	if jobs := e.jobs.Seen(); len(jobs) != 0 {
		t.Errorf("hooks left empty ran: %v", jobs)
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
	pvc, err := e.scs.CoreV1().PersistentVolumeClaims("shop").Get(t.Context(), "uploads", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pvc.Labels["tier"] = "gold"
	if _, err := e.scs.CoreV1().PersistentVolumeClaims("shop").Update(t.Context(), pvc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	before = camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))
	r := e.run(t, nil, false, e.applyArgs("final", copyArgs...)...)
	if r.Code != 0 {
		t.Fatalf("final exited %d\n%s", r.Code, r)
	}
	camAssertMigrated(t, e, before, camExpect{pvAction: "copy", storageClass: "fast-ceph"})
	// The claims the stages created are kept: the unchanged ones as they are, the changed one
	// updated.
	out := loadJournal(t, e.dir, "final").Step("restore").Outputs
	claims, _ := out["resources"].(map[string]any)["persistentvolumeclaims"].(map[string]any)
	if normalized(claims) != `{"failed":0,"restored":0,"skipped":8,"updated":1}` {
		t.Errorf("final restore of the staged claims: %v; want 8 skipped (unchanged) and 1 updated", claims)
	}
}

// TestCAMKilledAndResumed: planrun is SIGKILLed in the middle of the restore; the resumed run
// reaches the same end state as one that was not killed.
func TestCAMKilledAndResumed(t *testing.T) {
	e := startCAM(t)
	before := camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))
	args := e.applyArgs("r", append([]string{"--set", "pvAction=move", "--set", "restoreWorkers=1"}, camHookArgs()...)...)
	r := e.run(t, &plantest.KillPoint{Event: engine.EventStepStarted, Step: "restore", Delay: 150 * time.Millisecond}, false, args...)
	if !r.Killed {
		t.Fatalf("not killed during the restore (exit %d)\n%s", r.Code, r)
	}
	if st := loadJournal(t, e.dir, "r").Step("restore").Status; st != engine.StepRunning {
		t.Fatalf("killed with the restore %s", st)
	}
	partial := len(camSnapshot(t, e.dst, []string{camMappedShop, "payments", "search"}))
	t.Logf("killed with %d objects on the target", partial)
	r = e.run(t, nil, false, "resume", "r", "--break-lock", "--kubeconfig", e.src.Kubeconfig)
	if r.Code != 0 {
		t.Fatalf("resume exited %d\n%s", r.Code, r)
	}
	if st := loadJournal(t, e.dir, "r").Status; st != engine.RunSucceeded {
		t.Fatalf("run %s", st)
	}
	camAssertMigrated(t, e, before, camExpect{pvAction: "move"})
	var steps []string
	for _, j := range e.jobs.Seen() {
		steps = append(steps, j.Cluster+":"+j.Step)
	}
	if want := []string{"source:pre-backup-hook", "source:post-backup-hook", "target:pre-restore-hook", "target:post-restore-hook"}; !slices.Equal(steps, want) {
		t.Errorf("hook Jobs %v, want each once: %v", steps, want)
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
	if rec := j.Step("restore"); rec.Status != engine.StepFailed || !strings.Contains(rec.Error, "ConfigMap payments/"+camRefusedCM) ||
		!strings.Contains(rec.Error, camRefusedCM+" is not allowed on this cluster") || !strings.Contains(rec.Error, "deleted again (undoOnFailure)") {
		t.Errorf("restore %s: %s", rec.Status, rec.Error)
	}
	for _, s := range []string{"quiesce", "retain-source-volumes", "pre-backup-hook", "post-backup-hook", "pre-restore-hook"} {
		if st := j.Step(s).Status; st != engine.StepRolledBack {
			t.Errorf("step %s %s, want RolledBack", s, st)
		}
	}
	// The source as it was: replicas, CronJobs, reclaim policies, everything (the server's
	// bookkeeping aside); no hook Job left on either cluster.
	after := camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))
	for k, o := range before {
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
		if _, ok := before[k]; !ok {
			t.Errorf("source: %s was added", k)
		}
	}
	for name, cs := range map[string]kubernetes.Interface{"source": e.scs, "target": e.dcs} {
		jobs, err := cs.BatchV1().Jobs("").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, job := range jobs.Items {
			t.Errorf("%s: hook Job %s/%s left", name, job.Namespace, job.Name)
		}
	}
	if len(e.jobs.Seen()) != 3 {
		t.Errorf("hook Jobs seen %v, want the three before the restore", e.jobs.Seen())
	}
	// The target: nothing the run created. Namespaces, claims and volumes it created are deleted
	// but stay Terminating: these API servers have no namespace or volume-protection controller
	// to finish deleting them.
	terminating := 0
	for k, o := range camSnapshot(t, e.dst, []string{camMappedShop, "payments", "search", camOtherNS}) {
		if _, ok := targetBefore[k]; ok {
			continue
		}
		if o["metadata"].(map[string]any)["deletionTimestamp"] != nil {
			terminating++
			continue
		}
		t.Errorf("target: %s left by the run", k)
	}
	t.Logf("target: %d objects the run created are Terminating (finalizers of controllers these test clusters lack)", terminating)
}

// TestCAMDryRun changes nothing on either cluster and says what would happen.
func TestCAMDryRun(t *testing.T) {
	e := startCAM(t)
	namespaces := append(slices.Clone(camNamespaces), camOtherNS, camHookNS)
	srcBefore := camSnapshot(t, e.src, namespaces)
	dstBefore := camSnapshot(t, e.dst, append(namespaces, camMappedShop))
	r := e.run(t, nil, true, e.applyArgs("r", append([]string{"--dry-run", "--set", "pvAction=move"}, camHookArgs()...)...)...)
	if r.Code != 0 {
		t.Fatalf("dry run exited %d\n%s", r.Code, r)
	}
	t.Logf("dry run output:\n%s", r.Stdout)
	for _, want := range []string{"[PreBackup] pre-backup-hook dry run: not applied", "backup dry run: not applied", "quiesce dry run: not applied",
		"retain-source-volumes dry run: not applied", "[PreRestore] pre-restore-hook dry run: not applied", "restore skipped", "[PostRestore] post-restore-hook dry run: not applied"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("the dry run does not say %q", want)
		}
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
			if normalized(o) != normalized(after[k]) {
				t.Errorf("%s: the dry run changed %s", name, k)
			}
		}
	}
	if len(e.jobs.Seen()) != 0 {
		t.Errorf("the dry run started Jobs: %v", e.jobs.Seen())
	}
	for _, p := range []string{filepath.Join(e.dir, "runs", "r"), filepath.Join(e.dir, "cam-backup")} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("the dry run left %s (%v)", p, err)
		}
	}
}

// TestCAMLimits: over the namespace limit the plan refuses before anything is touched; over the
// pod and PV limits it warns (a warning line in plain output, step.warning events and
// outputs.warning with -o json) and
// goes on.
func TestCAMLimits(t *testing.T) {
	e := startCAM(t)
	ctx := t.Context()
	for i := range 5 {
		if _, err := e.scs.CoreV1().Pods(camNamespaces[i%3]).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("worker-%d", i)},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "w", Image: "registry.example.com/worker:1"}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	before := camSnapshot(t, e.src, append(slices.Clone(camNamespaces), camOtherNS))

	r := e.run(t, nil, true, e.applyArgs("refused", "--set", "namespaceLimit=2")...)
	if r.Code != 1 {
		t.Fatalf("apply over the namespace limit exited %d, want 1\n%s", r.Code, r)
	}
	const refusal = "Namespace limit exceeded: 3 namespaces, the limit is 2 (param namespaceLimit)"
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
		if normalized(o) != normalized(after[k]) {
			t.Errorf("the refused run changed %s", k)
		}
	}

	// Over the pod and PV limits: warnings, and the stage runs on.
	const podWarning = "Pod limit: 4 exceeded, found: 5"
	const pvWarning = "Persistent volume limit: 8 exceeded, found: 9"
	r = e.run(t, nil, true, e.applyArgs("plain", "--set", "stage=true", "--set", "podLimit=4", "--set", "pvLimit=8")...)
	if r.Code != 0 {
		t.Fatalf("apply over the pod and PV limits exited %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	for step, w := range map[string]string{"pod-limit": podWarning, "pv-limit": pvWarning} {
		if !strings.Contains(r.Stdout, "⚠ "+step+": "+w) {
			t.Errorf("plain output: no warning line %q:\n%s", "⚠ "+step+": "+w, r.Stdout)
		}
	}
	r = e.run(t, nil, false, e.applyArgs("json", "--set", "stage=true", "--set", "podLimit=4", "--set", "pvLimit=8")...)
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
	if st := loadJournal(t, e.dir, "json").Step("restore").Status; st != engine.StepSucceeded {
		t.Errorf("restore %s after the warnings", st)
	}
	if _, err := e.dcs.CoreV1().PersistentVolumeClaims(camMappedShop).Get(ctx, "uploads", metav1.GetOptions{}); err != nil {
		t.Errorf("the stage did not run on after the warnings: %v", err)
	}
}
