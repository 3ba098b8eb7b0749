// Package kube is the shared base of the Kubernetes step types: one client per plan cluster,
// shared by every step of a run, resolving kinds to resources through discovery, and errors
// classified and worded for operators. Step types live in their own packages (steps/kubeget,
// steps/kubeapply, ...) and use it; the engine never sees Kubernetes.
package kube

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"

	"planrun.dev/planrun/engine"
)

// FieldManager is the server-side apply field manager of every change planrun makes.
const FieldManager = "planrun"

// Client talks to one cluster of a plan.
type Client struct {
	// Name is the plan's name for the cluster ("" for the default cluster).
	Name      string
	Config    *rest.Config
	Dynamic   dynamic.Interface
	Discovery discovery.CachedDiscoveryInterface
	mapper    *restmapper.DeferredDiscoveryRESTMapper

	versionOnce sync.Once
	version     *version.Info
	versionErr  error

	warnings *warningRouter
}

// ClusterRef is embedded in the config of every Kubernetes step: which of the plan's clusters
// the step works on.
type ClusterRef struct {
	Cluster string `yaml:"cluster" plan:"cluster" doc:"Name of one of the plan's clusters; may be left out when the plan has at most one."`
}

// Client returns the shared client of the step's cluster, making it on first use in the run.
func (c ClusterRef) Client(rc *engine.RunContext) (*Client, error) {
	name, cluster, err := PickCluster(rc.Clusters, c.Cluster)
	if err != nil {
		return nil, err
	}
	v, err := rc.Shared("kube.client/"+name, func() (any, error) { return NewClient(name, cluster) })
	if err != nil {
		return nil, err
	}
	client := v.(*Client)
	client.warnings.to(rc, rc.Warn)
	return client, nil
}

// PickCluster resolves a step's cluster: the named one, else the plan's only cluster, else the
// default kubeconfig context when the plan names no clusters.
func PickCluster(clusters map[string]*engine.Cluster, name string) (string, *engine.Cluster, error) {
	if name != "" {
		c, ok := clusters[name]
		if !ok {
			return "", nil, fmt.Errorf("cluster: the plan has no cluster %q (clusters: %s)", name, clusterNames(clusters))
		}
		return name, c, nil
	}
	switch len(clusters) {
	case 0:
		return "", &engine.Cluster{}, nil
	case 1:
		for n, c := range clusters {
			return n, c, nil
		}
	}
	return "", nil, fmt.Errorf("cluster: required, the plan has several clusters (%s)", clusterNames(clusters))
}

func clusterNames(clusters map[string]*engine.Cluster) string {
	names := make([]string, 0, len(clusters))
	for n := range clusters {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// NewClient connects to a cluster as kubectl would: the cluster's kubeconfig (else $KUBECONFIG,
// else ~/.kube/config, else in-cluster) and context (else the current one).
func NewClient(name string, c *engine.Cluster) (*Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if c.Kubeconfig != "" {
		rules.ExplicitPath = c.Kubeconfig
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: c.Context}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", displayName(name), err)
	}
	return NewClientForConfig(name, cfg)
}

// NewClientForConfig builds a client from a rest config (tests use it directly).
func NewClientForConfig(name string, cfg *rest.Config) (*Client, error) {
	cfg = rest.CopyConfig(cfg)
	// client-go's default of 5 requests/s would make a restore of thousands of objects crawl;
	// API Priority and Fairness on the server is the real limit.
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 1000, 2000
	}
	cfg.UserAgent = "planrun"
	warnings := &warningRouter{seen: map[string]bool{}}
	if cfg.WarningHandler == nil && cfg.WarningHandlerWithContext == nil {
		cfg.WarningHandler = warnings
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", displayName(name), err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", displayName(name), err)
	}
	cached := memory.NewMemCacheClient(disc)
	return &Client{Name: name, Config: cfg, Dynamic: dyn, Discovery: cached, mapper: restmapper.NewDeferredDiscoveryRESTMapper(cached), warnings: warnings}, nil
}

func displayName(name string) string {
	if name == "" {
		return "(default context)"
	}
	return name
}

// Mapping resolves apiVersion and kind to a resource. A kind the cached discovery does not know
// triggers one refresh, so a CRD created by an earlier step is found.
func (c *Client) Mapping(apiVersion, kind string) (*meta.RESTMapping, error) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, fmt.Errorf("apiVersion %q: %w", apiVersion, err)
	}
	gvk := gv.WithKind(kind)
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if meta.IsNoMatchError(err) {
		return nil, &notServedError{sentinel: ErrUnknownKind, cause: err,
			msg: fmt.Sprintf("unknown kind %s %s on cluster %s (is its CRD installed?)", apiVersion, kind, displayName(c.Name))}
	}
	if err != nil {
		return nil, Classify(err)
	}
	return m, nil
}

// ResourceFor resolves a resource name ("deployments", "deployments.apps", "serviceinstances.
// servicecatalog.k8s.io") to its preferred version, refreshing discovery once if unknown.
func (c *Client) ResourceFor(resource string) (schema.GroupVersionResource, error) {
	gr := schema.ParseGroupResource(resource)
	gvr, err := c.mapper.ResourceFor(gr.WithVersion(""))
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		gvr, err = c.mapper.ResourceFor(gr.WithVersion(""))
	}
	if meta.IsNoMatchError(err) {
		return schema.GroupVersionResource{}, &notServedError{sentinel: ErrUnknownResource, cause: err,
			msg: fmt.Sprintf("unknown resource %q on cluster %s", resource, displayName(c.Name))}
	}
	if err != nil {
		return schema.GroupVersionResource{}, fmt.Errorf("resource %q on cluster %s: %w", resource, displayName(c.Name), Classify(err))
	}
	return gvr, nil
}

// KindFor returns the kind of a resource and whether it is namespaced.
func (c *Client) KindFor(gvr schema.GroupVersionResource) (schema.GroupVersionKind, bool, error) {
	gvk, err := c.mapper.KindFor(gvr)
	if err != nil {
		return schema.GroupVersionKind{}, false, fmt.Errorf("resource %s: %w", gvr, err)
	}
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return gvk, false, Classify(err)
	}
	return gvk, m.Scope.Name() == meta.RESTScopeNameNamespace, nil
}

// ResetDiscovery forgets what discovery knew (after CRDs were created or removed).
func (c *Client) ResetDiscovery() { c.mapper.Reset() }

// Resource returns the dynamic client for a mapping, in namespace ns for namespaced resources.
func (c *Client) Resource(m *meta.RESTMapping, ns string) dynamic.ResourceInterface {
	r := c.Dynamic.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return r.Namespace(ns)
	}
	return r
}

// ServerVersion returns the cluster's version, asked once per run.
func (c *Client) ServerVersion(ctx context.Context) (*version.Info, error) {
	c.versionOnce.Do(func() {
		c.version, c.versionErr = c.Discovery.ServerVersion()
		c.versionErr = Classify(c.versionErr)
	})
	return c.version, c.versionErr
}

// DryRun returns the dry-run option for mutations in a dry run: the server validates and
// admits the change (webhooks included) and stores nothing.
func DryRun(rc *engine.RunContext) []string {
	if rc.DryRun {
		return []string{"All"}
	}
	return nil
}
