package incluster

import (
	"context"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"planrun.dev/planrun/clusterstore"
	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

const fieldManager = "planrun"

// Launched is a runner launched for a run.
type Launched struct {
	// Job is the runner Job's name, in the store's namespace.
	Job string
	// RBAC is what the runner runs as.
	RBAC RBAC
}

// Launch is a runner ready to start: the plan checked against the options and the cluster.
type Launch struct {
	store *clusterstore.Store
	p     *engine.Plan
	opts  Options
	home  *ClusterAccess // what the steps need of the runner's own cluster, nil if nothing
	cs    kubernetes.Interface
	dyn   dynamic.Interface
}

// Prepare checks that a runner in store's cluster can run p with opts, before anything is
// submitted: every step's cluster is known, every cluster is the runner's own or has a Secret
// holding a kubeconfig, and the ServiceAccount's needs are known.
func Prepare(ctx context.Context, store *clusterstore.Store, p *engine.Plan, opts Options) (*Launch, error) {
	access, err := PlanAccess(p)
	if err != nil {
		return nil, err
	}
	for c := range p.Clusters {
		if strings.ContainsAny(c, "=/") {
			// It becomes an argument CLUSTER=PATH of the runner.
			return nil, fmt.Errorf("cluster %q: an in-cluster run needs cluster names without '=' or '/'", c)
		}
	}
	for c := range opts.ClusterSecrets {
		if _, ok := p.Clusters[c]; !ok {
			return nil, fmt.Errorf("--cluster-secret %s: the plan has no cluster %q (clusters: %s)", c, c, clusterList(p))
		}
	}
	if _, err := apiServerEnv(opts.APIServer); err != nil {
		return nil, err
	}
	cfg := store.RESTConfig()
	l := &Launch{store: store, p: p, opts: opts}
	if l.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if l.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	// Every cluster without a Secret must be the runner's own: their needs add up on its account.
	for _, a := range access {
		if _, remote := opts.ClusterSecrets[a.Cluster]; remote {
			continue
		}
		c, err := kube.NewClient(a.Cluster, p.Clusters[a.Cluster])
		if err != nil {
			return nil, err
		}
		if c.Config.Host != cfg.Host {
			return nil, fmt.Errorf("cluster %s (%s) is not the cluster of the state (%s): the runner reaches it only with a kubeconfig in a Secret: give --cluster-secret %s=SECRET", a.Cluster, c.Config.Host, cfg.Host, a.Cluster)
		}
		if l.home == nil {
			l.home = &ClusterAccess{Cluster: a.Cluster}
		}
		l.home.Rules = kube.MergeRules(append(l.home.Rules, a.Rules...))
		l.home.Steps = append(l.home.Steps, a.Steps...)
	}
	if err := checkSecrets(ctx, l.cs, store.Namespace(), opts.ClusterSecrets); err != nil {
		return nil, err
	}
	if sa := opts.ServiceAccount; sa != "" {
		if _, err := l.cs.CoreV1().ServiceAccounts(store.Namespace()).Get(ctx, sa, metav1.GetOptions{}); err != nil {
			return nil, fmt.Errorf("--service-account %s: %w", sa, err)
		}
	}
	return l, nil
}

// Start starts the runner of run runID, submitted (engine.Runner.Submit) from the prepared
// plan: the ServiceAccount, roles and Job, owned by the run's PlanRun (the ClusterRole and its
// binding, which it cannot own, carry the run's label; Cleanup deletes them). It is safe to call
// again for the same run: what exists is brought up to date, a Job already there is kept.
func (l *Launch) Start(ctx context.Context, runID string) (*Launched, error) {
	ns := l.store.Namespace()
	owner, err := l.store.OwnerReference(ctx, runID)
	if err != nil {
		return nil, err
	}
	name := ObjectName(runID)
	var secrets []string
	if l.opts.ArtifactsSecret != "" {
		secrets = append(secrets, l.opts.ArtifactsSecret)
	}
	rbac := NewRBAC(name, ns, runID, l.home, secrets...)
	for _, o := range []metav1.Object{rbac.ServiceAccount, rbac.Role, rbac.RoleBinding} {
		o.SetOwnerReferences([]metav1.OwnerReference{owner})
	}
	if l.opts.ServiceAccount == "" {
		for _, o := range rbac.Objects() {
			if err := apply(ctx, l.dyn, o); err != nil {
				return nil, err
			}
		}
	}
	clusters := make([]string, 0, len(l.p.Clusters))
	for c := range l.p.Clusters {
		clusters = append(clusters, c)
	}
	sort.Strings(clusters)
	lease := l.store.LeaseDuration()
	state := fmt.Sprintf("%s:///%s?lease=%s", clusterstore.Scheme, ns, lease)
	opts := l.opts
	if opts.LockWait == 0 {
		opts.LockWait = 2 * lease
	}
	job, err := newJob(name, ns, runID, state, clusters, owner, opts)
	if err != nil {
		return nil, err
	}
	if _, err := l.cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{FieldManager: fieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating the runner Job %s/%s: %w", ns, name, err)
	}
	return &Launched{Job: name, RBAC: rbac}, nil
}

// checkSecrets makes sure every cluster Secret is there with a kubeconfig, before a runner
// would fail on it.
func checkSecrets(ctx context.Context, cs kubernetes.Interface, ns string, secrets map[string]string) error {
	clusters := make([]string, 0, len(secrets))
	for c := range secrets {
		clusters = append(clusters, c)
	}
	sort.Strings(clusters)
	for _, c := range clusters {
		s, err := cs.CoreV1().Secrets(ns).Get(ctx, secrets[c], metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("--cluster-secret %s=%s: %w", c, secrets[c], err)
		}
		if len(s.Data["kubeconfig"]) == 0 {
			return fmt.Errorf("--cluster-secret %s=%s: Secret %s/%s has no key kubeconfig (kubectl create secret generic %s -n %s --from-file=kubeconfig=FILE)", c, secrets[c], ns, secrets[c], secrets[c], ns)
		}
	}
	return nil
}

// apply creates or updates o by server-side apply.
func apply(ctx context.Context, dyn dynamic.Interface, o runtime.Object) error {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{Object: u}
	unstructured.RemoveNestedField(obj.Object, "metadata", "creationTimestamp")
	body, err := obj.MarshalJSON()
	if err != nil {
		return err
	}
	gvk := obj.GroupVersionKind()
	gvr, _ := meta.UnsafeGuessKindToResource(gvk) // RBAC kinds and ServiceAccount: the guess is right
	var ri dynamic.ResourceInterface = dyn.Resource(gvr)
	if ns := obj.GetNamespace(); ns != "" {
		ri = dyn.Resource(gvr).Namespace(ns)
	}
	if _, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: fieldManager, Force: ptr.To(true)}); err != nil {
		return fmt.Errorf("creating the runner's %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	return nil
}

func clusterList(p *engine.Plan) string {
	names := make([]string, 0, len(p.Clusters))
	for n := range p.Clusters {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Cleanup deletes what a run's PlanRun cannot own: its runner's ClusterRole and binding. The
// rest goes with the PlanRun.
func Cleanup(ctx context.Context, store *clusterstore.Store, runID string) error {
	cs, err := kubernetes.NewForConfig(store.RESTConfig())
	if err != nil {
		return err
	}
	name := ObjectName(runID)
	if err := cs.RbacV1().ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting ClusterRoleBinding %s: %w", name, err)
	}
	if err := cs.RbacV1().ClusterRoles().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting ClusterRole %s: %w", name, err)
	}
	return nil
}
