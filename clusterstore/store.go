// Package clusterstore keeps planrun's runs in a Kubernetes cluster instead of a local folder, so
// that a run outlives the machine that started it: each run is a PlanRun object
// (planrun.dev/v1alpha1, namespaced) holding the plan as it started and the run's journal, and
// its lock is a coordination.k8s.io Lease of the same name, held and renewed by the runner.
//
// Its door is Open (a "k8s://CONTEXT/NAMESPACE" state URL) and the engine.Store it returns.
package clusterstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/safepath"
)

// Scheme is the scheme of a state URL in a cluster.
const Scheme = "k8s"

// IsURL says whether state names a cluster store rather than a local folder.
func IsURL(state string) bool { return strings.HasPrefix(state, Scheme+"://") }

// Options say how to reach the cluster; every field is optional.
type Options struct {
	// Kubeconfig is the kubeconfig file; "" is $KUBECONFIG or ~/.kube/config, and inside a pod
	// with neither, the pod's own service account.
	Kubeconfig string
	// LeaseDuration is how long a runner's lock lasts without renewal (default 30s, or the URL's
	// ?lease=): a runner that dies is replaced that much later at most.
	LeaseDuration time.Duration
	// ArtifactDir is the local folder under which steps keep their logs and files (default: the
	// user's cache folder, planrun/artifacts/CONTEXT/NAMESPACE).
	ArtifactDir string
	// Config, when set, is used instead of the kubeconfig (tests, in-process callers).
	Config *rest.Config
}

// Store is an engine.Store in a cluster namespace.
type Store struct {
	namespace string
	where     string // "namespace NS on CONTEXT", for messages
	dyn       dynamic.Interface
	cs        kubernetes.Interface
	lease     time.Duration
	artifacts string
	identity  string // this process as a lease holder
	config    *rest.Config

	mu sync.Mutex
	// held is the runs this Store holds the lock of: their leases, and the resourceVersion of
	// the PlanRun as this runner last wrote it (the fence of its checkpoints).
	held map[string]*leaseLock
	// stops paces the reads of stop requests (stoprequest.go).
	stops stopChecks
}

var _ engine.Store = (*Store)(nil)

// ParseURL splits a state URL: k8s://CONTEXT/NAMESPACE (k8s:///NAMESPACE is the current
// context, or the pod's own cluster), with an optional ?lease=DURATION. The namespace is what
// follows the last slash, so that a context name may hold slashes and colons, as EKS's ARNs do
// (k8s://arn:aws:eks:eu-west-1:123456789012:cluster/prod/planrun); %XX escapes are decoded.
func ParseURL(state string) (kubeContext, namespace string, lease time.Duration, err error) {
	bad := func(why string) error {
		return fmt.Errorf("state %q: %s (want k8s://CONTEXT/NAMESPACE, or k8s:///NAMESPACE for the current context)", state, why)
	}
	rest, ok := strings.CutPrefix(state, Scheme+"://")
	if !ok {
		return "", "", 0, bad("not a k8s:// URL")
	}
	rest, rawQuery, _ := strings.Cut(rest, "?")
	if strings.Contains(rest, "#") {
		return "", "", 0, bad("no fragment allowed")
	}
	slash := strings.LastIndex(rest, "/")
	if slash < 0 || slash == len(rest)-1 {
		return "", "", 0, bad("no namespace")
	}
	if kubeContext, err = url.PathUnescape(rest[:slash]); err != nil {
		return "", "", 0, bad(fmt.Sprintf("context: %v", err))
	}
	namespace = rest[slash+1:]
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return "", "", 0, bad(fmt.Sprintf("namespace %q: %s", namespace, strings.Join(errs, "; ")))
	}
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", "", 0, bad(err.Error())
	}
	for k, v := range query {
		switch k {
		case "lease":
			if lease, err = time.ParseDuration(v[0]); err != nil || checkLease(lease) != nil {
				return "", "", 0, bad(fmt.Sprintf("lease %q: want whole seconds, at least 3s", v[0]))
			}
		default:
			return "", "", 0, bad(fmt.Sprintf("unknown option %q (known: lease)", k))
		}
	}
	return kubeContext, namespace, lease, nil
}

// checkLease refuses a lease duration a Lease cannot record exactly (whole seconds) or too short
// to be renewed in time.
func checkLease(d time.Duration) error {
	if d < 3*time.Second || d%time.Second != 0 {
		return fmt.Errorf("lease duration %s: want whole seconds, at least 3s", d)
	}
	return nil
}

// Open connects to the namespace a state URL names and makes sure the PlanRun resource is
// there (installing it when it is not and the credentials may).
func Open(ctx context.Context, state string, opts Options) (*Store, error) {
	kubeContext, namespace, lease, err := ParseURL(state)
	if err != nil {
		return nil, err
	}
	cfg := opts.Config
	if cfg == nil {
		rules := clientcmd.NewDefaultClientConfigLoadingRules()
		if opts.Kubeconfig != "" {
			rules.ExplicitPath = opts.Kubeconfig
		}
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: kubeContext}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("state %s: %w", state, err)
		}
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "planrun"
	// Two checkpoints per step: client-go's default of 5 requests a second would make every
	// step wait 0.4 s for nothing.
	cfg.QPS, cfg.Burst = 100, 200
	if lease == 0 {
		lease = opts.LeaseDuration
	}
	if lease == 0 {
		lease = DefaultLeaseDuration
	}
	if err := checkLease(lease); err != nil {
		return nil, err
	}
	contextName := kubeContext
	if contextName == "" {
		contextName = "current-context"
	}
	s := &Store{
		namespace: namespace,
		where:     fmt.Sprintf("namespace %s on %s", namespace, contextName),
		lease:     lease,
		artifacts: opts.ArtifactDir,
		identity:  holderIdentity(),
		held:      map[string]*leaseLock{},
	}
	if s.artifacts == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		s.artifacts = filepath.Join(cache, "planrun", "artifacts", safeName(contextName), namespace)
	}
	s.config = cfg
	if s.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if s.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if _, err := s.cs.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("state %s: namespace %s does not exist on %s (create it: kubectl create namespace %s)", state, namespace, contextName, namespace)
	} else if err != nil && !apierrors.IsForbidden(err) {
		return nil, s.apiErr("reading the namespace", err)
	}
	if err := s.ensureCRD(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// String is where the store is, for messages.
func (s *Store) String() string { return s.where }

func (s *Store) runs() dynamic.ResourceInterface {
	return s.dyn.Resource(planRunGVR).Namespace(s.namespace)
}

// checkRunID refuses a run id that cannot name a PlanRun and its Lease.
func checkRunID(runID string) error {
	if errs := validation.IsDNS1123Subdomain(runID); len(errs) > 0 {
		return fmt.Errorf("run id %q cannot name a PlanRun: %s", runID, strings.Join(errs, "; "))
	}
	if len(leaseName(runID)) > validation.DNS1123SubdomainMaxLength {
		return fmt.Errorf("run id %q is too long to name its Lease (at most %d characters)", runID, validation.DNS1123SubdomainMaxLength-len(leasePrefix))
	}
	return nil
}

// Create implements engine.Store.
func (s *Store) Create(ctx context.Context, j *engine.Journal, planSource []byte) error {
	if err := checkRunID(j.RunID); err != nil {
		return err
	}
	obj, err := newRunObject(s.namespace, j, planSource)
	if err != nil {
		return err
	}
	_, err = s.runs().Create(ctx, obj, metav1.CreateOptions{FieldManager: fieldManager})
	if apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("run %s already exists in %s", j.RunID, s.where)
	}
	return s.apiErr("creating PlanRun "+j.RunID, err)
}

// Save implements engine.Store. Only the runner holding the run's lock saves, and only over
// the object as it last wrote it: a runner whose lease was taken over finds the object changed
// by the new holder (which writes it when it takes the lock) and stops.
func (s *Store) Save(ctx context.Context, j *engine.Journal) error {
	s.mu.Lock()
	l := s.held[j.RunID]
	s.mu.Unlock()
	if l == nil {
		return fmt.Errorf("checkpoint of run %s in %s: this runner does not hold the run's lock", j.RunID, s.where)
	}
	if err := l.Err(); err != nil {
		return err
	}
	return l.write(ctx, func(obj *unstructured.Unstructured) error { return setJournal(obj, j) })
}

// Load implements engine.Store.
func (s *Store) Load(ctx context.Context, runID string) (*engine.Journal, error) {
	obj, err := s.get(ctx, runID)
	if err != nil {
		return nil, err
	}
	return journalOf(obj, runID)
}

func (s *Store) get(ctx context.Context, runID string) (*unstructured.Unstructured, error) {
	if err := checkRunID(runID); err != nil {
		return nil, fmt.Errorf("%w: %s (%v)", engine.ErrRunNotFound, runID, err)
	}
	obj, err := s.runs().Get(ctx, runID, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: %s (no PlanRun %s in %s)", engine.ErrRunNotFound, runID, runID, s.where)
	}
	if err != nil {
		return nil, s.apiErr("reading PlanRun "+runID, err)
	}
	return obj, nil
}

// PlanSource implements engine.Store.
func (s *Store) PlanSource(ctx context.Context, runID string) ([]byte, error) {
	obj, err := s.get(ctx, runID)
	if err != nil {
		return nil, err
	}
	src, _, _ := unstructured.NestedString(obj.Object, "spec", "planSource")
	return []byte(src), nil
}

// List implements engine.Store: the PlanRuns of the namespace that planrun manages.
func (s *Store) List(ctx context.Context) ([]engine.RunEntry, error) {
	var out []engine.RunEntry
	opts := metav1.ListOptions{LabelSelector: managedByLabel + "=planrun", Limit: 200}
	for {
		list, err := s.runs().List(ctx, opts)
		if err != nil {
			return nil, s.apiErr("listing PlanRuns", err)
		}
		for i := range list.Items {
			obj := &list.Items[i]
			e := engine.RunEntry{RunID: obj.GetName(), Time: obj.GetCreationTimestamp().Time}
			e.Journal, e.Err = journalOf(obj, obj.GetName())
			if e.Journal != nil {
				e.Time = e.Journal.Started
			}
			out = append(out, e)
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			break
		}
	}
	engine.SortRunEntries(out)
	return out, nil
}

// ArtifactDir implements engine.Store: a local folder of the runner (in a pod, its own disk).
func (s *Store) ArtifactDir(runID, stepID string) (string, error) {
	if err := checkRunID(runID); err != nil {
		return "", err
	}
	runDir, err := safepath.Join(s.artifacts, "run id", runID)
	if err != nil {
		return "", err
	}
	dir, err := safepath.Join(filepath.Join(runDir, "steps"), "step id", stepID)
	if err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// apiErr says in one line what failed where; a missing permission names the verb and resource.
func (s *Store) apiErr(what string, err error) error {
	if err == nil {
		return nil
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) && apierrors.IsForbidden(err) {
		// The server's message says which verb on which resource; the error stays a
		// Forbidden one for errors.As.
		return &wrapped{msg: fmt.Sprintf("%s in %s: forbidden: %s", what, s.where, status.Status().Message), err: err}
	}
	return fmt.Errorf("%s in %s: %w", what, s.where, err)
}

// wrapped is an error worded anew that still unwraps to its cause.
type wrapped struct {
	msg string
	err error
}

func (e *wrapped) Error() string { return e.msg }
func (e *wrapped) Unwrap() error { return e.err }

// safeName makes a kubeconfig context name usable as a folder name.
func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == ':' || r < ' ' {
			return '_'
		}
		return r
	}, s)
}
