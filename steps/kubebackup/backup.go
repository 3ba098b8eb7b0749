// Package kubebackup implements kube.backup (chosen resources, read with paged lists and written
// as they stream to a backup location — a folder or a bucket prefix — in the steps/kube/archive
// format) and kube.verifyBackup.
package kubebackup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/parallel"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/kube/archive"
	"planrun.dev/planrun/steps/storage"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.backup",
		Doc:  "Back up resources (paged lists, streamed) to a folder or bucket prefix with a manifest of counts and sha256 sums; resumes without listing again what it finished.",
		New:  func() engine.Action { return new(Backup) },
	})
}

// Backup writes chosen resources to a backup location (a folder or a bucket prefix).
//
// Which objects: every object of the chosen resources (resources:, or allResources: true for
// every listable resource but events), in the chosen namespaces (namespaces:, all when empty,
// minus excludeNamespaces:), matching labelSelector:. Cluster-scoped resources are backed up when
// includeClusterScoped is true, which is its default when namespaces is empty (a whole-cluster
// backup) and not otherwise; naming a cluster-scoped resource in resources: while they are
// excluded is an error. The Namespace objects of the chosen namespaces are backed up whenever
// namespaces is among the resources (allResources includes it), even when other cluster-scoped
// resources are not: a restore needs them. With includeBoundVolumes, so are the
// PersistentVolumes the chosen namespaces' claims name (as Velero backs up a claim's volume).
type Backup struct {
	kube.ClusterRef      `yaml:",inline"`
	To                   string                   `yaml:"to" plan:"required" doc:"Backup location: a folder (a plain path or file:///path) or a bucket prefix (s3://bucket/prefix?region=…&endpoint=…, gs://bucket/prefix, azblob://container/prefix). Created if absent; a previous planrun backup in it is replaced; anything else non-empty is refused unless overwrite is true. A dry run only checks it and writes the backup to a temporary folder (removed when the run ends), which kube.verifyBackup and kube.restore of the same dry run read instead."`
	CredentialsFrom      *storage.CredentialsFrom `yaml:"credentialsFrom" doc:"Secret with the credentials of to (default: the provider's own chain: environment, profile, workload identity)."`
	Compression          string                   `yaml:"compression" doc:"none (default), gzip or zstd: how the object files are stored (.jsonl, .jsonl.gz, .jsonl.zst). The manifest's sizes and sums are those of the stored files; a compressed backup is format version 2, which planrun releases without compression refuse to read."`
	Resources            []any                    `yaml:"resources" doc:"Resources to back up: names such as configmaps or deployments.apps (resource.group), or {apiVersion: apps/v1, kind: Deployment}. Required unless allResources is true."`
	AllResources         bool                     `yaml:"allResources" doc:"Back up every resource the server can list, except events (and subresources), and v1 Endpoints where EndpointSlices are served (the endpoints controllers derive both from Services; v1 Endpoints is deprecated) unless includeEndpoints is true."`
	IncludeEndpoints     bool                     `yaml:"includeEndpoints" doc:"With allResources: back up v1 Endpoints too, even where EndpointSlices are served."`
	Namespaces           []string                 `yaml:"namespaces" doc:"Namespaces to back up; empty means all."`
	ExcludeNamespaces    []string                 `yaml:"excludeNamespaces" doc:"Namespaces left out when namespaces is empty."`
	LabelSelector        string                   `yaml:"labelSelector" doc:"Only objects matching this label selector, such as app=web."`
	IncludeClusterScoped *bool                    `yaml:"includeClusterScoped" doc:"Back up cluster-scoped resources too. Default: true when namespaces is empty, false otherwise."`
	Overwrite            bool                     `yaml:"overwrite" doc:"Write into a non-empty folder that is not a planrun backup (its resources/ and manifest.json are replaced; other files are left alone)."`
	IncludeBoundVolumes  bool                     `yaml:"includeBoundVolumes" doc:"With namespaces: also back up the PersistentVolumes of those namespaces' claims (named by a claim's spec.volumeName, unless the volume's claimRef points at another claim), without the other cluster-scoped objects."`

	refs []resourceRef
}

var (
	_ engine.Action      = (*Backup)(nil)
	_ engine.Provisioner = (*Backup)(nil)
	_ engine.Validator   = (*Backup)(nil)
	_ engine.Describer   = (*Backup)(nil)
	_ kube.AccessNeeder  = (*Backup)(nil)
)

// Access implements kube.AccessNeeder:
//   - list on each resource backed up: on every resource with allResources (or resources that
//     hold ${{ }});
//   - get on namespaces: the namespaces named are checked to exist;
//   - list on persistentvolumeclaims and persistentvolumes: includeBoundVolumes lists the claims
//     of the namespaces and the volumes;
//   - get on the Secret credentialsFrom names, on its cluster.
func (b *Backup) Access() []kube.Rule {
	var out []kube.Rule
	if b.AllResources || len(b.Resources) == 0 {
		out = append(out, kube.AnyResource("list"))
	}
	for _, r := range b.Resources {
		switch v := r.(type) {
		case string:
			out = append(out, kube.ResourceRule(v, "list"))
		case map[string]any:
			apiVersion, _ := v["apiVersion"].(string)
			kind, _ := v["kind"].(string)
			out = append(out, kube.KindRule(apiVersion, kind, "list"))
		default:
			out = append(out, kube.AnyResource("list"))
		}
	}
	if len(b.Namespaces) > 0 {
		out = append(out, kube.ResourceRule("namespaces", "get"))
	}
	if b.IncludeBoundVolumes {
		out = append(out, kube.ResourceRule("persistentvolumeclaims", "list"), kube.ResourceRule("persistentvolumes", "list"))
	}
	return append(out, b.CredentialsFrom.Access()...)
}

// resourceRef is one entry of resources:, parsed.
type resourceRef struct {
	name             string // "configmaps", "deployments.apps"
	apiVersion, kind string
}

func (r resourceRef) String() string {
	if r.name != "" {
		return r.name
	}
	return r.apiVersion + " " + r.kind
}

// pageSize is the limit of each list request (a variable for tests only).
var pageSize = 500

// parallelLists is how many lists run at once (each holds at most one object in memory).
const parallelLists = 4

// Provision implements engine.Provisioner: it parses resources into the references Run resolves.
func (b *Backup) Provision() error {
	b.refs = nil
	for i, r := range b.Resources {
		switch v := r.(type) {
		case string:
			if strings.TrimSpace(v) == "" || strings.ContainsAny(v, "/ ") {
				return fmt.Errorf("resources[%d]: %q is not a resource name such as configmaps or deployments.apps (use {apiVersion: apps/v1, kind: Deployment} for a kind)", i, v)
			}
			b.refs = append(b.refs, resourceRef{name: strings.ToLower(v)})
		case map[string]any:
			av, _ := v["apiVersion"].(string)
			k, _ := v["kind"].(string)
			if av == "" || k == "" || len(v) != 2 {
				return fmt.Errorf("resources[%d]: want a resource name or {apiVersion, kind}", i)
			}
			b.refs = append(b.refs, resourceRef{apiVersion: av, kind: k})
		default:
			return fmt.Errorf("resources[%d]: want a resource name or {apiVersion, kind}", i)
		}
	}
	return nil
}

// Validate implements engine.Validator.
func (b *Backup) Validate() error {
	switch {
	case b.AllResources && len(b.Resources) > 0:
		return errors.New("resources: leave it out when allResources is true")
	case !b.AllResources && len(b.Resources) == 0:
		return errors.New("resources: required unless allResources is true")
	case len(b.Namespaces) > 0 && len(b.ExcludeNamespaces) > 0:
		return errors.New("excludeNamespaces: only applies when namespaces is empty (all namespaces)")
	case b.IncludeBoundVolumes && len(b.Namespaces) == 0:
		return errors.New("includeBoundVolumes: only applies with namespaces (a backup of all namespaces takes every PersistentVolume with the cluster-scoped resources)")
	}
	if err := storage.Check(b.To); err != nil {
		return fmt.Errorf("to: %w", err)
	}
	if err := b.CredentialsFrom.Check(); err != nil {
		return fmt.Errorf("credentialsFrom: %w", err)
	}
	if _, err := archive.ParseCompression(b.Compression); err != nil {
		return fmt.Errorf("compression: %v", err)
	}
	if _, err := labels.Parse(b.LabelSelector); err != nil {
		return fmt.Errorf("labelSelector: %v", err)
	}
	return nil
}

// Describe implements engine.Describer.
func (b *Backup) Describe() string {
	what := "all resources"
	if !b.AllResources {
		names := make([]string, len(b.Resources))
		for i, r := range b.Resources {
			if m, ok := r.(map[string]any); ok {
				names[i] = fmt.Sprintf("%v %v", m["apiVersion"], m["kind"])
			} else {
				names[i] = fmt.Sprint(r)
			}
		}
		what = strings.Join(names, ", ")
	}
	where := "all namespaces"
	if len(b.Namespaces) > 0 {
		where = "namespaces " + strings.Join(b.Namespaces, ", ")
	}
	if b.IncludeBoundVolumes {
		where += " with their bound PersistentVolumes"
	}
	return fmt.Sprintf("back up %s in %s to %s", what, where, storage.Display(b.To))
}

func (b *Backup) clusterScoped() bool {
	if b.IncludeClusterScoped != nil {
		return *b.IncludeClusterScoped
	}
	return len(b.Namespaces) == 0
}

// target is one resource to back up.
type target struct {
	gvr        schema.GroupVersionResource
	kind       string
	namespaced bool
}

func (t target) groupResource() string { return archive.GroupResource(t.gvr.Group, t.gvr.Resource) }

// isPersistentVolumes: the core persistentvolumes resource.
func (t target) isPersistentVolumes() bool {
	return t.gvr.Group == "" && t.gvr.Resource == "persistentvolumes"
}

// boundVolumes returns the persistentvolumes target and a filter of the volumes' JSON that keeps
// those the claims of the chosen namespaces name in spec.volumeName, unless the volume's
// claimRef points at another claim (a claim may not take a volume bound elsewhere).
func (b *Backup) boundVolumes(ctx context.Context, c *kube.Client) (target, func(item []byte) bool, error) {
	pvcs := schema.GroupVersionResource{Version: "v1", Resource: "persistentvolumeclaims"}
	claims := map[string]string{} // volume name → "namespace/claim"
	for _, ns := range b.Namespaces {
		opts := metav1.ListOptions{Limit: int64(pageSize)}
		for {
			l, err := c.Dynamic.Resource(pvcs).Namespace(ns).List(ctx, opts)
			if err != nil {
				return target{}, nil, fmt.Errorf("includeBoundVolumes: list persistentvolumeclaims in namespace %s: %w", ns, kube.Classify(err))
			}
			for _, pvc := range l.Items {
				if v, _, _ := unstructured.NestedString(pvc.Object, "spec", "volumeName"); v != "" {
					claims[v] = pvc.GetNamespace() + "/" + pvc.GetName()
				}
			}
			if l.GetContinue() == "" {
				break
			}
			opts.Continue = l.GetContinue()
		}
	}
	t := target{gvr: schema.GroupVersionResource{Version: "v1", Resource: "persistentvolumes"}, kind: "PersistentVolume"}
	keep := func(item []byte) bool {
		var pv struct {
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
			Spec struct {
				ClaimRef *struct {
					Namespace string `json:"namespace"`
					Name      string `json:"name"`
				} `json:"claimRef"`
			} `json:"spec"`
		}
		if json.Unmarshal(item, &pv) != nil {
			return false
		}
		claim, ok := claims[pv.Metadata.Name]
		return ok && (pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Namespace+"/"+pv.Spec.ClaimRef.Name == claim)
	}
	return t, keep, nil
}

// isNamespaces: the core namespaces resource, filtered by the namespace choice like namespaced ones.
func (t target) isNamespaces() bool { return t.gvr.Group == "" && t.gvr.Resource == "namespaces" }

// Run implements engine.Action.
func (b *Backup) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	c, err := b.Client(rc)
	if err != nil {
		return nil, err
	}
	targets, err := b.targets(c)
	if err != nil {
		return nil, err
	}
	var boundVolumes func(item []byte) bool
	for _, ns := range b.Namespaces {
		if _, err := c.Dynamic.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).Get(ctx, ns, metav1.GetOptions{}); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, fmt.Errorf("namespaces: namespace %q not found", ns)
			}
			return nil, kube.ObjectError("Namespace", "", ns, err)
		}
	}
	raw, err := location(b.To)
	if err != nil {
		return nil, err
	}
	comp, err := archive.ParseCompression(b.Compression)
	if err != nil {
		return nil, fmt.Errorf("compression: %v", err)
	}
	loc, err := storage.OpenFor(ctx, rc, raw, b.CredentialsFrom)
	if err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	marker, err := checkLocation(ctx, loc, b.Overwrite)
	if err != nil {
		return nil, err
	}
	cp, err := loadCheckpoint(rc, b.fingerprint(raw, c.Name))
	if err != nil {
		return nil, err
	}
	lister, err := newLister(rc, c)
	if err != nil {
		return nil, err
	}

	if b.IncludeBoundVolumes {
		t, keep, err := b.boundVolumes(ctx, c)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(targets, func(x target) bool { return x.groupResource() == t.groupResource() }) {
			targets = append(targets, t)
			boundVolumes = keep
		}
	}

	// One job per list: per namespace when namespaces are named, else one list across all.
	var jobs []*job
	for _, t := range targets {
		switch {
		case t.namespaced && len(b.Namespaces) > 0:
			for _, ns := range b.Namespaces {
				jobs = append(jobs, &job{target: t, namespace: ns})
			}
		case boundVolumes != nil && t.isPersistentVolumes():
			jobs = append(jobs, &job{target: t, keepItem: boundVolumes})
		default:
			jobs = append(jobs, &job{target: t, keep: b.keepFunc(t)})
		}
	}
	// A dry run writes the backup into a temporary folder instead (see archive.DryRunLocation),
	// so that the verify and restore after it in the same dry run have something to read.
	writeLoc := loc
	if rc.DryRun {
		if writeLoc, err = archive.DryRunLocation(rc, raw); err != nil {
			return nil, err
		}
		marker = false
	}
	present, leftovers, err := prepareLocation(ctx, writeLoc, cp.keep(jobs), marker)
	if err != nil {
		return nil, err
	}
	prog := &progress{report: rc.Progress}
	var todo []*job
	resumed := 0
	for _, j := range jobs {
		if cp.reuse(j, present) {
			resumed++
			prog.resumed(j)
			continue
		}
		// A list finished before whose files are not all there any more is listed again; what
		// is left of it and not written again goes with the other leftovers.
		for _, f := range cp.prev[j.key()].Files {
			if present[f.Path] {
				leftovers = append(leftovers, f.Path)
			}
		}
		todo = append(todo, j)
	}
	opts := listOptions{labelSelector: b.LabelSelector, loc: writeLoc, compression: comp}
	if err := parallel.Each(ctx, parallelLists, todo, func(ctx context.Context, j *job) error {
		if err := lister.backup(ctx, j, opts, prog); err != nil {
			return err
		}
		return cp.finished(ctx, j)
	}); err != nil {
		return nil, err
	}
	if err := removeLeftovers(ctx, writeLoc, leftovers, jobs); err != nil {
		return nil, err
	}

	// Assemble the manifest in a stable order.
	byGR := map[string]*archive.Resource{}
	for _, t := range targets {
		byGR[t.groupResource()] = &archive.Resource{Group: t.gvr.Group, Version: t.gvr.Version, Resource: t.gvr.Resource,
			Kind: t.kind, Namespaced: t.namespaced, Files: []archive.File{}}
	}
	m := &archive.Manifest{Compression: comp, Created: time.Now().UTC(), Cluster: archive.ClusterInfo{Name: c.Name, Server: c.Config.Host}}
	if v, err := c.ServerVersion(ctx); err != nil {
		return nil, fmt.Errorf("server version: %w", err)
	} else if v != nil {
		m.Cluster.ServerVersion = v.GitVersion
	}
	var uncompressed int64
	for _, j := range jobs {
		r := byGR[j.target.groupResource()]
		r.Count += j.count
		r.Files = append(r.Files, j.files...)
		m.Objects += j.count
		for _, f := range j.files {
			m.Bytes += f.Bytes
		}
		uncompressed += j.bytes
	}
	grs := make([]string, 0, len(byGR))
	for gr := range byGR {
		grs = append(grs, gr)
	}
	sort.Strings(grs)
	resources := []any{}
	var files int
	for _, gr := range grs {
		r := byGR[gr]
		sort.Slice(r.Files, func(i, j int) bool { return r.Files[i].Path < r.Files[j].Path })
		files += len(r.Files)
		m.Resources = append(m.Resources, *r)
		resources = append(resources, map[string]any{"resource": gr, "count": r.Count})
	}
	out := engine.Outputs{"dir": loc.String(), "objects": m.Objects, "bytes": m.Bytes, "files": files, "resources": resources,
		"compression": comp.String(), "resumedLists": resumed}
	if comp != archive.None {
		out["uncompressedBytes"] = uncompressed
	}
	if rc.DryRun {
		out["dryRun"] = true
	}
	if err := archive.WriteManifest(ctx, writeLoc, m); err != nil {
		return nil, fmt.Errorf("to: writing the manifest: %w", err)
	}
	return out, nil
}

// keepFunc filters the objects of a list across all namespaces (or of the namespaces resource)
// by namespace; nil keeps everything.
func (b *Backup) keepFunc(t target) func(namespace, name string) bool {
	set := func(names []string) map[string]bool {
		s := make(map[string]bool, len(names))
		for _, n := range names {
			s[n] = true
		}
		return s
	}
	switch {
	case t.isNamespaces() && len(b.Namespaces) > 0:
		in := set(b.Namespaces)
		return func(_, name string) bool { return in[name] }
	case t.isNamespaces() && len(b.ExcludeNamespaces) > 0:
		out := set(b.ExcludeNamespaces)
		return func(_, name string) bool { return !out[name] }
	case t.namespaced && len(b.ExcludeNamespaces) > 0:
		out := set(b.ExcludeNamespaces)
		return func(ns, _ string) bool { return !out[ns] }
	}
	return nil
}

// targets resolves the chosen resources.
func (b *Backup) targets(c *kube.Client) ([]target, error) {
	var out []target
	seen := map[string]bool{}
	add := func(t target, explicit string) error {
		if !t.namespaced && !t.isNamespaces() && !b.clusterScoped() {
			if explicit != "" {
				return fmt.Errorf("resources: %s is cluster-scoped; set includeClusterScoped: true or remove it", explicit)
			}
			return nil
		}
		if !seen[t.groupResource()] {
			seen[t.groupResource()] = true
			out = append(out, t)
		}
		return nil
	}
	if b.AllResources {
		ts, err := discoverAll(c)
		if err != nil {
			return nil, err
		}
		hasSlices := slices.ContainsFunc(ts, func(t target) bool { return t.groupResource() == endpointSlices })
		for _, t := range ts {
			if t.groupResource() == coreEndpoints && hasSlices && !b.IncludeEndpoints {
				// Listing them draws the API server's deprecation warning, and the
				// EndpointSlices hold the same addresses.
				continue
			}
			add(t, "")
		}
		return out, nil
	}
	for _, r := range b.refs {
		var t target
		if r.name != "" {
			gvr, err := c.ResourceFor(r.name)
			if err != nil {
				return nil, err
			}
			gvk, namespaced, err := c.KindFor(gvr)
			if err != nil {
				return nil, err
			}
			t = target{gvr: gvr, kind: gvk.Kind, namespaced: namespaced}
		} else {
			m, err := c.Mapping(r.apiVersion, r.kind)
			if err != nil {
				return nil, err
			}
			t = target{gvr: m.Resource, kind: m.GroupVersionKind.Kind, namespaced: m.Scope.Name() == meta.RESTScopeNameNamespace}
		}
		if err := add(t, r.String()); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// The group/resource names of v1 Endpoints and of the EndpointSlices that replace them.
const (
	coreEndpoints  = "endpoints"
	endpointSlices = "endpointslices.discovery.k8s.io"
)

// discoverAll lists every resource the server can list, in its preferred version, except events
// and subresources.
func discoverAll(c *kube.Client) ([]target, error) {
	c.ResetDiscovery() // CRDs created by earlier steps must be seen
	lists, err := c.Discovery.ServerPreferredResources()
	if err != nil {
		return nil, fmt.Errorf("allResources: discovery: %w", kube.Classify(err))
	}
	var out []target
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if strings.Contains(r.Name, "/") || !hasVerb(r.Verbs, "list") || r.Name == "events" {
				continue
			}
			out = append(out, target{gvr: gv.WithResource(r.Name), kind: r.Kind, namespaced: r.Namespaced})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].groupResource() < out[j].groupResource() })
	return out, nil
}

func hasVerb(verbs []string, v string) bool {
	for _, x := range verbs {
		if x == v {
			return true
		}
	}
	return false
}

// location is to: as the step opens it: a plain path made absolute (outputs and messages name
// it as the run saw it), any URL as written.
func location(to string) (string, error) {
	if strings.Contains(to, "://") {
		return to, nil
	}
	abs, err := filepath.Abs(to)
	if err != nil {
		return "", fmt.Errorf("to: %w", err)
	}
	return abs, nil
}

// progress sums what every list has read and reports it, with a total estimated from what the
// API server says remains of each list under way.
//
// A page of a list without a selector carries metadata.remainingItemCount, the number of objects
// of the list's snapshot after the page: a list's size is then known from its first page on, as
// what it read plus what remains. The total is the sum of these over the lists started (a list
// not started yet counts for nothing until its first page) and of the counts of the lists
// finished. A list whose server says nothing of what remains (a list with a labelSelector)
// counts what it read so far; while such a list is under way and no total was reported yet, none
// is: it would show 100% of a part.
// An estimate is an upper bound when objects are left out as they are read (excludeNamespaces,
// includeBoundVolumes), and exact again when the list is finished.
type progress struct {
	report       func(engine.Progress) // rc.Progress
	mu           sync.Mutex
	done, nbytes int64
	total        int64           // sum of the estimates of the lists started (job.est)
	unknown      int             // lists under way whose size the server did not say
	last         engine.Progress // the last report
}

// resumed counts a list an earlier attempt finished.
func (p *progress) resumed(j *job) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j.est = j.count
	p.total += j.est
	p.done += j.count
	p.nbytes += j.bytes
	p.reportLocked()
}

// page counts a page of j's list, after j.count and j.bytes took it in: objects and bytes it
// added, remaining as the server said (nil when it did not), last when the list is finished.
func (p *progress) page(j *job, objects, bytes int64, remaining *int64, last bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if j.sizeUnknown {
		p.unknown--
	}
	j.sizeUnknown = false
	est := j.count
	switch {
	case last:
	case remaining != nil:
		est += max(0, *remaining)
	default:
		j.sizeUnknown = true
		p.unknown++
	}
	p.total += est - j.est
	j.est = est
	p.done += objects
	p.nbytes += bytes
	p.reportLocked()
}

// restart takes back what an attempt of j's list counted, as it starts over.
func (p *progress) restart(j *job) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if j.sizeUnknown {
		p.unknown--
		j.sizeUnknown = false
	}
	p.total -= j.est
	j.est = 0
	p.done -= j.count
	p.nbytes -= j.bytes
	p.reportLocked()
}

// reportLocked reports where the lists are, unless nothing changed since the last report. Empty
// lists (most resources of an allResources backup) move nothing: before anything was read, a
// report would show "0 objects" while the others are being read.
func (p *progress) reportLocked() {
	if p.done == 0 && p.nbytes == 0 && p.last.Unit == "" {
		return
	}
	next := engine.Progress{Done: p.done, Bytes: p.nbytes, Unit: "objects"}
	if p.unknown == 0 || p.last.Total > 0 {
		// Once a total was shown it stays: with a list of unknown size under way, the total
		// of what is known. It is never less than what was read.
		if next.Total = max(p.total, p.done); next.Total == 0 {
			next.Total = p.last.Total // a list starting over after it was the only one read
		}
	}
	if next == p.last {
		return
	}
	p.last = next
	p.report(next)
}
