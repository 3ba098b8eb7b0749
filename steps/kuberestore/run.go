package kuberestore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/kube/archive"
)

// Phases of owner resolution.
const (
	phaseMain     = iota // defer objects whose owner's resource is not restored yet
	phaseDeferred        // defer objects whose owner is itself still deferred
	phaseLast            // never defer: an owner not found now is dropped
)

type job struct {
	p     *resPlan
	line  []byte
	o     *object
	phase int
	wg    *sync.WaitGroup
}

// run restores every resource, tier by tier, through a pool of workers.
func (x *restorer) run(ctx context.Context, workers int) error {
	jobs := make(chan job, workers*4)
	var pool sync.WaitGroup
	for i := 0; i < workers; i++ {
		pool.Add(1)
		go func() {
			defer pool.Done()
			for j := range jobs {
				if ctx.Err() == nil {
					if j.o != nil {
						x.restoreObject(ctx, j.o, j.phase)
					} else {
						x.handleLine(ctx, j.p, j.line)
					}
				}
				j.wg.Done()
			}
		}()
	}
	stopProgress := x.startProgress()
	defer func() {
		close(jobs)
		pool.Wait()
		stopProgress()
	}()

	crdsWaited := false
	for _, p := range x.resources {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := x.flushRecord(); err != nil {
			return err // what is created from here on could not be undone
		}
		if p.tier > 0 && !crdsWaited {
			crdsWaited = true
			if err := x.waitCRDs(ctx); err != nil {
				return err
			}
		}
		x.resolve(p)
		var wg sync.WaitGroup
		for _, f := range p.files {
			if f.Namespace != "" && p.resolveErr == nil && !p.dryUnresolved {
				if err := x.ensureNamespace(ctx, x.mapNS(f.Namespace)); err != nil {
					return err
				}
			}
			if err := x.feed(ctx, p, f, jobs, &wg); err != nil {
				wg.Wait()
				return err
			}
		}
		wg.Wait()
		p.done.Store(true)
	}
	if !crdsWaited {
		if err := x.waitCRDs(ctx); err != nil {
			return err
		}
	}
	// Objects whose owners were not restored yet when their turn came.
	for phase := phaseDeferred; len(x.deferred) > 0 && ctx.Err() == nil; {
		pending := x.deferred
		x.deferred = nil
		x.pending = map[string]bool{}
		for _, o := range pending {
			x.pending[o.oldUID] = true
		}
		var wg sync.WaitGroup
		for _, o := range pending {
			wg.Add(1)
			select {
			case jobs <- job{o: o, phase: phase, wg: &wg}:
			case <-ctx.Done():
				wg.Done()
			}
		}
		wg.Wait()
		if len(x.deferred) == len(pending) {
			phase = phaseLast // owners that only own each other: give up on them
		}
	}
	return ctx.Err()
}

// feed streams one backup file into the worker pool; its errors name the backup and the file.
// The reader checks the file against its
// manifest entry (size, sha256, count) as it goes and fails at its end when it does not match:
// the restore fails, naming the file. (Objects of the file may have been restored by then; the
// file's sum is only known once it is read, and reading every file twice would double what a
// restore from a bucket downloads.)
func (x *restorer) feed(ctx context.Context, p *resPlan, f archive.File, jobs chan<- job, wg *sync.WaitGroup) error {
	r, err := archive.Open(ctx, x.loc, x.comp, f)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		line, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		x.bytes.Add(int64(len(line)) + 1)
		wg.Add(1)
		select {
		case jobs <- job{p: p, line: bytes.Clone(line), wg: wg}:
		case <-ctx.Done():
			wg.Done()
			return ctx.Err()
		}
	}
}

func (x *restorer) startProgress() func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	report := func() {
		x.rc.Progress(engine.Progress{Done: x.done.Load(), Total: x.total, Bytes: x.bytes.Load(), Unit: "objects"})
	}
	go func() {
		defer close(done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				report()
				return
			case <-t.C:
				report()
				_ = x.flushRecord() // an error sticks: the next resource and the step's end report it
			}
		}
	}()
	return func() { close(stop); <-done }
}

// resolve finds how the cluster serves a resource of the backup.
func (x *restorer) resolve(p *resPlan) {
	if p.resolved {
		return
	}
	p.resolved = true
	gvr := schema.GroupVersionResource{Group: p.Group, Version: p.Version, Resource: p.Resource}
	_, namespaced, err := x.c.KindFor(gvr)
	if err != nil {
		if alt, aerr := x.c.ResourceFor(p.GroupResource()); aerr == nil {
			if _, namespaced, err = x.c.KindFor(alt); err == nil {
				x.warn("%s: the backup has version %s, the cluster serves %s; objects are sent as %s", p.GroupResource(), p.Version, alt.Version, alt.Version)
				gvr = alt
				p.apiVersion = alt.GroupVersion().String()
			}
		}
	}
	if err != nil {
		if x.rc.DryRun && x.byRes[crdResource] != nil {
			p.dryUnresolved = true
			x.warn("%s: not validated, its CRD would be created by this restore (dry run)", p.GroupResource())
			return
		}
		gr := schema.GroupResource{Group: p.Group, Resource: p.Resource}
		if !meta.IsNoMatchError(err) {
			// Discovery failed: the resource may well be served.
			p.resolveErr = fmt.Errorf("%s on cluster %s: %w", gr, clusterName(x.c.Name), kube.Classify(err))
			return
		}
		// The sentinel's text is the message's start ("unknown resource ...").
		p.resolveErr = fmt.Errorf("%w %s on cluster %s (is its CRD installed?)", kube.ErrUnknownResource, gr, clusterName(x.c.Name))
		return
	}
	p.gvr, p.namespaced = gvr, namespaced
	if list, err := x.c.Discovery.ServerResourcesForGroupVersion(gvr.GroupVersion().String()); err == nil {
		for _, r := range list.APIResources {
			if r.Name == gvr.Resource+"/status" {
				p.hasStatus = true
			}
		}
	}
}

func clusterName(n string) string {
	if n == "" {
		return "(default context)"
	}
	return n
}

// path is the URL path of a resource's collection (name "") or of one object.
func (p *resPlan) path(ns, name string) string {
	var b []byte
	if p.gvr.Group == "" {
		b = append(b, "/api/"...)
	} else {
		b = append(b, "/apis/"...)
		b = append(b, p.gvr.Group...)
		b = append(b, '/')
	}
	b = append(b, p.gvr.Version...)
	if p.namespaced {
		b = append(b, "/namespaces/"...)
		b = append(b, ns...)
	}
	b = append(b, '/')
	b = append(b, p.gvr.Resource...)
	if name != "" {
		b = append(b, '/')
		b = append(b, name...)
	}
	return string(b)
}

// request sends one request with a raw JSON body, retrying transient errors a few times.
func (x *restorer) request(ctx context.Context, verb, path string, body []byte, mutate bool) ([]byte, error) {
	var err error
	for attempt := 0; ; attempt++ {
		req := x.rest.Verb(verb).AbsPath(path)
		if mutate {
			if verb != "DELETE" {
				req = req.Param("fieldManager", kube.FieldManager)
			}
			if x.rc.DryRun {
				req = req.Param("dryRun", "All")
			}
		}
		if body != nil {
			req = req.Body(body)
		}
		var out []byte
		out, err = req.Do(ctx).Raw()
		err = statusError(err, out)
		if err == nil || attempt >= 5 || ctx.Err() != nil || !engine.IsTransient(kube.Classify(err)) || apierrors.IsConflict(err) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(50<<attempt) * time.Millisecond):
		}
	}
}

// statusError gives back the API server's own message: the raw client decodes error bodies with
// a serializer that knows no group version, and falls back to a generic "the server rejected our
// request" that hides what was wrong.
func statusError(err error, body []byte) error {
	if err == nil || len(body) == 0 {
		return err
	}
	var st metav1.Status
	if json.Unmarshal(body, &st) != nil || st.Kind != "Status" || st.Status != metav1.StatusFailure || st.Message == "" {
		return err
	}
	return &apierrors.StatusError{ErrStatus: st}
}

type objectMeta struct {
	Metadata struct {
		UID             string `json:"uid"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
}

func parseMeta(b []byte) (objectMeta, error) {
	var m objectMeta
	err := json.Unmarshal(b, &m)
	return m, err
}

func decode(b []byte) (map[string]any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}

// ensureNamespace creates a namespace the restore needs, unless it exists.
func (x *restorer) ensureNamespace(ctx context.Context, name string) error {
	x.mu.Lock()
	ok := x.ensured[name]
	x.mu.Unlock()
	if ok {
		return nil
	}
	nsPath := "/api/v1/namespaces/" + name
	live, err := x.request(ctx, "GET", nsPath, nil, false)
	if err == nil && !x.rc.DryRun {
		x.recordOwnNamespace(name, live)
	}
	if apierrors.IsNotFound(err) {
		body, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{
			"name": name}})
		var out []byte
		out, err = x.request(ctx, "POST", "/api/v1/namespaces", body, true)
		if err == nil {
			if x.rc.DryRun {
				x.mu.Lock()
				x.dryNS[name] = true
				x.mu.Unlock()
			} else if m, perr := parseMeta(out); perr == nil {
				x.addRecord(record{Version: "v1", Resource: "namespaces", Kind: "Namespace", Name: name, UID: m.Metadata.UID})
			}
		} else if apierrors.IsAlreadyExists(err) {
			err = nil
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return kube.ObjectError("Namespace", "", name, err)
	}
	x.mu.Lock()
	x.ensured[name] = true
	x.mu.Unlock()
	return nil
}

// recordOwnNamespace puts a namespace this run created before a crash back on the undo record:
// the record is flushed every 250 ms, so the first attempt may have died before writing it.
func (x *restorer) recordOwnNamespace(name string, live []byte) {
	obj, err := decode(live)
	if err != nil {
		return
	}
	meta, _ := obj["metadata"].(map[string]any)
	if uid, _ := meta["uid"].(string); uid != "" && x.createdHere(meta) {
		x.addRecord(record{Version: "v1", Resource: "namespaces", Kind: "Namespace", Name: name, UID: uid})
	}
}

// waitCRDs waits until the CRDs this restore created or found are established, then makes
// discovery learn their resources.
func (x *restorer) waitCRDs(ctx context.Context) error {
	x.mu.Lock()
	names := append([]string(nil), x.crds...)
	x.mu.Unlock()
	if len(names) == 0 || x.rc.DryRun {
		return nil
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, n := range names {
		for {
			b, err := x.request(ctx, "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"+n, nil, false)
			if err == nil && established(b) {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Now().After(deadline) {
				x.warn("CustomResourceDefinition %s: not established after 2m", n)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	x.c.ResetDiscovery()
	return nil
}

func established(b []byte) bool {
	var crd struct {
		Status struct {
			Conditions []metav1.Condition `json:"conditions"`
		} `json:"status"`
	}
	if json.Unmarshal(b, &crd) != nil {
		return false
	}
	for _, c := range crd.Status.Conditions {
		if c.Type == "Established" && c.Status == metav1.ConditionTrue {
			return true
		}
	}
	return false
}
