package kubeapply

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.patch",
		Doc:  "Merge, JSON or strategic patch of a named object or of every object matching a label selector; undo restores the prior values.",
		New:  func() engine.Action { return new(Patch) },
	})
}

// Patch patches objects. Before patching an object it records the prior values of exactly the
// fields the patch touches (for a JSON patch, from the patched path up to its first list: a
// list is recorded whole); undo puts them back with a merge patch, and removes fields that were
// absent. Undo skips objects that are gone or were replaced (another UID).
type Patch struct {
	kube.ClusterRef `yaml:",inline"`
	APIVersion      string                       `yaml:"apiVersion" plan:"required" doc:"API version of the objects, such as apps/v1."`
	Kind            string                       `yaml:"kind" plan:"required" doc:"Kind of the objects, such as Deployment."`
	Namespace       string                       `yaml:"namespace" doc:"Namespace; with labelSelector, empty means every namespace; with objects, the namespace of entries that give none."`
	Name            string                       `yaml:"name" doc:"Name of the object to patch; give name or labelSelector."`
	LabelSelector   string                       `yaml:"labelSelector" doc:"Patch every object matching this label selector, such as app=web."`
	Type            string                       `yaml:"type" doc:"merge (JSON merge patch, the default), strategic (strategic merge patch, built-in kinds only) or json (JSON patch)."`
	All             bool                         `yaml:"all" doc:"Patch every object of the kind (in namespace, or in every namespace when it is empty), instead of name, labelSelector or objects."`
	Objects         []PatchTarget                `yaml:"objects" doc:"Patch these objects instead of name or labelSelector: a list of {namespace, name}, each with an optional patch of its own, often built with ${{ }} from kube.list outputs. Objects that do not exist are skipped and listed in outputs.missing; an empty list patches nothing."`
	Patch           any                          `yaml:"patch" doc:"The patch: a mapping for merge and strategic, a list of operations for json; or the same as YAML or JSON text. Required unless every entry of objects has its own."`
	Subresource     string                       `yaml:"subresource" doc:"status: patch the status subresource (a CRD's status is not changed through the object itself); undo restores it there too."`
	Where           engine.ObjectExpr[WhereVars] `yaml:"where" doc:"expr-lang condition over object (each chosen object as it is now; params, steps and run too): only those for which it holds are patched, e.g. !(object.status?.phase == 'Done') so that a step run again after a crash leaves alone what a controller has finished since. Anything but true or false fails the step."`

	// Parsed by Provision: the step's patch (nil without one) and each entry of objects' own
	// (nil where it has none).
	patch *parsedPatch
	own   []*parsedPatch
}

var (
	_ engine.Action      = (*Patch)(nil)
	_ engine.Provisioner = (*Patch)(nil)
	_ engine.Validator   = (*Patch)(nil)
	_ engine.Undoer      = (*Patch)(nil)
	_ engine.Describer   = (*Patch)(nil)
	_ kube.AccessNeeder  = (*Patch)(nil)
)

// Access implements kube.AccessNeeder, on the kind's resource:
//   - get: name and objects read each object, and undo reads every patched object again;
//   - list: labelSelector and all list the objects (so does a step whose choice holds ${{ }});
//   - patch, on the resource or on its subresource (status): the patch, and undo's.
func (p *Patch) Access() []kube.Rule {
	read := []string{"get"}
	if p.LabelSelector != "" || p.All || p.Name == "" && p.Objects == nil {
		read = append(read, "list")
	}
	patch := kube.KindRule(p.APIVersion, p.Kind, "patch")
	if p.Subresource != "" {
		patch = patch.Subresource(p.Subresource)
	}
	return []kube.Rule{kube.KindRule(p.APIVersion, p.Kind, read...), patch}
}

// parsedPatch is a patch as Run uses it: the body sent to the server and the paths it touches.
type parsedPatch struct {
	data    []byte
	touched [][]string
}

// PatchTarget is one object of a patch step's objects list.
type PatchTarget struct {
	Namespace string `yaml:"namespace" doc:"Namespace of a namespaced object (default: the step's namespace)."`
	Name      string `yaml:"name" plan:"required" doc:"Name of the object."`
	Patch     any    `yaml:"patch" doc:"This object's own patch, used instead of the step's patch."`
}

// PriorValue is a field's value before the patch; Absent when the field was not set.
type PriorValue struct {
	Path   string `json:"path"` // JSON pointer, such as /metadata/labels/app
	Value  any    `json:"value,omitempty"`
	Absent bool   `json:"absent,omitempty"`
}

// Patched is an object a patch step patched, with the prior values of the fields it touched.
type Patched struct {
	ObjectRef
	Prior       []PriorValue `json:"prior"`
	Subresource string       `json:"subresource,omitempty"`
}

type patchState struct {
	Patched []Patched `json:"patched"`
}

// Describe implements engine.Describer.
func (p *Patch) Describe() string {
	what := p.patchType() + " patch"
	if p.Subresource != "" {
		what += " of the " + p.Subresource + " of"
	}
	if p.Objects != nil {
		return fmt.Sprintf("%s %d %s object(s)", what, len(p.Objects), p.Kind)
	}
	if p.All {
		return fmt.Sprintf("%s every %s in %s", what, p.Kind, namespaceDesc(p.Namespace))
	}
	return fmt.Sprintf("%s %s", what, targetDesc(p.Kind, p.Namespace, p.Name, p.LabelSelector))
}

func (p *Patch) patchType() string {
	if p.Type == "" {
		return "merge"
	}
	return p.Type
}

// Provision implements engine.Provisioner: it parses the patches (the step's and each entry's
// own) into what is sent to the server and the paths they touch.
func (p *Patch) Provision() error {
	p.patch, p.own = nil, nil
	switch p.patchType() {
	case "merge", "strategic", "json":
	default:
		return fmt.Errorf("type: %q is not merge, strategic or json", p.Type)
	}
	for i, o := range p.Objects {
		var own *parsedPatch
		if o.Patch != nil {
			var err error
			if own, err = parsePatch(p.patchType(), o.Patch); err != nil {
				return fmt.Errorf("objects[%d].%v", i, err)
			}
		}
		p.own = append(p.own, own)
	}
	if p.Patch != nil {
		var err error
		if p.patch, err = parsePatch(p.patchType(), p.Patch); err != nil {
			return err
		}
	}
	return nil
}

// Validate implements engine.Validator.
func (p *Patch) Validate() error {
	if err := validateTargets(p.Name, p.LabelSelector, alternative{"objects", p.Objects != nil}, alternative{"all", p.All}); err != nil {
		return err
	}
	if p.Subresource != "" && p.Subresource != "status" {
		return fmt.Errorf("subresource: %q is not status", p.Subresource)
	}
	own := 0
	for i, o := range p.Objects {
		if o.Name == "" {
			return fmt.Errorf("objects[%d].name: required", i)
		}
		if o.Patch != nil {
			own++
		}
	}
	if p.Patch == nil && (p.Objects == nil || own < len(p.Objects)) {
		return errors.New("patch: required (unless every entry of objects has its own)")
	}
	return nil
}

func validateTarget(name, selector string) error {
	return validateTargets(name, selector)
}

// alternative is a way of choosing objects other than name and labelSelector (objects, all).
type alternative struct {
	field string
	given bool
}

// validateTargets checks that exactly one of name, labelSelector and the alternatives is given.
func validateTargets(name, selector string, alts ...alternative) error {
	fields := []string{"name", "labelSelector"}
	given := 0
	for _, a := range append([]alternative{{"name", name != ""}, {"labelSelector", selector != ""}}, alts...) {
		if a.given {
			given++
		}
	}
	for _, a := range alts {
		fields = append(fields, a.field)
	}
	what := strings.Join(fields[:len(fields)-1], ", ") + " or " + fields[len(fields)-1]
	switch {
	case given == 0:
		return errors.New(what + ": give one")
	case given > 1 && len(alts) == 0:
		return errors.New("name and labelSelector: give only one")
	case given > 1:
		return errors.New(what + ": give only one")
	}
	if selector != "" {
		if _, err := labels.Parse(selector); err != nil {
			return fmt.Errorf("labelSelector: %s", oneLine(err.Error()))
		}
	}
	return nil
}

// parsePatch checks a patch of the given type (a mapping for merge and strategic, a list of
// operations for json, or either as text) and returns the body to send and the paths it touches.
func parsePatch(patchType string, v any) (*parsedPatch, error) {
	if s, ok := v.(string); ok {
		if err := yaml.Unmarshal([]byte(s), &v); err != nil {
			return nil, fmt.Errorf("patch: %s", oneLine(err.Error()))
		}
	}
	var touched [][]string
	if patchType == "json" {
		ops, ok := v.([]any)
		if !ok || len(ops) == 0 {
			return nil, errors.New("patch: a json patch is a list of operations such as {op: replace, path: /spec/replicas, value: 2}")
		}
		for i, o := range ops {
			op, err := parseOp(o)
			if err != nil {
				return nil, fmt.Errorf("patch[%d]: %v", i, err)
			}
			touched = append(touched, op.touched()...)
		}
	} else {
		m, ok := v.(map[string]any)
		if !ok || len(m) == 0 {
			return nil, fmt.Errorf("patch: a %s patch is a non-empty mapping", patchType)
		}
		if _, ok := m["$patch"]; ok {
			return nil, errors.New("patch: $patch at the top level is not supported")
		}
		touched = touchedPaths(m)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("patch: %v", err)
	}
	return &parsedPatch{data: data, touched: touched}, nil
}

type jsonOp struct {
	op         string
	path, from []string
}

func parseOp(o any) (jsonOp, error) {
	m, ok := o.(map[string]any)
	if !ok {
		return jsonOp{}, errors.New("expected a mapping with op and path")
	}
	var op jsonOp
	op.op, _ = m["op"].(string)
	switch op.op {
	case "add", "remove", "replace", "move", "copy", "test":
	default:
		return op, fmt.Errorf("op: %q is not add, remove, replace, move, copy or test", m["op"])
	}
	var err error
	path, _ := m["path"].(string)
	if op.path, err = parsePointer(path); err != nil {
		return op, fmt.Errorf("path: %v", err)
	}
	if op.op == "move" || op.op == "copy" {
		from, _ := m["from"].(string)
		if op.from, err = parsePointer(from); err != nil {
			return op, fmt.Errorf("from: %v", err)
		}
	}
	return op, nil
}

func parsePointer(s string) ([]string, error) {
	if !strings.HasPrefix(s, "/") || s == "/" {
		return nil, fmt.Errorf("%q is not a JSON pointer below the object's root, such as /spec/replicas", s)
	}
	parts := strings.Split(s[1:], "/")
	for i, p := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(p, "~1", "/"), "~0", "~")
	}
	return parts, nil
}

func pointer(path []string) string {
	var b strings.Builder
	for _, p := range path {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(p, "~", "~0"), "/", "~1"))
	}
	return b.String()
}

// touched lists the paths a JSON patch operation changes.
func (op jsonOp) touched() [][]string {
	switch op.op {
	case "test":
		return nil
	case "move":
		return [][]string{op.path, op.from}
	}
	return [][]string{op.path}
}

// touchedPaths lists the paths a merge or strategic patch changes, as written in the patch.
func touchedPaths(patch map[string]any) [][]string {
	var out [][]string
	var walk func(prefix []string, m map[string]any)
	walk = func(prefix []string, m map[string]any) {
		_, directive := m["$patch"]
		_, retain := m["$retainKeys"]
		if directive || retain {
			out = append(out, prefix) // the whole map is replaced or pruned
			return
		}
		for k, v := range m {
			path := append(append([]string{}, prefix...), k)
			if strings.HasPrefix(k, "$") {
				// $setElementOrder/x, $deleteFromPrimitiveList/x change the list x.
				if _, field, ok := strings.Cut(k, "/"); ok {
					out = append(out, append(append([]string{}, prefix...), field))
				}
				continue
			}
			if vm, ok := v.(map[string]any); ok && len(vm) > 0 {
				walk(path, vm)
				continue
			}
			out = append(out, path)
		}
	}
	walk(nil, patch)
	return out
}

// priorValues records the values at the touched paths. A path is cut at the first field that is
// absent (restoring removes it) or that is not a mapping (a list is recorded, and restored, whole).
func priorValues(obj map[string]any, paths [][]string) []PriorValue {
	var cut [][]string
	for _, p := range paths {
		c, _, _ := walkPath(obj, p)
		cut = append(cut, c)
	}
	// Shorter first, so that a path under one already recorded is left out.
	sort.SliceStable(cut, func(i, j int) bool { return len(cut[i]) < len(cut[j]) })
	var kept [][]string
	for _, c := range cut {
		if !coveredBy(c, kept) {
			kept = append(kept, c)
		}
	}
	sort.Slice(kept, func(i, j int) bool { return pointer(kept[i]) < pointer(kept[j]) })
	out := make([]PriorValue, 0, len(kept))
	for _, c := range kept {
		v, found := kube.GetPath(obj, c)
		if found {
			out = append(out, PriorValue{Path: pointer(c), Value: v})
		} else {
			out = append(out, PriorValue{Path: pointer(c), Absent: true})
		}
	}
	return out
}

func coveredBy(p []string, set [][]string) bool {
	for _, s := range set {
		if len(s) <= len(p) && strings.Join(s, "\x00") == strings.Join(p[:len(s)], "\x00") {
			return true
		}
	}
	return false
}

// walkPath follows path through mappings, stopping at the first absent field or non-mapping.
func walkPath(obj map[string]any, path []string) (cut []string, value any, found bool) {
	cur := obj
	for i, k := range path {
		v, ok := cur[k]
		if !ok {
			return path[:i+1], nil, false
		}
		m, isMap := v.(map[string]any)
		if !isMap || i == len(path)-1 {
			return path[:i+1], v, true
		}
		cur = m
	}
	return path, cur, true
}

func jsonEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// matchesPrior reports whether obj still has the recorded prior values (it was not patched).
func matchesPrior(obj map[string]any, prior []PriorValue) bool {
	for _, pv := range prior {
		path, _ := parsePointer(pv.Path)
		v, found := kube.GetPath(obj, path)
		if found == pv.Absent || found && !jsonEqual(v, pv.Value) {
			return false
		}
	}
	return true
}

// restorePatch is the merge patch that puts the prior values back into obj.
func restorePatch(obj map[string]any, prior []PriorValue) map[string]any {
	patch := map[string]any{}
	for _, pv := range prior {
		path, err := parsePointer(pv.Path)
		if err != nil {
			continue
		}
		cur, found := kube.GetPath(obj, path)
		switch want, isMap := pv.Value.(map[string]any); {
		case pv.Absent:
			if found {
				kube.SetPath(patch, path, nil)
			}
		case isMap && found:
			if cm, ok := cur.(map[string]any); ok {
				if d := diffMap(cm, want); len(d) > 0 {
					kube.SetPath(patch, path, d)
				}
				continue
			}
			kube.SetPath(patch, path, want)
		default:
			if !found || !jsonEqual(cur, pv.Value) {
				kube.SetPath(patch, path, pv.Value)
			}
		}
	}
	return patch
}

// diffMap is the merge patch turning cur into want.
func diffMap(cur, want map[string]any) map[string]any {
	out := map[string]any{}
	for k, w := range want {
		c, ok := cur[k]
		wm, wIsMap := w.(map[string]any)
		cm, cIsMap := c.(map[string]any)
		switch {
		case ok && wIsMap && cIsMap:
			if d := diffMap(cm, wm); len(d) > 0 {
				out[k] = d
			}
		case !ok || !jsonEqual(c, w):
			out[k] = w
		}
	}
	for k := range cur {
		if _, ok := want[k]; !ok {
			out[k] = nil
		}
	}
	return out
}

var patchTypes = map[string]types.PatchType{"merge": types.MergePatchType, "strategic": types.StrategicMergePatchType, "json": types.JSONPatchType}

// patchTarget is an object to patch with its patch.
type patchTarget struct {
	obj   *unstructured.Unstructured
	patch *parsedPatch
}

// Run implements engine.Action.
func (p *Patch) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	c, err := p.Client(rc)
	if err != nil {
		return nil, err
	}
	m, err := c.Mapping(p.APIVersion, p.Kind)
	if err != nil {
		return nil, err
	}
	if err := checkNamespace(m, p.Namespace, p.Kind, p.Name != ""); err != nil {
		return nil, err
	}
	var targets []patchTarget
	missing := []ObjectRef{}
	isMissing := map[string]bool{}
	addMissing := func(ns, name string) {
		r := ObjectRef{APIVersion: p.APIVersion, Kind: p.Kind, Namespace: ns, Name: name}
		if !isMissing[r.key()] {
			isMissing[r.key()] = true
			missing = append(missing, r)
		}
	}
	if p.Objects != nil {
		for i, o := range p.Objects {
			ns := cmp.Or(o.Namespace, p.Namespace)
			if err := checkNamespace(m, ns, p.Kind, true); err != nil {
				return nil, fmt.Errorf("objects[%d]: %w", i, err)
			}
			objs, err := selectTargets(ctx, c, m, p.Kind, ns, o.Name, "")
			if err != nil {
				return nil, err
			}
			if len(objs) == 0 {
				addMissing(ns, o.Name)
				continue
			}
			patch := p.patch
			if p.own[i] != nil {
				patch = p.own[i]
			}
			targets = append(targets, patchTarget{obj: objs[0], patch: patch})
		}
	} else {
		objs, err := selectTargets(ctx, c, m, p.Kind, p.Namespace, p.Name, p.LabelSelector)
		if err != nil {
			return nil, err
		}
		if p.Name != "" && len(objs) == 0 {
			return nil, fmt.Errorf("%s not found", kube.ObjectName(p.Kind, p.Namespace, p.Name))
		}
		for _, obj := range objs {
			targets = append(targets, patchTarget{obj: obj, patch: p.patch})
		}
	}
	if p.Where.Compiled() {
		kept := targets[:0]
		for _, t := range targets {
			ok, err := p.matchesWhere(rc, t.obj)
			if err != nil {
				return nil, err
			}
			if ok {
				kept = append(kept, t)
			}
		}
		targets = kept
	}
	// Prior values are recorded once, before the first patch: after a crash the objects may be
	// patched already, and their values now are not the prior ones.
	var st patchState
	if _, err := rc.LoadState(&st); err != nil {
		return nil, fmt.Errorf("step state: %w", err)
	}
	recorded := map[types.UID]int{}
	for i, r := range st.Patched {
		recorded[types.UID(r.UID)] = i
	}
	earlier := len(st.Patched)
	// An object may be given more than once in objects, each time with its own patch: its prior
	// values are those of every field any of its patches touches.
	touched := map[types.UID][][]string{}
	for _, t := range targets {
		touched[t.obj.GetUID()] = append(touched[t.obj.GetUID()], t.patch.touched...)
	}
	for _, t := range targets {
		if _, ok := recorded[t.obj.GetUID()]; ok {
			continue
		}
		recorded[t.obj.GetUID()] = len(st.Patched)
		st.Patched = append(st.Patched, Patched{ObjectRef: refOf(t.obj), Prior: priorValues(t.obj.Object, touched[t.obj.GetUID()]), Subresource: p.Subresource})
	}
	if len(st.Patched) > earlier && !rc.DryRun {
		if err := rc.SaveState(ctx, &st); err != nil {
			return nil, err
		}
	}

	pt := patchTypes[p.patchType()]
	for i, t := range targets {
		obj := t.obj
		idx := recorded[obj.GetUID()]
		if p.patchType() == "json" && idx < earlier && !matchesPrior(obj.Object, st.Patched[idx].Prior) {
			// Patched by the attempt that crashed; a JSON patch may not apply twice (add to a list).
			continue
		}
		_, err := c.Resource(m, obj.GetNamespace()).Patch(ctx, obj.GetName(), pt, t.patch.data,
			metav1.PatchOptions{FieldManager: kube.FieldManager, DryRun: kube.DryRun(rc)}, subresources(p.Subresource)...)
		if apierrors.IsNotFound(err) && p.Name == "" {
			if p.Objects != nil {
				addMissing(obj.GetNamespace(), obj.GetName())
			}
			continue // deleted since it was listed
		}
		if err != nil {
			return nil, kube.ObjectError(p.Kind, obj.GetNamespace(), obj.GetName(), err)
		}
		rc.Progress(engine.Progress{Done: int64(i + 1), Total: int64(len(targets)), Unit: "objects"})
	}
	out := engine.Outputs{"patched": nonNil(st.Patched), "count": len(st.Patched)}
	if p.Objects != nil {
		out["missing"] = missing
	}
	if rc.DryRun {
		out["dryRun"] = true
	}
	return out, nil
}

// subresources is the subresource argument of a dynamic client call: none for the object itself.
func subresources(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// Undo implements engine.Undoer: it puts back the prior values of every patched object that
// still exists with the same UID, last patched first.
func (p *Patch) Undo(ctx context.Context, rc *engine.RunContext, outputs engine.Outputs) error {
	if isDryRunOutputs(outputs) {
		return nil
	}
	var patched []Patched
	if err := fromOutputs(outputs["patched"], &patched); err != nil {
		return fmt.Errorf("outputs.patched: %v", err)
	}
	c, err := p.Client(rc)
	if err != nil {
		return err
	}
	for i := len(patched) - 1; i >= 0; i-- {
		r := patched[i]
		if err := restore(ctx, rc, c, r); err != nil {
			return err
		}
	}
	return nil
}

func restore(ctx context.Context, rc *engine.RunContext, c *kube.Client, r Patched) error {
	m, err := c.Mapping(r.APIVersion, r.Kind)
	if isUnknownKind(err) {
		return nil // its CRD is gone, and the object with it
	}
	if err != nil {
		return fmt.Errorf("%s: %w", r.ObjectRef, err)
	}
	res := c.Resource(m, r.Namespace)
	obj, err := res.Get(ctx, r.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return kube.ObjectError(r.Kind, r.Namespace, r.Name, err)
	}
	if !sameUID(obj, r.UID) {
		rc.Logger.Info("not restoring: the object was replaced since it was patched", "object", r.ObjectRef.String())
		return nil
	}
	patch := restorePatch(obj.Object, r.Prior)
	if len(patch) == 0 {
		return nil
	}
	// Guard against a concurrent change between the read and the restore.
	md, _ := patch["metadata"].(map[string]any)
	if md == nil {
		md = map[string]any{}
		patch["metadata"] = md
	}
	md["resourceVersion"] = obj.GetResourceVersion()
	data, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = res.Patch(ctx, r.Name, types.MergePatchType, data, metav1.PatchOptions{FieldManager: kube.FieldManager, DryRun: kube.DryRun(rc)}, subresources(r.Subresource)...)
	if err != nil {
		return kube.ObjectError(r.Kind, r.Namespace, r.Name, err)
	}
	return nil
}
