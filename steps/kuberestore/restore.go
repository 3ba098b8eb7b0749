// Package kuberestore implements kube.restore: objects from a backup (steps/kube/archive, in a
// folder or a bucket prefix)
// created again, in dependency order, by a pool of workers, with owner references remapped to
// the new UIDs, status restored on request, conflicts resolved by policy, and every failure
// collected. Running it again after a crash skips what is already restored and finishes the rest.
package kuberestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/storage"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.restore",
		Doc:  "Restore a backup (folder or bucket prefix): CRDs, namespaces, then objects in dependency order, owner references remapped to new UIDs; every file checked against its manifest sha256.",
		New:  func() engine.Action { return new(Restore) },
	})
}

// Priority returns the order in which resources are restored after CRDs and namespaces, as group
// resources ("resource" for the core group, "resource.group" otherwise): what others refer to
// comes before what refers to it, and workloads come last so their pods find their service
// accounts, secrets, config maps and claims. Resources not listed follow, sorted by name.
// A restore's `order:` replaces this list. Each call returns a new slice, so no caller can
// change the order of every other restore in the process.
func Priority() []string { return slices.Clone(priority) }

var priority = []string{
	"storageclasses.storage.k8s.io",
	"priorityclasses.scheduling.k8s.io",
	"clusterroles.rbac.authorization.k8s.io",
	"clusterrolebindings.rbac.authorization.k8s.io",
	"serviceaccounts",
	"roles.rbac.authorization.k8s.io",
	"rolebindings.rbac.authorization.k8s.io",
	"secrets",
	"configmaps",
	"limitranges",
	"resourcequotas",
	"persistentvolumes",
	"persistentvolumeclaims",
	"services",
	"endpoints",
	"endpointslices.discovery.k8s.io",
	"ingresses.networking.k8s.io",
	"networkpolicies.networking.k8s.io",
	"poddisruptionbudgets.policy",
	"horizontalpodautoscalers.autoscaling",
	"deployments.apps",
	"replicasets.apps",
	"statefulsets.apps",
	"daemonsets.apps",
	"cronjobs.batch",
	"jobs.batch",
	"replicationcontrollers",
	"pods",
}

const (
	crdResource       = "customresourcedefinitions.apiextensions.k8s.io"
	namespaceResource = "namespaces"
	defaultWorkers    = 32
)

// Restore is the config of kube.restore.
type Restore struct {
	kube.ClusterRef      `yaml:",inline"`
	From                 string                   `yaml:"from" plan:"required" doc:"Backup written by kube.backup: a folder (plain path or file:///path) or a bucket prefix (s3://, gs://, azblob://). Every file is checked against the sha256 of the manifest as it streams; a file that does not match fails the restore, naming it. Compressed backups are decompressed as they are read."`
	CredentialsFrom      *storage.CredentialsFrom `yaml:"credentialsFrom" doc:"Secret with the credentials of from (default: the provider's own chain: environment, profile, workload identity)."`
	RestoreStatus        bool                     `yaml:"restoreStatus" doc:"Restore status too, through the /status subresource where the kind has one."`
	RemapOwnerReferences *bool                    `yaml:"remapOwnerReferences" doc:"Point owner references at the restored owners' new UIDs (default true); false drops them."`
	OnConflict           string                   `yaml:"onConflict" doc:"When an object exists that this backup did not restore: skip (default), update or recreate."`
	NamespaceMapping     map[string]string        `yaml:"namespaceMapping" doc:"Restore the objects of namespace old into namespace new (created if missing)."`
	IncludeResources     []string                 `yaml:"includeResources" doc:"Restore only these resources (resource, resource.group or Kind)."`
	ExcludeResources     []string                 `yaml:"excludeResources" doc:"Do not restore these resources (resource, resource.group or Kind)."`
	IncludeNamespaces    []string                 `yaml:"includeNamespaces" doc:"Restore only the objects of these (backup) namespaces; cluster-scoped objects other than namespaces are kept."`
	ExcludeNamespaces    []string                 `yaml:"excludeNamespaces" doc:"Do not restore the objects of these (backup) namespaces."`
	LabelSelector        string                   `yaml:"labelSelector" doc:"Restore only the objects whose labels match."`
	Order                []string                 `yaml:"order" doc:"Resources (resource or resource.group) in restore order after CRDs and namespaces; replaces the built-in priority list."`
	Transforms           []Transform              `yaml:"transforms" doc:"JSON patches applied to matching objects before they are created."`
	CreateThenUpdate     []CreateThenUpdate       `yaml:"createThenUpdate" doc:"Fields left out at create time and set by an update right after (APIs that refuse them on create)."`
	Workers              int                      `yaml:"workers" doc:"Objects restored in parallel (default 32)."`
	UndoOnFailure        bool                     `yaml:"undoOnFailure" doc:"When objects fail to restore, delete what the step created (in this and earlier attempts, as its undo does) before it fails, so that a failed restore leaves nothing behind; a rollback of the run cannot undo a step that did not succeed."`

	selector   labels.Selector
	transforms []transform
	ctu        map[string][][]string // group resource → field paths
	include    map[string]bool
	exclude    map[string]bool
	inNS       map[string]bool
	exNS       map[string]bool
}

var (
	_ engine.Action      = (*Restore)(nil)
	_ engine.Provisioner = (*Restore)(nil)
	_ engine.Undoer      = (*Restore)(nil)
	_ engine.Describer   = (*Restore)(nil)
	_ kube.AccessNeeder  = (*Restore)(nil)
)

// Access implements kube.AccessNeeder. The resources are those of the backup, known only when
// the step runs (and owners may be of any kind), so on every resource:
//   - create: the objects, the namespaces they need, CRDs;
//   - get: an object that exists already, the owner an owner reference names, a CRD until it
//     is established, a namespace before it is created;
//   - update: createThenUpdate's fields, the status (restoreStatus: the status subresource),
//     an object this step created before a crash, onConflict: update;
//   - delete: onConflict: recreate, and undo (undoOnFailure too) deletes what the step created.
//
// And get on the Secret credentialsFrom names, on its cluster.
func (r *Restore) Access() []kube.Rule {
	return append([]kube.Rule{kube.AnyResource("get", "create", "update", "delete")}, r.CredentialsFrom.Access()...)
}

// Transform changes matching objects before they are restored.
type Transform struct {
	Match TransformMatch                   `yaml:"match" doc:"Which objects the transform applies to (all when empty)."`
	When  engine.ObjectExpr[TransformVars] `yaml:"when" doc:"expr-lang condition over object (the object as in the backup, after stripping; params, steps and run too); the transform applies when true. Anything but true or false fails the restore of that object."`
	Patch []map[string]any                 `yaml:"patch" plan:"required" doc:"JSON patch operations (RFC 6902), such as {op: replace, path: /spec/replicas, value: 0}."`
}

// TransformMatch selects objects for a transform.
type TransformMatch struct {
	Resources     []string `yaml:"resources" doc:"Resources (resource, resource.group or Kind)."`
	Namespaces    []string `yaml:"namespaces" doc:"Backup namespaces."`
	LabelSelector string   `yaml:"labelSelector" doc:"Label selector."`
}

// CreateThenUpdate names fields some APIs refuse at create time.
type CreateThenUpdate struct {
	Resources []string `yaml:"resources" plan:"required" doc:"Resources (resource.group, as serviceinstances.servicecatalog.k8s.io)."`
	Fields    []string `yaml:"fields" plan:"required" doc:"Dotted field paths, such as spec.clusterServiceClassRef."`
}

type transform struct {
	resources map[string]bool
	ns        map[string]bool
	selector  labels.Selector
	when      *engine.ObjectExpr[TransformVars] // nil: always
	patch     jsonpatch.Patch
}

// TransformVars are what a transform's when sees besides params, steps and run.
type TransformVars struct {
	Object map[string]any `expr:"object"`
}

// Provision implements engine.Provisioner: it checks the config and derives the selectors, sets
// and compiled transforms Run uses.
func (r *Restore) Provision() error {
	switch r.OnConflict {
	case "", "skip", "update", "recreate":
	default:
		return fmt.Errorf("onConflict: %q is not one of skip, update, recreate", r.OnConflict)
	}
	if err := storage.Check(r.From); err != nil {
		return fmt.Errorf("from: %w", err)
	}
	if err := r.CredentialsFrom.Check(); err != nil {
		return fmt.Errorf("credentialsFrom: %w", err)
	}
	if r.Workers < 0 || r.Workers > 1024 {
		return fmt.Errorf("workers: %d is not between 1 and 1024", r.Workers)
	}
	var err error
	if r.selector, err = parseSelector(r.LabelSelector); err != nil {
		return fmt.Errorf("labelSelector: %v", err)
	}
	for old, nw := range r.NamespaceMapping {
		if old == "" || nw == "" {
			return fmt.Errorf("namespaceMapping: %q: %q: names must not be empty", old, nw)
		}
	}
	r.include, r.exclude = lowerSet(r.IncludeResources), lowerSet(r.ExcludeResources)
	r.inNS, r.exNS = set(r.IncludeNamespaces), set(r.ExcludeNamespaces)
	for i, o := range r.Order {
		if strings.TrimSpace(o) == "" {
			return fmt.Errorf("order[%d]: must not be empty", i)
		}
	}
	r.transforms = nil
	for i, t := range r.Transforms {
		var ct transform
		ct.resources, ct.ns = lowerSet(t.Match.Resources), set(t.Match.Namespaces)
		if ct.selector, err = parseSelector(t.Match.LabelSelector); err != nil {
			return fmt.Errorf("transforms[%d].match.labelSelector: %v", i, err)
		}
		if t.When.Compiled() {
			ct.when = &r.Transforms[i].When
		}
		for j, op := range t.Patch {
			switch op["op"] {
			case "add", "remove", "replace", "move", "copy", "test":
			default:
				return fmt.Errorf("transforms[%d].patch[%d]: op must be one of add, remove, replace, move, copy, test, got %v", i, j, op["op"])
			}
			if p, ok := op["path"].(string); !ok || (p != "" && !strings.HasPrefix(p, "/")) {
				return fmt.Errorf("transforms[%d].patch[%d]: path must be a JSON pointer such as /spec/replicas, got %v", i, j, op["path"])
			}
		}
		b, err := json.Marshal(t.Patch)
		if err != nil {
			return fmt.Errorf("transforms[%d].patch: %v", i, err)
		}
		if ct.patch, err = jsonpatch.DecodePatch(b); err != nil {
			return fmt.Errorf("transforms[%d].patch: %v", i, err)
		}
		r.transforms = append(r.transforms, ct)
	}
	r.ctu = map[string][][]string{}
	for i, c := range r.CreateThenUpdate {
		for _, f := range c.Fields {
			p := strings.Split(f, ".")
			for _, s := range p {
				if s == "" {
					return fmt.Errorf("createThenUpdate[%d].fields: %q is not a dotted field path", i, f)
				}
			}
			if p[0] == "metadata" || p[0] == "apiVersion" || p[0] == "kind" {
				return fmt.Errorf("createThenUpdate[%d].fields: %q cannot be set after create", i, f)
			}
			for _, res := range c.Resources {
				r.ctu[strings.ToLower(res)] = append(r.ctu[strings.ToLower(res)], p)
			}
		}
	}
	return nil
}

func parseSelector(s string) (labels.Selector, error) {
	if s == "" {
		return nil, nil
	}
	return labels.Parse(s)
}

func set(xs []string) map[string]bool {
	if len(xs) == 0 {
		return nil
	}
	m := map[string]bool{}
	for _, x := range xs {
		m[x] = true
	}
	return m
}

func lowerSet(xs []string) map[string]bool {
	if len(xs) == 0 {
		return nil
	}
	m := map[string]bool{}
	for _, x := range xs {
		m[strings.ToLower(x)] = true
	}
	return m
}

// matchResource reports whether a resource is named in set (by resource, resource.group or kind).
func matchResource(set map[string]bool, r archive.Resource) bool {
	return set[r.GroupResource()] || set[r.Resource] || set[strings.ToLower(r.Kind)] ||
		(r.Group != "" && set[strings.ToLower(r.Kind)+"."+r.Group])
}

// Describe implements engine.Describer.
func (r *Restore) Describe() string { return "restore from " + storage.Display(r.From) }

// resPlan is one resource of the backup to restore, with what the cluster says about it.
type resPlan struct {
	ar                             archive.Resource
	Group, Version, Resource, Kind string
	tier                           int
	files                          []archive.File
	gvr                            schema.GroupVersionResource
	apiVersion                     string // the version objects are sent in ("" keeps the backup's)
	namespaced                     bool
	hasStatus                      bool
	resolveErr                     error
	// dryUnresolved: a dry run of a resource whose CRD the restore would create.
	dryUnresolved bool
	resolved      bool
	done          atomic.Bool
	ctu           [][]string
	counts        counts
}

func (p *resPlan) GroupResource() string { return p.ar.GroupResource() }

// APIVersion is the backup's group/version of the resource.
func (p *resPlan) APIVersion() string { return p.ar.APIVersion() }

type counts struct{ restored, updated, skipped, failed atomic.Int64 }

// Run implements engine.Action.
func (r *Restore) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	c, err := r.Client(rc)
	if err != nil {
		return nil, err
	}
	// A dry run reads the backup a backup step of the same dry run wrote instead of From.
	loc, ok := archive.DryRunWritten(rc, r.From)
	if !ok {
		if loc, err = storage.OpenFor(ctx, rc, r.From, r.CredentialsFrom); err != nil {
			return nil, fmt.Errorf("from: %w", err)
		}
	}
	m, raw, err := archive.ReadManifestFile(ctx, loc)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	x := &restorer{
		cfg:      r,
		loc:      loc,
		comp:     m.Compression,
		c:        c,
		rc:       rc,
		backupID: hex.EncodeToString(sum[:8]),
		uids:     map[string]string{},
		byRes:    map[string]*resPlan{},
		dryNS:    map[string]bool{},
		ensured:  map[string]bool{},
		policy:   r.OnConflict,
		remap:    r.RemapOwnerReferences == nil || *r.RemapOwnerReferences,
		warnSeen: map[string]bool{},
	}
	if x.policy == "" {
		x.policy = "skip"
	}
	if x.rest, err = restClientFor(c.Config); err != nil {
		return nil, err
	}
	x.plan(m)
	if err := x.loadSince(ctx); err != nil {
		return nil, err
	}
	if !rc.DryRun {
		if err := x.openRecord(); err != nil {
			return nil, err
		}
		defer x.closeRecord() // after a panic; a no-op once closed below
	}
	workers := r.Workers
	if workers == 0 {
		workers = defaultWorkers
	}
	start := time.Now()
	err = x.run(ctx, workers)
	if rerr := x.closeRecord(); rerr != nil {
		// Undo deletes what the record lists: the step fails rather than leave it incomplete.
		err = errors.Join(err, rerr)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var out engine.Outputs
	if err == nil {
		out, err = x.outputs(time.Since(start))
	}
	if err != nil && r.UndoOnFailure && !rc.DryRun && ctx.Err() == nil {
		if uerr := r.Undo(ctx, rc, engine.Outputs{"createdFile": x.recordPath}); uerr != nil {
			return nil, fmt.Errorf("%w; deleting what it created (undoOnFailure) failed too: %v", err, uerr)
		}
		return nil, fmt.Errorf("%w; what the step had created was deleted again (undoOnFailure)", err)
	}
	return out, err
}

// restClientFor is a client for raw JSON requests, without client-side throttling: a restore
// sends thousands of requests and the server's priority and fairness is the real limit.
func restClientFor(cfg *rest.Config) (*rest.RESTClient, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst, cfg.RateLimiter = -1, 0, nil
	cfg.ContentType, cfg.AcceptContentTypes = "application/json", "application/json"
	cfg.GroupVersion = &schema.GroupVersion{}
	cfg.APIPath = "/"
	cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	return rest.UnversionedRESTClientFor(cfg)
}

// plan sorts the backup's resources into tiers: CRDs, namespaces, the priority list, the rest.
func (x *restorer) plan(m *archive.Manifest) {
	order := priority
	if len(x.cfg.Order) > 0 {
		order = x.cfg.Order
	}
	rank := map[string]int{}
	for i, o := range order {
		rank[strings.ToLower(o)] = i
	}
	for _, res := range m.Resources {
		if x.cfg.include != nil && !matchResource(x.cfg.include, res) || x.cfg.exclude != nil && matchResource(x.cfg.exclude, res) {
			continue
		}
		p := &resPlan{ar: res, Group: res.Group, Version: res.Version, Resource: res.Resource, Kind: res.Kind, ctu: x.cfg.ctu[res.GroupResource()]}
		gr := res.GroupResource()
		switch {
		case gr == crdResource:
			p.tier = 0
		case gr == namespaceResource:
			p.tier = 1
		default:
			if i, ok := rank[gr]; ok {
				p.tier = 2 + i
			} else if i, ok := rank[strings.ToLower(res.Kind)]; ok {
				p.tier = 2 + i
			} else {
				p.tier = 2 + len(order)
			}
		}
		for _, f := range res.Files {
			if f.Namespace != "" && !x.keepNamespace(f.Namespace) {
				continue
			}
			p.files = append(p.files, f)
			x.total += f.Count
		}
		if len(p.files) == 0 {
			continue
		}
		x.resources = append(x.resources, p)
		x.byRes[gr] = p
	}
	sort.SliceStable(x.resources, func(i, j int) bool {
		a, b := x.resources[i], x.resources[j]
		if a.tier != b.tier {
			return a.tier < b.tier
		}
		return a.GroupResource() < b.GroupResource()
	})
}

// keepNamespace applies the namespace filters to a backup namespace.
func (x *restorer) keepNamespace(ns string) bool {
	return (x.cfg.inNS == nil || x.cfg.inNS[ns]) && !x.cfg.exNS[ns]
}

func (x *restorer) mapNS(ns string) string {
	if n, ok := x.cfg.NamespaceMapping[ns]; ok {
		return n
	}
	return ns
}

func (x *restorer) outputs(elapsed time.Duration) (engine.Outputs, error) {
	var restored, updated, skipped, failed int64
	perRes := map[string]any{}
	for _, p := range x.resources {
		r, u, s, f := p.counts.restored.Load(), p.counts.updated.Load(), p.counts.skipped.Load(), p.counts.failed.Load()
		restored, updated, skipped, failed = restored+r, updated+u, skipped+s, failed+f
		perRes[p.GroupResource()] = map[string]any{"restored": r, "updated": u, "skipped": s, "failed": f}
	}
	out := engine.Outputs{
		"backup":          x.backupID,
		"restored":        restored,
		"updated":         updated,
		"skipped":         skipped,
		"alreadyRestored": x.already.Load(),
		"failed":          failed,
		"resources":       perRes,
		"warnings":        x.warningList(),
		"seconds":         elapsed.Seconds(),
	}
	if x.rc.DryRun {
		out["dryRun"] = true
	} else {
		out["createdFile"] = x.recordPath
		out["created"] = x.recorded.Load()
	}
	x.mu.Lock()
	objs := append([]failure(nil), x.failures...)
	x.mu.Unlock()
	if len(objs) == 0 {
		return out, nil
	}
	sort.SliceStable(objs, func(i, j int) bool { return objs[i].line < objs[j].line })
	failures := make([]string, len(objs))
	for i, f := range objs {
		failures[i] = f.line
	}
	summary := failures
	if len(summary) > 10 {
		summary = summary[:10]
	}
	msg := fmt.Sprintf("%d of %d objects failed: %s", len(failures), x.total, strings.Join(summary, "; "))
	if len(failures) > 10 {
		path, err := x.writeFailures(failures)
		if err == nil {
			msg += fmt.Sprintf("; … %d more, all listed in %s", len(failures)-10, path)
		} else {
			msg += fmt.Sprintf("; … %d more", len(failures)-10)
		}
	}
	fe := &failedError{msg: msg}
	for _, f := range objs[:len(summary)] {
		fe.errs = append(fe.errs, f.err)
	}
	var err error = fe
	if x.transient.Load() {
		err = engine.Transient(err)
	}
	return nil, err
}

// failure is an object that could not be restored: its line of the summary and its error.
type failure struct {
	line string
	err  error
}

// failedError is the step's error when objects failed: the summary, wrapping the errors of the
// objects it names, so that errors.Is and errors.As see them (kube.ErrUnknownResource, an API
// status).
type failedError struct {
	msg  string
	errs []error
}

func (e *failedError) Error() string   { return e.msg }
func (e *failedError) Unwrap() []error { return e.errs }

func (x *restorer) writeFailures(failures []string) (string, error) {
	dir, err := x.rc.ArtifactDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "failures.txt")
	return path, os.WriteFile(path, []byte(strings.Join(failures, "\n")+"\n"), 0o644)
}

const maxWarnings = 100

func (x *restorer) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.warnSeen[msg] {
		return
	}
	x.warnSeen[msg] = true
	x.warnCount++
	if len(x.warnings) < maxWarnings {
		x.warnings = append(x.warnings, msg)
	}
}

func (x *restorer) warningList() []any {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := make([]any, 0, len(x.warnings)+1)
	for _, w := range x.warnings {
		out = append(out, w)
	}
	if x.warnCount > len(x.warnings) {
		out = append(out, fmt.Sprintf("… and %d more warnings", x.warnCount-len(x.warnings)))
	}
	return out
}

func (x *restorer) fail(p *resPlan, kind, ns, name string, err error) {
	if p != nil {
		p.counts.failed.Add(1)
	}
	if engine.IsTransient(kube.Classify(err)) {
		x.transient.Store(true)
	}
	line := kube.ObjectName(kind, ns, name) + ": " + strings.ReplaceAll(kube.Reason(err), "\n", " ")
	x.mu.Lock()
	x.failures = append(x.failures, failure{line: line, err: err})
	x.mu.Unlock()
}

// restorer is one run of the step.
type restorer struct {
	cfg      *Restore
	loc      storage.Location    // the backup
	comp     archive.Compression // of its files
	c        *kube.Client
	rc       *engine.RunContext
	rest     *rest.RESTClient
	backupID string
	since    time.Time // when the step first started, by the API server's clock (ownership.go)
	policy   string
	remap    bool

	resources []*resPlan
	byRes     map[string]*resPlan
	total     int64
	done      atomic.Int64
	bytes     atomic.Int64
	already   atomic.Int64

	uidMu sync.RWMutex
	uids  map[string]string // old UID → new UID

	mu        sync.Mutex
	failures  []failure
	warnings  []string
	warnCount int
	warnSeen  map[string]bool
	transient atomic.Bool
	dryNS     map[string]bool // namespaces only created in a dry run
	ensured   map[string]bool
	deferred  []*object
	pending   map[string]bool // old UIDs of deferred objects, during a deferred pass
	crds      []string

	recMu      sync.Mutex
	recordPath string
	record     *recordWriter
	recorded   atomic.Int64
}
