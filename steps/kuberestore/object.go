package kuberestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/kube/archive"
)

// object is one object of the backup, ready to be created.
type object struct {
	p        *resPlan
	obj      map[string]any
	meta     map[string]any
	kind     string
	ns, name string // in the cluster (namespace mapped)
	oldUID   string
	status   any   // restored through /status after create
	later    []any // createThenUpdate values, by p.ctu index (nil: absent)
	hasLater bool
}

// serverFields are the metadata fields the API server owns.
var serverFields = []string{"uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"}

// handleLine restores one line of a backup file.
func (x *restorer) handleLine(ctx context.Context, p *resPlan, line []byte) {
	o, err := x.prepare(p, line)
	if err != nil {
		kind, ns, name := identify(p, line)
		x.fail(p, kind, ns, name, err)
		x.done.Add(1)
		return
	}
	if o == nil { // filtered out
		x.done.Add(1)
		return
	}
	x.restoreObject(ctx, o, phaseMain)
}

// identify names an object that could not be prepared, as well as it can.
func identify(p *resPlan, line []byte) (kind, ns, name string) {
	var m struct {
		Kind     string `json:"kind"`
		Metadata struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(line, &m)
	kind = m.Kind
	if kind == "" {
		kind = p.Kind
	}
	name = m.Metadata.Name
	if name == "" {
		name = "(unnamed)"
	}
	return kind, m.Metadata.Namespace, name
}

// perClusterConfigMaps are written into every namespace by the cluster's own controllers, with
// the cluster's own CA: the source's copy would give the target's pods a CA that did not sign
// their API server's certificate (until the target's controller wrote it back). They are never
// restored, whatever the conflict policy.
var perClusterConfigMaps = map[string]bool{
	"kube-root-ca.crt":         true, // kube-controller-manager's root CA publisher
	"openshift-service-ca.crt": true, // OpenShift's service CA operator
}

// prepare decodes an object of the backup and makes it what will be created: filtered,
// stripped, transformed, mapped. It returns nil for an object the filters leave out.
func (x *restorer) prepare(p *resPlan, line []byte) (*object, error) {
	if p.resolveErr != nil {
		return nil, p.resolveErr
	}
	obj, err := decode(line)
	if err != nil {
		return nil, fmt.Errorf("invalid JSON in the backup: %v", err)
	}
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		return nil, errors.New("the object has no metadata")
	}
	o := &object{p: p, obj: obj, meta: meta}
	o.kind, _ = obj["kind"].(string)
	if o.kind == "" {
		o.kind = p.Kind
		obj["kind"] = p.Kind
	}
	if _, ok := obj["apiVersion"].(string); !ok {
		obj["apiVersion"] = p.APIVersion()
	}
	srcNS, _ := meta["namespace"].(string)
	o.name, _ = meta["name"].(string)
	o.oldUID, _ = meta["uid"].(string)
	isNamespace := p.Group == "" && p.Resource == "namespaces"
	if isNamespace && !x.keepNamespace(o.name) {
		return nil, nil
	}
	lbls := labelSet(meta)
	if x.cfg.selector != nil && !x.cfg.selector.Matches(lbls) {
		return nil, nil
	}
	if p.Group == "" && p.Resource == "configmaps" && perClusterConfigMaps[o.name] {
		return nil, nil
	}
	strip(p, obj, meta)
	if !x.cfg.RestoreStatus || p.tier <= 1 {
		// The status of CRDs and namespaces belongs to the API server's own controllers.
		delete(obj, "status")
	}
	for i := range x.cfg.transforms {
		if err := x.applyTransform(&x.cfg.transforms[i], o, srcNS, lbls); err != nil {
			return nil, err
		}
	}
	// Mapping.
	if isNamespace {
		o.name = x.mapNS(o.name)
		o.meta["name"] = o.name
	}
	if srcNS != "" {
		o.ns = x.mapNS(srcNS)
		o.meta["namespace"] = o.ns
	}
	if p.Group == "" && p.Resource == "persistentvolumes" {
		// The claim a volume is bound to moves with its namespace.
		if spec, _ := o.obj["spec"].(map[string]any); spec != nil {
			if ref, _ := spec["claimRef"].(map[string]any); ref != nil {
				if ns, _ := ref["namespace"].(string); ns != "" {
					ref["namespace"] = x.mapNS(ns)
				}
			}
		}
	}
	if o.name == "" {
		return nil, errors.New("the object has no name")
	}
	if p.apiVersion != "" {
		o.obj["apiVersion"] = p.apiVersion
	}
	if x.cfg.RestoreStatus && p.hasStatus {
		if st, ok := o.obj["status"]; ok && !empty(st) {
			o.status = st
		}
		delete(o.obj, "status")
	}
	if len(p.ctu) > 0 {
		o.later = make([]any, len(p.ctu))
		for i, path := range p.ctu {
			if v, ok := kube.TakePath(o.obj, path); ok {
				o.later[i], o.hasLater = v, true
			}
		}
	}
	if !x.remap {
		if _, ok := o.meta["ownerReferences"]; ok {
			delete(o.meta, "ownerReferences")
		}
	}
	return o, nil
}

func empty(v any) bool {
	m, ok := v.(map[string]any)
	return v == nil || ok && len(m) == 0
}

func labelSet(meta map[string]any) labels.Set {
	l, _ := meta["labels"].(map[string]any)
	set := make(labels.Set, len(l))
	for k, v := range l {
		s, _ := v.(string)
		set[k] = s
	}
	return set
}

// strip removes what the API server owns, and the fields that would tie an object to the old
// cluster's allocations.
func strip(p *resPlan, obj, meta map[string]any) {
	for _, f := range serverFields {
		delete(meta, f)
	}
	spec, _ := obj["spec"].(map[string]any)
	switch {
	case p.Group == "" && p.Resource == "services" && spec != nil:
		if ip, _ := spec["clusterIP"].(string); ip != "None" {
			delete(spec, "clusterIP")
			delete(spec, "clusterIPs")
		}
	case p.Group == "batch" && p.Resource == "jobs" && spec != nil:
		if manual, _ := spec["manualSelector"].(bool); !manual {
			delete(spec, "selector")
			if tpl, _ := spec["template"].(map[string]any); tpl != nil {
				if tm, _ := tpl["metadata"].(map[string]any); tm != nil {
					if l, _ := tm["labels"].(map[string]any); l != nil {
						delete(l, "controller-uid")
						delete(l, "batch.kubernetes.io/controller-uid")
					}
				}
			}
		}
	case p.Group == "" && p.Resource == "persistentvolumes" && spec != nil:
		if ref, _ := spec["claimRef"].(map[string]any); ref != nil {
			delete(ref, "uid")
			delete(ref, "resourceVersion")
		}
	}
}

// keepGenerated gives o, about to replace the live object, the fields that the sanitizing
// removed for the API server to generate them at create (a Job's selector and the controller
// labels of its template, a Service's cluster IPs): the live object has them, and most are
// immutable.
func keepGenerated(o *object, live map[string]any) {
	spec, _ := o.obj["spec"].(map[string]any)
	lspec, _ := live["spec"].(map[string]any)
	if spec == nil || lspec == nil {
		return
	}
	copyField := func(dst, src map[string]any, key string) {
		if v, ok := src[key]; ok {
			if _, has := dst[key]; !has {
				dst[key] = v
			}
		}
	}
	switch {
	case o.p.Group == "" && o.p.Resource == "services":
		copyField(spec, lspec, "clusterIP")
		copyField(spec, lspec, "clusterIPs")
	case o.p.Group == "batch" && o.p.Resource == "jobs":
		copyField(spec, lspec, "selector")
		labels := func(m map[string]any) map[string]any {
			tpl, _ := m["template"].(map[string]any)
			tm, _ := tpl["metadata"].(map[string]any)
			l, _ := tm["labels"].(map[string]any)
			return l
		}
		if l, ll := labels(spec), labels(lspec); l != nil && ll != nil {
			copyField(l, ll, "controller-uid")
			copyField(l, ll, "batch.kubernetes.io/controller-uid")
		}
	}
}

func (x *restorer) applyTransform(t *transform, o *object, srcNS string, lbls labels.Set) error {
	if t.resources != nil && !matchResource(t.resources, o.p.ar) {
		return nil
	}
	if t.ns != nil && !t.ns[srcNS] {
		return nil
	}
	if t.selector != nil && !t.selector.Matches(lbls) {
		return nil
	}
	if t.when != nil {
		// expr-lang compares plain numbers, not json.Number: give it a plain copy.
		b, err := json.Marshal(o.obj)
		if err != nil {
			return err
		}
		var plain map[string]any
		if err := json.Unmarshal(b, &plain); err != nil {
			return err
		}
		ok, err := t.when.EvalBool(x.rc, TransformVars{Object: plain})
		if err != nil {
			return fmt.Errorf("transform when: %w", err)
		}
		if !ok {
			return nil
		}
	}
	b, err := json.Marshal(o.obj)
	if err != nil {
		return err
	}
	if b, err = t.patch.Apply(b); err != nil {
		return fmt.Errorf("transform patch: %v", err)
	}
	obj, err := decode(b)
	if err != nil {
		return err
	}
	meta, _ := obj["metadata"].(map[string]any)
	if meta == nil {
		return errors.New("transform patch: the object lost its metadata")
	}
	o.obj, o.meta = obj, meta
	o.name, _ = meta["name"].(string)
	return nil
}

func (x *restorer) lookupUID(old string) (string, bool) {
	x.uidMu.RLock()
	defer x.uidMu.RUnlock()
	n, ok := x.uids[old]
	return n, ok
}

func (x *restorer) setUID(old, nw string) {
	if old == "" || nw == "" {
		return
	}
	x.uidMu.Lock()
	x.uids[old] = nw
	x.uidMu.Unlock()
}

// resolveOwners points owner references at the owners' UIDs in the cluster. It reports whether
// the object must wait for an owner that is restored later.
func (x *restorer) resolveOwners(ctx context.Context, o *object, phase int) (bool, error) {
	refs, _ := o.meta["ownerReferences"].([]any)
	if len(refs) == 0 {
		return false, nil
	}
	kept := make([]any, 0, len(refs))
	for _, r := range refs {
		ref, ok := r.(map[string]any)
		if !ok {
			continue
		}
		old, _ := ref["uid"].(string)
		if n, ok := x.lookupUID(old); ok {
			ref["uid"] = n
			kept = append(kept, ref)
			continue
		}
		apiVersion, _ := ref["apiVersion"].(string)
		kind, _ := ref["kind"].(string)
		name, _ := ref["name"].(string)
		m, err := x.c.Mapping(apiVersion, kind)
		if err != nil {
			x.warn("%s: owner reference to %s %s dropped: %v", kube.ObjectName(o.kind, o.ns, o.name), kind, name, err)
			continue
		}
		switch phase {
		case phaseMain:
			if op := x.byRes[archive.GroupResource(m.Resource.Group, m.Resource.Resource)]; op != nil && !op.done.Load() {
				return true, nil
			}
		case phaseDeferred:
			if x.pending[old] {
				return true, nil
			}
		}
		live, err := x.c.Resource(m, o.ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			x.warn("%s: owner reference to %s dropped: the owner is neither in the backup nor in the cluster", kube.ObjectName(o.kind, o.ns, o.name), kube.ObjectName(kind, o.ns, name))
			continue
		}
		if err != nil {
			return false, fmt.Errorf("owner %s: %w", kube.ObjectName(kind, o.ns, name), err)
		}
		x.setUID(old, string(live.GetUID()))
		ref["uid"] = string(live.GetUID())
		kept = append(kept, ref)
	}
	if len(kept) == 0 {
		delete(o.meta, "ownerReferences")
	} else {
		o.meta["ownerReferences"] = kept
	}
	return false, nil
}

// restoreObject creates one object, or resolves its conflict with an existing one.
func (x *restorer) restoreObject(ctx context.Context, o *object, phase int) {
	p := o.p
	if p.dryUnresolved {
		p.counts.restored.Add(1)
		x.done.Add(1)
		return
	}
	wait, err := x.resolveOwners(ctx, o, phase)
	if wait {
		x.mu.Lock()
		x.deferred = append(x.deferred, o)
		x.mu.Unlock()
		return
	}
	defer x.done.Add(1)
	if err != nil {
		x.fail(p, o.kind, o.ns, o.name, err)
		return
	}
	body, err := json.Marshal(o.obj)
	if err != nil {
		x.fail(p, o.kind, o.ns, o.name, err)
		return
	}
	out, err := x.request(ctx, "POST", p.path(o.ns, ""), body, true)
	switch {
	case err == nil:
		x.created(ctx, o, out)
	case apierrors.IsAlreadyExists(err):
		x.existing(ctx, o)
	case x.rc.DryRun && apierrors.IsNotFound(err) && x.dryNamespace(o.ns):
		p.counts.restored.Add(1) // its namespace would have been created
	default:
		if ctx.Err() == nil {
			x.fail(p, o.kind, o.ns, o.name, err)
		}
	}
}

func (x *restorer) dryNamespace(ns string) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.dryNS[ns]
}

// created finishes a created object: UID map, undo record, fields set by update, status.
func (x *restorer) created(ctx context.Context, o *object, out []byte) {
	p := o.p
	m, err := parseMeta(out)
	if err != nil {
		x.fail(p, o.kind, o.ns, o.name, fmt.Errorf("reading the created object: %v", err))
		return
	}
	if !x.rc.DryRun {
		x.setUID(o.oldUID, m.Metadata.UID)
		x.addRecord(record{Group: p.gvr.Group, Version: p.gvr.Version, Resource: p.gvr.Resource, Kind: o.kind, Namespace: o.ns, Name: o.name, UID: m.Metadata.UID})
		if p.Group == "apiextensions.k8s.io" && p.Resource == "customresourcedefinitions" {
			x.mu.Lock()
			x.crds = append(x.crds, o.name)
			x.mu.Unlock()
		}
	}
	if err := x.finish(ctx, o, m.Metadata.ResourceVersion, m.Metadata.UID); err != nil {
		x.fail(p, o.kind, o.ns, o.name, err)
		return
	}
	p.counts.restored.Add(1)
}

// finish sets the createThenUpdate fields and the status of an object created at version rv.
func (x *restorer) finish(ctx context.Context, o *object, rv, uid string) error {
	if x.rc.DryRun {
		return nil
	}
	if o.hasLater {
		for i, path := range o.p.ctu {
			if o.later[i] != nil {
				kube.SetPath(o.obj, path, o.later[i])
			}
		}
		var err error
		if rv, err = x.update(ctx, o, rv, ""); err != nil {
			return fmt.Errorf("update after create: %w", err)
		}
	}
	if o.status != nil {
		if err := x.updateStatus(ctx, o, rv); err != nil {
			return fmt.Errorf("status: %w", err)
		}
	}
	return nil
}

// updateStatus puts o's status from the backup at version rv. A controller of the target may
// have set, since the object was created, status fields that the API server then keeps
// immutable (a Job's startTime once it runs): the fields its refusal names keep their live
// values, and the rest of the status is restored.
func (x *restorer) updateStatus(ctx context.Context, o *object, rv string) error {
	o.obj["status"] = o.status
	_, err := x.update(ctx, o, rv, "/status")
	var se apierrors.APIStatus
	if err == nil || !apierrors.IsInvalid(err) || !errors.As(err, &se) || se.Status().Details == nil {
		return err
	}
	want, ok := o.status.(map[string]any)
	if !ok {
		return err
	}
	b, gerr := x.request(ctx, "GET", o.p.path(o.ns, o.name), nil, false)
	if gerr != nil {
		return err
	}
	live, derr := decode(b)
	if derr != nil {
		return err
	}
	liveStatus, _ := live["status"].(map[string]any)
	status := maps.Clone(want)
	kept := false
	for _, c := range se.Status().Details.Causes {
		field, top := strings.CutPrefix(c.Field, "status.")
		if !top || field == "" || strings.ContainsAny(field, ".[") {
			continue // only whole top-level status fields are taken from the live object
		}
		if v, ok := liveStatus[field]; ok {
			status[field] = v
		} else {
			delete(status, field)
		}
		kept = true
	}
	if !kept {
		return err
	}
	lmeta, _ := live["metadata"].(map[string]any)
	rv, _ = lmeta["resourceVersion"].(string)
	o.obj["status"] = status
	_, err = x.update(ctx, o, rv, "/status")
	return err
}

// update puts o at version rv (sub "/status" for the status), getting a fresh version on a
// conflict. It returns the new version.
func (x *restorer) update(ctx context.Context, o *object, rv, sub string) (string, error) {
	path := o.p.path(o.ns, o.name)
	for attempt := 0; ; attempt++ {
		o.meta["resourceVersion"] = rv
		body, err := json.Marshal(o.obj)
		delete(o.meta, "resourceVersion")
		if err != nil {
			return "", err
		}
		out, err := x.request(ctx, "PUT", path+sub, body, true)
		if err == nil {
			m, err := parseMeta(out)
			return m.Metadata.ResourceVersion, err
		}
		if !apierrors.IsConflict(err) || attempt >= 5 {
			return "", err
		}
		live, gerr := x.request(ctx, "GET", path, nil, false)
		if gerr != nil {
			return "", gerr
		}
		m, gerr := parseMeta(live)
		if gerr != nil {
			return "", gerr
		}
		rv = m.Metadata.ResourceVersion
	}
}

// existing handles an object that is already there: its own (restored before from this backup)
// and identical is skipped, its own and different is updated, another's follows the policy.
func (x *restorer) existing(ctx context.Context, o *object) {
	p := o.p
	path := p.path(o.ns, o.name)
	b, err := x.request(ctx, "GET", path, nil, false)
	if err != nil {
		x.fail(p, o.kind, o.ns, o.name, fmt.Errorf("exists, but cannot be read: %w", err))
		return
	}
	live, err := decode(b)
	if err != nil {
		x.fail(p, o.kind, o.ns, o.name, err)
		return
	}
	lmeta, _ := live["metadata"].(map[string]any)
	uid, _ := lmeta["uid"].(string)
	rv, _ := lmeta["resourceVersion"].(string)
	own := x.createdHere(lmeta)
	if !x.rc.DryRun {
		x.setUID(o.oldUID, uid)
		if own {
			// Created by this step before a crash: undo must still know it.
			x.addRecord(record{Group: p.gvr.Group, Version: p.gvr.Version, Resource: p.gvr.Resource, Kind: o.kind, Namespace: o.ns, Name: o.name, UID: uid})
		}
		if own && p.Group == "apiextensions.k8s.io" && p.Resource == "customresourcedefinitions" {
			x.mu.Lock()
			x.crds = append(x.crds, o.name)
			x.mu.Unlock()
		}
	}
	if x.same(o, live) {
		p.counts.skipped.Add(1)
		x.already.Add(1)
		return
	}
	switch {
	case own || x.policy == "update":
		// Created by this step and different: an attempt died between create and the
		// createThenUpdate fields or the status. Finish it whatever the policy.
		err := x.updateExisting(ctx, o, rv, live)
		if err != nil {
			x.fail(p, o.kind, o.ns, o.name, err)
			return
		}
		p.counts.updated.Add(1)
	case x.policy == "recreate":
		if err := x.recreate(ctx, o, uid); err != nil {
			x.fail(p, o.kind, o.ns, o.name, err)
		}
	default:
		p.counts.skipped.Add(1)
	}
}

func (x *restorer) updateExisting(ctx context.Context, o *object, rv string, live map[string]any) error {
	keepGenerated(o, live)
	if o.hasLater {
		for i, path := range o.p.ctu {
			if o.later[i] != nil {
				kube.SetPath(o.obj, path, o.later[i])
			}
		}
	}
	rv, err := x.update(ctx, o, rv, "")
	if err != nil {
		return err
	}
	if o.status != nil && !x.rc.DryRun {
		if err := x.updateStatus(ctx, o, rv); err != nil {
			return fmt.Errorf("status: %w", err)
		}
	}
	return nil
}

// recreate deletes the existing object (that very one: UID precondition) and creates o.
func (x *restorer) recreate(ctx context.Context, o *object, uid string) error {
	p := o.p
	path := p.path(o.ns, o.name)
	opts, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": map[string]any{"uid": uid}, "propagationPolicy": "Background"})
	if _, err := x.request(ctx, "DELETE", path, opts, true); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting the existing object: %w", err)
	}
	if x.rc.DryRun {
		p.counts.restored.Add(1)
		return nil
	}
	body, err := json.Marshal(o.obj)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := x.request(ctx, "POST", p.path(o.ns, ""), body, true)
		if err == nil {
			x.created(ctx, o, out)
			return nil
		}
		if !apierrors.IsAlreadyExists(err) || time.Now().After(deadline) {
			if apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("the existing object is still being deleted after 1m (finalizers?)")
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// same reports whether the live object already holds everything o would set.
func (x *restorer) same(o *object, live map[string]any) bool {
	for k, v := range o.obj {
		switch k {
		case "metadata", "apiVersion", "kind":
			continue
		case "status":
			if !x.cfg.RestoreStatus {
				continue
			}
		}
		if !subset(v, live[k]) {
			return false
		}
	}
	lmeta, _ := live["metadata"].(map[string]any)
	for _, k := range []string{"labels", "ownerReferences", "finalizers"} {
		if v, ok := o.meta[k]; ok && !subset(v, lmeta[k]) {
			return false
		}
	}
	ann, _ := o.meta["annotations"].(map[string]any)
	lann, _ := lmeta["annotations"].(map[string]any)
	for k, v := range ann {
		if lann[k] != v {
			return false
		}
	}
	if o.hasLater {
		for i, path := range o.p.ctu {
			if o.later[i] == nil {
				continue
			}
			if lv, ok := kube.GetPath(live, path); !ok || !subset(o.later[i], lv) {
				return false
			}
		}
	}
	if o.status != nil && !subset(o.status, live["status"]) {
		return false
	}
	return true
}

// subset reports whether have holds every field of want with the same value (the server adds
// defaults, so the live object has more).
func subset(want, have any) bool {
	switch w := want.(type) {
	case map[string]any:
		h, ok := have.(map[string]any)
		if !ok {
			return len(w) == 0 && have == nil
		}
		for k, v := range w {
			if !subset(v, h[k]) {
				return false
			}
		}
		return true
	case []any:
		h, ok := have.([]any)
		if !ok {
			return len(w) == 0 && have == nil
		}
		if len(h) != len(w) {
			return false
		}
		for i := range w {
			if !subset(w[i], h[i]) {
				return false
			}
		}
		return true
	case nil:
		return true
	default:
		return want == have
	}
}
