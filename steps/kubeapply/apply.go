package kubeapply

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.apply",
		Doc:  "Server-side apply (field manager planrun) of inline manifests or files; outputs created, changed, unchanged; undo deletes what it created.",
		New:  func() engine.Action { return new(Apply) },
	})
}

// Apply applies manifests with server-side apply, in the order given (inline manifests, then the
// manifest string, then files). Undo deletes the objects this step created, by UID, so an object
// of the same name made later by someone else is left alone; objects that existed before are not
// touched by undo (their prior content is not restored).
type Apply struct {
	kube.ClusterRef `yaml:",inline"`
	Manifests       []map[string]any `yaml:"manifests" doc:"Objects to apply, written inline as mappings."`
	Manifest        string           `yaml:"manifest" doc:"Objects to apply as YAML (or JSON) text, several documents separated by ---."`
	Files           []string         `yaml:"files" doc:"Files of YAML or JSON objects (multi-document; Lists are expanded). Relative paths are relative to the working directory of planrun, not to the plan file."`
	Namespace       string           `yaml:"namespace" doc:"Namespace for namespaced objects that name none."`
	ForceConflicts  bool             `yaml:"forceConflicts" doc:"Take over fields owned by other field managers instead of failing on conflicts."`

	inline []*item // manifests, then manifest, parsed by Provision; files are read by Run
}

var (
	_ engine.Action      = (*Apply)(nil)
	_ engine.Provisioner = (*Apply)(nil)
	_ engine.Validator   = (*Apply)(nil)
	_ engine.Undoer      = (*Apply)(nil)
	_ engine.Describer   = (*Apply)(nil)
	_ kube.AccessNeeder  = (*Apply)(nil)
)

// Access implements kube.AccessNeeder, on the resource of each kind the step applies:
//   - get: each object is read first (created or changed?), and again after a resume;
//   - create and patch: server-side apply is a patch, and one that creates the object takes create;
//   - delete: undo deletes the objects the step created.
//
// Files are read only when the step runs, and a manifest whose kind holds ${{ }} names its kind
// only then: such a step needs those verbs on every resource.
func (a *Apply) Access() []kube.Rule {
	verbs := []string{"get", "create", "patch", "delete"}
	kinds, known := a.kinds()
	if !known {
		return []kube.Rule{kube.AnyResource(verbs...)}
	}
	out := make([]kube.Rule, 0, len(kinds))
	for _, k := range kinds {
		out = append(out, kube.KindRule(k[0], k[1], verbs...))
	}
	return out
}

// kinds lists the apiVersion and kind of the inline objects (manifests and manifest), without
// checking them further; known is false when files are given, or an object's kind (or the whole
// of manifests and manifest) is not known before the run.
func (a *Apply) kinds() (kinds [][2]string, known bool) {
	objs := append([]map[string]any{}, a.Manifests...)
	if a.Manifest != "" {
		docs, err := decodeDocuments([]byte(a.Manifest))
		if err != nil {
			return nil, false
		}
		objs = append(objs, docs...)
	}
	for len(objs) > 0 {
		obj := objs[0]
		objs = objs[1:]
		if items, ok := expandList(obj); ok {
			objs = append(objs, items...)
			continue
		}
		apiVersion, _ := obj["apiVersion"].(string)
		kind, _ := obj["kind"].(string)
		if kind == "" {
			return nil, false
		}
		kinds = append(kinds, [2]string{apiVersion, kind})
	}
	return kinds, len(kinds) > 0 && len(a.Files) == 0
}

// item is one object to apply.
type item struct {
	src        string // where it was written: "manifests[0]", "file x.yaml document 2"
	obj        map[string]any
	gk         schema.GroupKind
	mapping    *meta.RESTMapping // nil while its CRD, applied by the same step, is not served yet
	namespaced bool
	ref        ObjectRef
}

// applyState is what a crashed attempt left: the objects it was about to create.
type applyState struct {
	Created []ObjectRef `json:"created"`
}

// Describe implements engine.Describer.
func (a *Apply) Describe() string {
	n := len(a.Manifests)
	s := fmt.Sprintf("server-side apply of %d inline object(s)", n)
	if a.Manifest != "" {
		s += " and a manifest"
	}
	if len(a.Files) > 0 {
		s += fmt.Sprintf(" and %d file(s)", len(a.Files))
	}
	return s
}

// Provision implements engine.Provisioner: it parses the inline manifests (at load time when
// they hold no ${{ }}). Files are read when the step runs: an earlier step may write them.
func (a *Apply) Provision() error {
	items, err := a.parseInline()
	if err != nil {
		return err
	}
	a.inline = items
	return nil
}

// Validate implements engine.Validator.
func (a *Apply) Validate() error {
	if len(a.Manifests) == 0 && a.Manifest == "" && len(a.Files) == 0 {
		return errors.New("manifests, manifest or files: give at least one")
	}
	for i, f := range a.Files {
		if f == "" {
			return fmt.Errorf("files[%d]: must not be empty", i)
		}
	}
	return nil
}

func (a *Apply) parseInline() ([]*item, error) {
	var items []*item
	for i, obj := range a.Manifests {
		var err error
		if items, err = addObject(items, fmt.Sprintf("manifests[%d]", i), obj); err != nil {
			return nil, err
		}
	}
	if a.Manifest != "" {
		docs, err := decodeDocuments([]byte(a.Manifest))
		if err != nil {
			return nil, fmt.Errorf("manifest: %v", err)
		}
		for i, obj := range docs {
			if items, err = addObject(items, fmt.Sprintf("manifest object %d", i+1), obj); err != nil {
				return nil, err
			}
		}
	}
	return items, nil
}

// collect lists the objects to apply: copies of the provisioned inline items (a run resolves and
// changes its own), then those of the files.
func (a *Apply) collect() ([]*item, error) {
	items := make([]*item, 0, len(a.inline))
	for _, it := range a.inline {
		cp := *it
		items = append(items, &cp)
	}
	for _, f := range a.Files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("files: %v", err)
		}
		docs, err := decodeDocuments(data)
		if err != nil {
			return nil, fmt.Errorf("file %s: %v", f, err)
		}
		for i, obj := range docs {
			if items, err = addObject(items, fmt.Sprintf("file %s object %d", f, i+1), obj); err != nil {
				return nil, err
			}
		}
	}
	return items, nil
}

func addObject(items []*item, src string, obj map[string]any) ([]*item, error) {
	if list, ok := expandList(obj); ok {
		for i, o := range list {
			var err error
			if items, err = addObject(items, fmt.Sprintf("%s items[%d]", src, i), o); err != nil {
				return nil, err
			}
		}
		return items, nil
	}
	if err := checkObject(obj); err != nil {
		return nil, fmt.Errorf("%s: %v", src, err)
	}
	u := unstructured.Unstructured{Object: obj}
	gvk := u.GroupVersionKind()
	return append(items, &item{src: src, obj: obj, gk: gvk.GroupKind(),
		ref: ObjectRef{APIVersion: u.GetAPIVersion(), Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}}), nil
}

// crdKinds lists the kinds defined by the CustomResourceDefinitions among items, with whether
// they are namespaced: their objects may follow in the same step.
func crdKinds(items []*item) map[schema.GroupKind]bool {
	out := map[schema.GroupKind]bool{}
	for _, it := range items {
		if it.gk != (schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}) {
			continue
		}
		group, _, _ := unstructured.NestedString(it.obj, "spec", "group")
		kind, _, _ := unstructured.NestedString(it.obj, "spec", "names", "kind")
		scope, _, _ := unstructured.NestedString(it.obj, "spec", "scope")
		out[schema.GroupKind{Group: group, Kind: kind}] = scope != "Cluster"
	}
	return out
}

// Run implements engine.Action.
func (a *Apply) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	items, err := a.collect()
	if err != nil {
		return nil, err
	}
	c, err := a.Client(rc)
	if err != nil {
		return nil, err
	}
	if err := a.resolve(c, items); err != nil {
		return nil, err
	}

	// Objects a crashed attempt created (or was about to) stay this step's, so undo still
	// deletes them after a resume.
	var st applyState
	if _, err := rc.LoadState(&st); err != nil {
		return nil, fmt.Errorf("step state: %w", err)
	}
	ours := map[string]string{} // key → uid ("" when not known yet)
	for _, r := range st.Created {
		ours[r.key()] = r.UID
	}

	created, changed, unchanged := []ObjectRef{}, []ObjectRef{}, []ObjectRef{}
	dryNamespaces := map[string]bool{} // namespaces a dry run would create
	seen := map[string]bool{}
	for i, it := range items {
		seen[it.ref.key()] = true
		res, ref, err := a.applyOne(ctx, rc, c, it, &st, ours, dryNamespaces)
		if err != nil {
			return nil, err
		}
		switch res {
		case resCreated:
			created = append(created, ref)
		case resChanged:
			changed = append(changed, ref)
		default:
			unchanged = append(unchanged, ref)
		}
		rc.Progress(engine.Progress{Done: int64(i + 1), Total: int64(len(items)), Unit: "objects"})
	}
	// Objects an earlier attempt created that the plan, fixed since, no longer lists.
	for _, r := range st.Created {
		if seen[r.key()] {
			continue
		}
		if ref, ok := stillThere(ctx, c, r); ok {
			created = append(created, ref)
		}
	}
	out := engine.Outputs{"created": created, "changed": changed, "unchanged": unchanged, "count": len(items)}
	if rc.DryRun {
		out["dryRun"] = true
	}
	return out, nil
}

// resolve finds each object's resource and namespace before anything is applied, so that an
// unknown kind or a missing namespace fails the step before it changes anything.
func (a *Apply) resolve(c *kube.Client, items []*item) error {
	crds := crdKinds(items)
	seen := map[string]string{}
	for _, it := range items {
		m, err := c.Mapping(it.ref.APIVersion, it.ref.Kind)
		if err != nil {
			ns, fromCRD := crds[it.gk]
			if !fromCRD || !isUnknownKind(err) {
				return fmt.Errorf("%s: %w", it.src, err)
			}
			it.namespaced = ns
		} else {
			it.mapping, it.namespaced = m, namespaced(m)
		}
		name := kube.ObjectName(it.ref.Kind, it.ref.Namespace, it.ref.Name)
		switch {
		case it.namespaced && it.ref.Namespace == "":
			if a.Namespace == "" {
				return fmt.Errorf("%s: %s is namespaced: set metadata.namespace or the step's namespace", it.src, name)
			}
			it.ref.Namespace = a.Namespace
			it.obj = withNamespace(it.obj, a.Namespace)
		case !it.namespaced && it.ref.Namespace != "":
			return fmt.Errorf("%s: %s is cluster-scoped; remove metadata.namespace", it.src, it.ref.Kind+" "+it.ref.Name)
		}
		if other, dup := seen[it.ref.key()]; dup {
			return fmt.Errorf("%s: %s is also given in %s", it.src, it.ref, other)
		}
		seen[it.ref.key()] = it.src
	}
	return nil
}

// withNamespace returns a copy of obj (its top level and metadata) in namespace ns; obj, which
// may be the step's own config, is left as it is.
func withNamespace(obj map[string]any, ns string) map[string]any {
	cp := make(map[string]any, len(obj))
	for k, v := range obj {
		cp[k] = v
	}
	md := map[string]any{}
	for k, v := range obj["metadata"].(map[string]any) {
		md[k] = v
	}
	md["namespace"] = ns
	cp["metadata"] = md
	return cp
}

type result int

const (
	resUnchanged result = iota
	resChanged
	resCreated
)

func (a *Apply) applyOne(ctx context.Context, rc *engine.RunContext, c *kube.Client, it *item, st *applyState,
	ours map[string]string, dryNamespaces map[string]bool) (result, ObjectRef, error) {
	ref := it.ref
	if it.mapping == nil {
		if rc.DryRun {
			// Its CRD is only dry-run applied: the server cannot check the object.
			rc.Logger.Info("kind defined by a CRD of this step; the server cannot dry-run it", "object", ref.String())
			return resCreated, ref, nil
		}
		m, err := waitForKind(ctx, c, ref.APIVersion, ref.Kind)
		if err != nil {
			return 0, ref, fmt.Errorf("%s: %w", it.src, err)
		}
		it.mapping = m
	}
	r := c.Resource(it.mapping, ref.Namespace)
	cur, err := r.Get(ctx, ref.Name, metav1.GetOptions{})
	existed := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, ref, kube.ObjectError(ref.Kind, ref.Namespace, ref.Name, err)
	}
	uid, mine := ours[ref.key()]
	if mine && existed && !sameUID(cur, uid) {
		// Deleted and made again by someone else since: not this step's object any more.
		mine = false
		delete(ours, ref.key())
		st.Created = dropRef(st.Created, ref.key())
	}
	if !existed && !mine && !rc.DryRun {
		// Recorded before the object exists: after a crash right after the apply, the step
		// still knows that the object is its own.
		st.Created = append(st.Created, ref)
		ours[ref.key()] = ""
		if err := rc.SaveState(ctx, st); err != nil {
			return 0, ref, err
		}
		mine = true
	}
	data, err := json.Marshal(it.obj)
	if err != nil {
		return 0, ref, fmt.Errorf("%s: %v", it.src, err)
	}
	force := a.ForceConflicts
	out, err := r.Patch(ctx, ref.Name, types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: kube.FieldManager, Force: &force, DryRun: kube.DryRun(rc)})
	if err != nil {
		if rc.DryRun && !existed && dryNamespaces[ref.Namespace] && isNamespaceNotFound(err) {
			return resCreated, ref, nil // its namespace is only dry-run created
		}
		return 0, ref, kube.ObjectError(ref.Kind, ref.Namespace, ref.Name, err)
	}
	if rc.DryRun {
		if !existed {
			if ref.Kind == "Namespace" && it.gk.Group == "" {
				dryNamespaces[ref.Name] = true
			}
			return resCreated, ref, nil // the UID a dry run shows is made up
		}
		ref.UID = string(out.GetUID())
		if sameContent(cur, out) {
			return resUnchanged, ref, nil
		}
		return resChanged, ref, nil
	}
	ref.UID = string(out.GetUID())
	switch {
	case mine:
		return resCreated, ref, nil
	case cur.GetResourceVersion() != out.GetResourceVersion():
		return resChanged, ref, nil
	}
	return resUnchanged, ref, nil
}

func dropRef(refs []ObjectRef, key string) []ObjectRef {
	out := refs[:0]
	for _, r := range refs {
		if r.key() != key {
			out = append(out, r)
		}
	}
	return out
}

func isNamespaceNotFound(err error) bool {
	var status apierrors.APIStatus
	if !apierrors.IsNotFound(err) || !errors.As(err, &status) {
		return false
	}
	d := status.Status().Details
	return d != nil && d.Kind == "namespaces"
}

// sameContent compares two versions of an object, ignoring what every write changes.
func sameContent(a, b *unstructured.Unstructured) bool {
	strip := func(u *unstructured.Unstructured) []byte {
		c := u.DeepCopy()
		c.SetManagedFields(nil)
		c.SetResourceVersion("")
		c.SetGeneration(0)
		j, _ := json.Marshal(c.Object)
		return j
	}
	return string(strip(a)) == string(strip(b))
}

// kindWait bounds the wait for a CRD applied by the same step to be served.
const kindWait = time.Minute

func waitForKind(ctx context.Context, c *kube.Client, apiVersion, kind string) (*meta.RESTMapping, error) {
	deadline := time.Now().Add(kindWait)
	for {
		m, err := c.Mapping(apiVersion, kind) // refreshes discovery when the kind is unknown
		if err == nil || !isUnknownKind(err) || time.Now().After(deadline) {
			return m, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// stillThere returns a recorded object with its UID if it exists and is the recorded one.
func stillThere(ctx context.Context, c *kube.Client, r ObjectRef) (ObjectRef, bool) {
	m, err := c.Mapping(r.APIVersion, r.Kind)
	if err != nil {
		return r, false
	}
	obj, err := c.Resource(m, r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
	if err != nil || !sameUID(obj, r.UID) {
		return r, false
	}
	r.UID = string(obj.GetUID())
	return r, true
}

// Undo implements engine.Undoer: it deletes the objects the step created, newest first, each only
// if it still has the UID recorded (a namesake made since is left alone). It does not wait for
// them to be gone.
func (a *Apply) Undo(ctx context.Context, rc *engine.RunContext, outputs engine.Outputs) error {
	if isDryRunOutputs(outputs) {
		return nil
	}
	var created []ObjectRef
	if err := fromOutputs(outputs["created"], &created); err != nil {
		return fmt.Errorf("outputs.created: %v", err)
	}
	c, err := a.Client(rc)
	if err != nil {
		return err
	}
	background := metav1.DeletePropagationBackground
	for i := len(created) - 1; i >= 0; i-- {
		r := created[i]
		if r.UID == "" {
			rc.Logger.Warn("no UID recorded; not deleting", "object", r.String())
			continue
		}
		m, err := c.Mapping(r.APIVersion, r.Kind)
		if isUnknownKind(err) {
			continue // its CRD is gone, and the object with it
		}
		if err != nil {
			return fmt.Errorf("%s: %w", r, err)
		}
		uid := types.UID(r.UID)
		err = c.Resource(m, r.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &uid}, PropagationPolicy: &background, DryRun: kube.DryRun(rc)})
		switch {
		case err == nil, apierrors.IsNotFound(err):
		case apierrors.IsConflict(err) && isPreconditionFailure(err):
			rc.Logger.Info("not deleting: the object was replaced since it was created", "object", r.String())
		default:
			return kube.ObjectError(r.Kind, r.Namespace, r.Name, err)
		}
	}
	return nil
}

// No type: the API server reports a failed precondition as a plain Conflict (storage's
// InvalidObj) whose only trace of the precondition is the text of its message.
func isPreconditionFailure(err error) bool {
	var status apierrors.APIStatus
	return errors.As(err, &status) && containsFold(status.Status().Message, "precondition")
}
