// Package kubevolumes implements kube.copyVolumes and kube.verifyVolumes: the data of
// persistent volumes copied from one cluster to another through the replication repository (an
// object store), as OpenShift CAM does, by mover pods that mount each claim and run
// `planrun mover backup|restore|verify` from the planrun image. A backup pod on the source
// reads the claim (read-only) into a snapshot of the repository; a restore pod on the target
// writes it into the target claim. Stage copies run while the app runs and each copies only
// what changed; the final copy follows a quiesce. The clusters need no network path to each
// other, only to the object store.
package kubevolumes

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/images"
	"planrun.dev/planrun/internal/version"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/storage"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.copyVolumes",
		Doc: "Copy the data of persistent volume claims to claims on another cluster through an object store (mover pods: a backup " +
			"on the source, a restore on the target), incremental across stages, resumable; undo deletes the claims it created.",
		New: func() engine.Action { return new(CopyVolumes) },
	})
	engine.Register(engine.StepType{
		Name: "kube.verifyVolumes",
		Doc:  "Check every file of claims against the snapshots a kube.copyVolumes step copied into them (mover pods, sha256 of each file).",
		New:  func() engine.Action { return new(VerifyVolumes) },
	})
}

const (
	defaultParallel = 4
	defaultTimeout  = 12 * time.Hour
	// passwordKey is the key of the mover Secret that holds the repository password, passed to
	// the mover in PLANRUN_MOVER_PASSWORD (never mounted among the credentials).
	passwordKey = "planrun-mover-password"
)

// Mover is how both steps run their mover pods: where the repository is, how the pods reach it,
// and how many run at once.
type Mover struct {
	Repository      string                   `yaml:"repository" plan:"required" doc:"The replication repository: an object store location (s3://bucket/prefix?region=…, gs://…, azblob://…) that the mover pods reach (a kopia repository is created there on first use). The step checks that planrun can list it before anything starts."`
	CredentialsFrom *storage.CredentialsFrom `yaml:"credentialsFrom" doc:"Secret with the repository's credentials (the formats of storage locations: Gardener, CAM, Velero, AWS keys...): copied into a Secret beside each mover pod, mounted at /credentials. {} or absent: the provider's default chain, in planrun and in the pod (workload identity: see serviceAccount)."`
	PasswordFrom    *PasswordFrom            `yaml:"passwordFrom" doc:"Secret key holding the repository's password (kopia encrypts the repository with it). Default: the mover's documented static password, the bucket's access control protecting the data (as Velero's default)."`
	Image           string                   `yaml:"image" doc:"Image of the mover pods: planrun, whose entrypoint is the planrun binary. Default: the image make image builds from this repository, planrun.local/planrun:VERSION for a planrun built by make build (the same git describe), else planrun.local/planrun:latest; push it where the clusters can pull it, or name another here. Pulled IfNotPresent."`
	HostNetwork     bool                     `yaml:"hostNetwork" doc:"Run the mover pods on their node's network: for an object store only the nodes reach (an endpoint on the node's loopback, or a network the pod network does not route to). Needs a Pod Security level that allows host networking."`
	ServiceAccount  string                   `yaml:"serviceAccount" doc:"Service account of the mover pods (it must exist in each claim's namespace): for workload identity (IRSA, GKE/Azure workload identity) when credentialsFrom is {}. Default: the namespace's default account, without a token mounted."`
	Parallel        int                      `yaml:"parallel" doc:"Claims copied at once (default 4)."`
	Timeout         engine.Duration          `yaml:"timeout" doc:"How long one claim may take, all its mover pods included (default 12h)."`
}

// PasswordFrom names the Secret key that holds the repository password.
type PasswordFrom struct {
	Cluster   string `yaml:"cluster" plan:"cluster" doc:"Plan cluster the Secret is on; may be left out when the plan has at most one."`
	Namespace string `yaml:"namespace" plan:"required" doc:"Namespace of the Secret."`
	Name      string `yaml:"name" plan:"required" doc:"Name of the Secret."`
	Key       string `yaml:"key" plan:"required" doc:"Key of the password in the Secret."`
}

func (p *PasswordFrom) String() string {
	s := fmt.Sprintf("key %s of Secret %s/%s", p.Key, p.Namespace, p.Name)
	if p.Cluster != "" {
		s += " on cluster " + p.Cluster
	}
	return s
}

// check validates the fields both steps share.
func (m *Mover) check() error {
	if err := storage.Check(m.Repository); err != nil {
		return fmt.Errorf("repository: %w", err)
	}
	if storage.IsLocal(m.Repository) {
		return fmt.Errorf("repository: %s is a local path; the mover pods run on the clusters' nodes and need an object store (%s)",
			m.Repository, strings.Join(storage.Schemes()[1:], ", "))
	}
	if err := m.CredentialsFrom.Check(); err != nil {
		return fmt.Errorf("credentialsFrom: %w", err)
	}
	if p := m.PasswordFrom; p != nil {
		if p.Namespace == "" || p.Name == "" || p.Key == "" {
			return errors.New("passwordFrom: give namespace, name and key")
		}
		if errs := validation.IsConfigMapKey(p.Key); len(errs) > 0 {
			return fmt.Errorf("passwordFrom: key %q is not a valid Secret key", p.Key)
		}
	}
	if strings.ContainsAny(m.Image, " \t\n") {
		return fmt.Errorf("image: %q is not an image reference", m.Image)
	}
	if m.ServiceAccount != "" {
		if errs := validation.IsDNS1123Subdomain(m.ServiceAccount); len(errs) > 0 {
			return fmt.Errorf("serviceAccount: %q is not a valid name", m.ServiceAccount)
		}
	}
	if m.Parallel < 0 {
		return fmt.Errorf("parallel: must be positive, got %d", m.Parallel)
	}
	if m.Timeout < 0 {
		return errors.New("timeout: must not be negative")
	}
	return nil
}

// image is the mover pods' image: the one given, else the planrun image of this planrun's
// version (planrun.local/planrun:VERSION, as make image tags it) when the linker set one, else
// planrun.local/planrun:latest.
func (m *Mover) image() string {
	if m.Image != "" {
		return m.Image
	}
	return images.PlanrunImageFor(version.Version)
}

func (m *Mover) parallel() int {
	if m.Parallel > 0 {
		return m.Parallel
	}
	return defaultParallel
}

func (m *Mover) timeout() time.Duration {
	if m.Timeout > 0 {
		return time.Duration(m.Timeout)
	}
	return defaultTimeout
}

// CopyVolumes copies the data of claims to another cluster.
type CopyVolumes struct {
	From                string            `yaml:"from" plan:"required,cluster" doc:"Plan cluster the claims are copied from."`
	To                  string            `yaml:"to" plan:"required,cluster" doc:"Plan cluster the claims are copied to (may be from, with namespaceMapping)."`
	Namespaces          []string          `yaml:"namespaces" plan:"required" doc:"Namespaces whose claims are copied."`
	Claims              []string          `yaml:"claims" doc:"Claims to copy: a name (that claim in every namespace of namespaces) or namespace/name. Default: every claim of the namespaces (narrowed by selector)."`
	Selector            string            `yaml:"selector" doc:"Label selector of the claims to copy (app=shop,tier!=cache)."`
	NamespaceMapping    map[string]string `yaml:"namespaceMapping" doc:"Target namespace of a source namespace (default: the same name)."`
	CreateClaims        *bool             `yaml:"createClaims" doc:"Create a target claim that does not exist from the source's spec: size (the bound volume's capacity if larger than the request), access modes, volume mode, labels, storage class (through storageClassMapping); without volumeName, selector or dataSource. Default true; false: a missing target claim is an error."`
	StorageClassMapping map[string]string `yaml:"storageClassMapping" doc:"Storage class of a created target claim, by the source claim's class (default: the same class, which must exist on the target)."`
	Stage               bool              `yaml:"stage" doc:"A stage copy, made while the app runs (files changing under the mover are warnings, not errors); repeat it as often as wanted: each copies only what changed since the last snapshot of the claim. The final copy (stage false) follows a quiesce."`
	Verify              bool              `yaml:"verify" doc:"After the restore, read every file of the target claim back and check its sha256 against the snapshot (as CAM's verify)."`
	Mover               `yaml:",inline"`

	selector labels.Selector
}

var (
	_ engine.Action      = (*CopyVolumes)(nil)
	_ engine.Provisioner = (*CopyVolumes)(nil)
	_ engine.Validator   = (*CopyVolumes)(nil)
	_ engine.Undoer      = (*CopyVolumes)(nil)
	_ engine.Describer   = (*CopyVolumes)(nil)
	_ kube.AccessNeeder  = (*CopyVolumes)(nil)
)

// Access implements kube.AccessNeeder: on from, the mover pods' rules (see Mover.access) and
// list on persistentvolumeclaims (the claims to copy); on to, the mover pods' rules and:
//   - get on persistentvolumeclaims: each target claim is checked, and read again by undo;
//   - with createClaims, create on persistentvolumeclaims (a server-side dry run first), delete
//     on them (undo deletes the claims the step created) and get on storageclasses (a created
//     claim's class must exist);
//
// and the reads of credentialsFrom and passwordFrom.
func (c *CopyVolumes) Access() []kube.Rule {
	out := kube.OnCluster(c.From, append(c.access(), kube.ResourceRule("persistentvolumeclaims", "list"))...)
	target := append(c.access(), kube.ResourceRule("persistentvolumeclaims", "get"))
	if c.createClaims() {
		target = append(target, kube.ResourceRule("persistentvolumeclaims", "create", "delete"), kube.ResourceRule("storageclasses.storage.k8s.io", "get"))
	}
	return append(append(out, kube.OnCluster(c.To, target...)...), c.secretsAccess()...)
}

// access is what the mover pods take on a cluster they run on:
//   - get on namespaces: each namespace is checked to exist (and kube-system names the cluster);
//   - create, get, list and delete on pods: the mover pods are made, found again after a resume,
//     followed, deleted once done, and swept by label (listing the namespace's pods also finds
//     the pods that use a claim);
//   - get on pods/log: a mover's progress and result are read from its log;
//   - list and delete on secrets: the mover Secrets are swept by label; with credentialsFrom or
//     passwordFrom, create, get and update too: each pod gets a Secret of them, made again or
//     updated after a resume;
//   - get on serviceaccounts: the serviceAccount given is checked to exist.
func (m *Mover) access() []kube.Rule {
	out := []kube.Rule{
		kube.ResourceRule("namespaces", "get"),
		kube.ResourceRule("pods", "get", "list", "create", "delete"),
		kube.ResourceRule("pods/log", "get"),
		kube.ResourceRule("secrets", "list", "delete"),
	}
	if !m.CredentialsFrom.IsZero() || m.PasswordFrom != nil {
		out = append(out, kube.ResourceRule("secrets", "get", "create", "update"))
	}
	if m.ServiceAccount != "" {
		out = append(out, kube.ResourceRule("serviceaccounts", "get"))
	}
	return out
}

// secretsAccess is get on the Secrets credentialsFrom and passwordFrom name, on their clusters.
func (m *Mover) secretsAccess() []kube.Rule {
	out := m.CredentialsFrom.Access()
	if p := m.PasswordFrom; p != nil {
		out = append(out, kube.OnCluster(p.Cluster, kube.ResourceRule("secrets", "get"))...)
	}
	return out
}

// Provision implements engine.Provisioner: the selector is parsed.
func (c *CopyVolumes) Provision() error {
	sel, err := labels.Parse(c.Selector)
	if err != nil {
		return fmt.Errorf("selector: %v", err)
	}
	c.selector = sel
	return nil
}

// Validate implements engine.Validator.
func (c *CopyVolumes) Validate() error {
	if len(c.Namespaces) == 0 {
		return errors.New("namespaces: name at least one namespace")
	}
	seen := map[string]bool{}
	for _, ns := range c.Namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("namespaces: %q is not a valid namespace name", ns)
		}
		if seen[ns] {
			return fmt.Errorf("namespaces: %s is listed twice", ns)
		}
		seen[ns] = true
	}
	for _, cl := range c.Claims {
		ns, name, qualified := strings.Cut(cl, "/")
		if !qualified {
			name = ns
		} else if !seen[ns] {
			return fmt.Errorf("claims: %s: namespace %s is not one of namespaces", cl, ns)
		}
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return fmt.Errorf("claims: %q is not a valid claim name", cl)
		}
	}
	targets := map[string]string{}
	for _, ns := range c.Namespaces {
		t := c.targetNamespace(ns)
		if errs := validation.IsDNS1123Label(t); len(errs) > 0 {
			return fmt.Errorf("namespaceMapping: %s: %q is not a valid namespace name", ns, t)
		}
		if other, dup := targets[t]; dup {
			return fmt.Errorf("namespaceMapping: %s and %s both map to %s", other, ns, t)
		}
		targets[t] = ns
		if c.From == c.To && t == ns {
			return fmt.Errorf("namespaces: %s would be copied onto itself (from and to are both cluster %s): map it to another namespace", ns, c.From)
		}
	}
	for ns := range c.NamespaceMapping {
		if !seen[ns] {
			return fmt.Errorf("namespaceMapping: %s is not one of namespaces", ns)
		}
	}
	for from, to := range c.StorageClassMapping {
		if errs := validation.IsDNS1123Subdomain(to); len(errs) > 0 || from == "" {
			return fmt.Errorf("storageClassMapping: %q: %q is not a valid storage class name", from, to)
		}
	}
	return c.Mover.check()
}

func (c *CopyVolumes) createClaims() bool { return c.CreateClaims == nil || *c.CreateClaims }

func (c *CopyVolumes) targetNamespace(ns string) string {
	if t, ok := c.NamespaceMapping[ns]; ok && t != "" {
		return t
	}
	return ns
}

// Describe implements engine.Describer.
func (c *CopyVolumes) Describe() string {
	what := "the claims"
	if len(c.Claims) > 0 {
		what = "claims " + strings.Join(c.Claims, ", ")
	}
	kind := "final copy"
	if c.Stage {
		kind = "stage copy"
	}
	return fmt.Sprintf("%s of %s in %s from cluster %s to %s through %s", kind, what, strings.Join(c.Namespaces, ", "), c.From, c.To, storage.Redact(c.Repository))
}

// VerifyVolumes checks claims against the snapshots copied into them.
type VerifyVolumes struct {
	kube.ClusterRef `yaml:",inline"`
	Snapshots       map[string]string `yaml:"snapshots" plan:"required" doc:"The claims to check and their snapshots: namespace/claim → snapshot id, as kube.copyVolumes outputs them (snapshots: \"${{ steps.copy.outputs.snapshots }}\")."`
	Mover           `yaml:",inline"`
}

var (
	_ engine.Action     = (*VerifyVolumes)(nil)
	_ engine.Validator  = (*VerifyVolumes)(nil)
	_ engine.Describer  = (*VerifyVolumes)(nil)
	_ kube.AccessNeeder = (*VerifyVolumes)(nil)
)

// Access implements kube.AccessNeeder: the mover pods' rules (see Mover.access), get on
// persistentvolumeclaims (each claim is checked), and the reads of credentialsFrom and
// passwordFrom.
func (v *VerifyVolumes) Access() []kube.Rule {
	return append(append(v.access(), kube.ResourceRule("persistentvolumeclaims", "get")), v.secretsAccess()...)
}

// Validate implements engine.Validator.
func (v *VerifyVolumes) Validate() error {
	for key, snap := range v.Snapshots {
		ns, name, ok := strings.Cut(key, "/")
		if !ok || len(validation.IsDNS1123Label(ns)) > 0 || len(validation.IsDNS1123Subdomain(name)) > 0 {
			return fmt.Errorf("snapshots: %q is not namespace/claim", key)
		}
		if snap == "" || strings.ContainsAny(snap, " \t\n") {
			return fmt.Errorf("snapshots: %s: %q is not a snapshot id", key, snap)
		}
	}
	return v.Mover.check()
}

// Describe implements engine.Describer.
func (v *VerifyVolumes) Describe() string {
	keys := make([]string, 0, len(v.Snapshots))
	for k := range v.Snapshots {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return fmt.Sprintf("verify claims %s against their snapshots in %s", strings.Join(keys, ", "), storage.Redact(v.Repository))
}
