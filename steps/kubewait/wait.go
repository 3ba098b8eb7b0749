// Package kubewait implements kube.wait: wait, by watching, until an expression over an object
// or a list of objects holds, or until they are gone.
package kubewait

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.wait",
		Doc:  "Wait (watching) until a condition over an object or a list holds, or until it is gone; the last state seen goes into the timeout error.",
		New:  func() engine.Action { return new(Wait) },
	})
}

// DefaultTimeout is how long kube.wait waits when the plan does not say.
const DefaultTimeout = 5 * time.Minute

// summaryLen bounds the last observed state quoted in a timeout error.
const summaryLen = 300

// Wait waits for one object (name) or the objects matching selectors.
type Wait struct {
	kube.ClusterRef `yaml:",inline"`
	APIVersion      string                  `yaml:"apiVersion" plan:"required" doc:"API version, such as apps/v1."`
	Kind            string                  `yaml:"kind" plan:"required" doc:"Kind, such as Deployment."`
	Namespace       string                  `yaml:"namespace" doc:"Namespace (required with name for namespaced kinds; empty with selectors means all namespaces)."`
	Name            string                  `yaml:"name" doc:"Name of the object to wait for; or use labelSelector/fieldSelector for a list."`
	LabelSelector   string                  `yaml:"labelSelector" doc:"Wait over the objects matching this label selector."`
	FieldSelector   string                  `yaml:"fieldSelector" doc:"Wait over the objects matching this field selector."`
	Condition       engine.ObjectExpr[Vars] `yaml:"condition" doc:"expr-lang expression that must become true; it sees object (the named object, nil while absent), items (the matching objects) and count, e.g. object.status.readyReplicas == object.spec.replicas or count == 0, besides params, steps and run. A field not set yet only means not yet true."`
	For             string                  `yaml:"for" doc:"gone: wait until the object, or every matching object, no longer exists (instead of condition)."`
	Timeout         engine.Duration         `yaml:"timeout" doc:"How long to wait before failing (default 5m)."`
	Items           bool                    `yaml:"items" doc:"Put the matching objects, as they were when the condition held, in outputs.items (a list wait; a named wait has outputs.object)."`
}

// Vars are what condition sees besides params, steps and run.
type Vars struct {
	Object map[string]any `expr:"object"`
	Items  []any          `expr:"items"`
	Count  int            `expr:"count"`
}

var (
	_ engine.Action     = (*Wait)(nil)
	_ engine.Validator  = (*Wait)(nil)
	_ engine.Describer  = (*Wait)(nil)
	_ kube.AccessNeeder = (*Wait)(nil)
)

// Access implements kube.AccessNeeder:
//   - list and watch on the kind's resource: the objects (a named one too, by a field selector)
//     are listed, then watched, and listed again when a watch ends.
func (w *Wait) Access() []kube.Rule {
	return []kube.Rule{kube.KindRule(w.APIVersion, w.Kind, "list", "watch")}
}

// Validate implements engine.Validator; it compiles the condition.
func (w *Wait) Validate() error {
	switch {
	case w.Name != "" && (w.LabelSelector != "" || w.FieldSelector != ""):
		return errors.New("name and labelSelector/fieldSelector: give only one")
	case w.For != "" && w.For != "gone":
		return fmt.Errorf("for: expected gone, got %q", w.For)
	case w.For == "" && !w.Condition.Compiled():
		return errors.New("condition or for: one is required")
	case w.For != "" && w.Condition.Compiled():
		return errors.New("condition and for: give only one")
	case w.Timeout < 0:
		return errors.New("timeout: must not be negative")
	case w.Items && w.Name != "":
		return errors.New("items: a wait for one named object has outputs.object; items is for lists")
	}
	if w.LabelSelector != "" {
		if _, err := labels.Parse(w.LabelSelector); err != nil {
			return fmt.Errorf("labelSelector: %v", err)
		}
	}
	if w.FieldSelector != "" {
		if _, err := fields.ParseSelector(w.FieldSelector); err != nil {
			return fmt.Errorf("fieldSelector: %v", err)
		}
	}
	return nil
}

func oneLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(first)
}

// Describe implements engine.Describer.
func (w *Wait) Describe() string {
	return "wait for " + w.what() + " " + w.until()
}

func (w *Wait) what() string {
	if w.Name != "" {
		return kube.ObjectName(w.Kind, w.Namespace, w.Name)
	}
	s := w.Kind + " in "
	if w.Namespace == "" {
		s += "all namespaces"
	} else {
		s += "namespace " + w.Namespace
	}
	for _, sel := range []string{w.LabelSelector, w.FieldSelector} {
		if sel != "" {
			s += " matching " + sel
		}
	}
	return s
}

func (w *Wait) until() string {
	if w.For == "gone" {
		return "to be gone"
	}
	return "until " + w.Condition.String()
}

// Run implements engine.Action.
func (w *Wait) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	c, err := w.Client(rc)
	if err != nil {
		return nil, err
	}
	m, err := c.Mapping(w.APIVersion, w.Kind)
	if err != nil {
		return nil, err
	}
	namespaced := m.Scope.Name() == meta.RESTScopeNameNamespace
	switch {
	case namespaced && w.Name != "" && w.Namespace == "":
		return nil, fmt.Errorf("namespace: required, %s is namespaced", w.Kind)
	case !namespaced && w.Namespace != "":
		return nil, fmt.Errorf("namespace: %s is cluster-scoped; remove namespace", w.Kind)
	}
	var r dynamic.ResourceInterface = c.Dynamic.Resource(m.Resource)
	if w.Namespace != "" {
		r = c.Dynamic.Resource(m.Resource).Namespace(w.Namespace)
	}
	opts := metav1.ListOptions{LabelSelector: w.LabelSelector, FieldSelector: w.FieldSelector}
	if w.Name != "" {
		opts.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.Name).String()
	}
	timeout := time.Duration(w.Timeout)
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	st := &state{rc: rc, objects: map[string]*unstructured.Unstructured{}}
	if err := st.relist(wctx, r, opts); err != nil {
		return nil, w.apiError(err)
	}
	ok, err := w.eval(st)
	if err != nil {
		return nil, err
	}
	if rc.DryRun || ok {
		// A dry run does not wait: the earlier steps changed nothing, so what it would wait for
		// may never happen. It says whether the condition holds now.
		out := w.outputs(st, ok)
		if rc.DryRun {
			out["dryRun"] = true
			rc.Logger.Info("dry run: not waiting", "satisfied", ok, "state", w.summary(st))
		}
		return out, nil
	}
	for {
		ok, err := w.watch(wctx, r, opts, st)
		if err != nil {
			return nil, err
		}
		if ok {
			return w.outputs(st, true), nil
		}
		if wctx.Err() != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: stopped waiting %s (%w); last seen: %s", w.what(), w.until(), ctx.Err(), w.summary(st))
			}
			return nil, fmt.Errorf("%s: timed out after %s waiting %s; last seen: %s", w.what(), timeout, w.until(), w.summary(st))
		}
		// The watch ended (expired, or the server closed it): list again and go on.
		if err := st.relist(wctx, r, opts); err != nil {
			if wctx.Err() != nil {
				continue
			}
			return nil, w.apiError(err)
		}
		if ok, err := w.eval(st); err != nil || ok {
			if err != nil {
				return nil, err
			}
			return w.outputs(st, true), nil
		}
	}
}

// watch follows changes from the last resourceVersion seen until the condition holds (true),
// the watch ends or the context is done (false).
func (w *Wait) watch(ctx context.Context, r dynamic.ResourceInterface, opts metav1.ListOptions, st *state) (bool, error) {
	opts.ResourceVersion, opts.AllowWatchBookmarks = st.rv, true
	watcher, err := r.Watch(ctx, opts)
	if err != nil {
		if ctx.Err() != nil || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) || kube.Classify(err) != err {
			return false, nil // relist (or time out)
		}
		return false, w.apiError(err)
	}
	defer watcher.Stop()
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case ev, open := <-watcher.ResultChan():
			if !open {
				return false, nil
			}
			obj, isObj := ev.Object.(*unstructured.Unstructured)
			switch ev.Type {
			case watch.Error:
				st.rv = "" // expired or failed: relist
				return false, nil
			case watch.Bookmark:
				if isObj {
					st.rv = obj.GetResourceVersion()
				}
				continue
			case watch.Added, watch.Modified:
				if isObj {
					st.objects[key(obj)] = obj
				}
			case watch.Deleted:
				if isObj {
					delete(st.objects, key(obj))
				}
			}
			if isObj {
				st.rv = obj.GetResourceVersion()
			}
			ok, err := w.eval(st)
			if err != nil || ok {
				return ok, err
			}
		}
	}
}

func (w *Wait) apiError(err error) error {
	if w.Name != "" {
		return kube.ObjectError(w.Kind, w.Namespace, w.Name, err)
	}
	return fmt.Errorf("list %s: %w", w.what(), kube.Classify(err))
}

// state is the objects seen so far, by namespace/name, and the resourceVersion to watch from.
type state struct {
	rc      *engine.RunContext // the condition sees the run's params and steps
	objects map[string]*unstructured.Unstructured
	rv      string
	lastErr string // why the condition could not be evaluated yet
}

func key(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetName()
	}
	return o.GetNamespace() + "/" + o.GetName()
}

func (s *state) relist(ctx context.Context, r dynamic.ResourceInterface, opts metav1.ListOptions) error {
	objects := map[string]*unstructured.Unstructured{}
	opts.Limit = 500
	for {
		page, err := r.List(ctx, opts)
		if err != nil {
			return err
		}
		for i := range page.Items {
			objects[key(&page.Items[i])] = &page.Items[i]
		}
		if page.GetContinue() == "" {
			s.objects, s.rv = objects, page.GetResourceVersion()
			return nil
		}
		opts.Continue = page.GetContinue()
	}
}

func (s *state) keys() []string {
	keys := make([]string, 0, len(s.objects))
	for k := range s.objects {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// eval reports whether the wait is over. A condition that reaches into a field not there yet
// (object.status.readyReplicas >= 2 before the status is written, conditions[0] of an empty
// list, any field of an object that does not exist yet) is not an error, only not yet true: the
// reason is kept for the timeout error. Any other failure of the expression (comparing a
// string with a number) fails the step at once.
func (w *Wait) eval(st *state) (bool, error) {
	st.lastErr = ""
	if w.For == "gone" {
		return len(st.objects) == 0, nil
	}
	vars := Vars{Items: make([]any, 0, len(st.objects))}
	for _, k := range st.keys() {
		vars.Items = append(vars.Items, st.objects[k].Object)
	}
	vars.Count = len(vars.Items)
	if w.Name != "" && len(vars.Items) == 1 {
		vars.Object = st.objects[st.keys()[0]].Object
	}
	ok, err := w.Condition.EvalBool(st.rc, vars)
	if err != nil {
		// The cause is expr-lang's own run-time error; a result that is not a boolean has none
		// and always fails.
		var pe *engine.PosError
		if errors.As(err, &pe) && pe.Err != nil && notYet(oneLine(pe.Err.Error())) {
			st.lastErr = oneLine(pe.Err.Error())
			return false, nil
		}
		return false, fmt.Errorf("condition: %w", err)
	}
	return ok, nil
}

// notYet tells the errors of a condition over fields not set yet: expr-lang reports a missing
// map key as nil ("cannot fetch status from <nil>", "invalid operation: <nil> >= int",
// "invalid argument for len (type <nil>)") and an index past the end as out of range.
// No type: expr-lang panics with these as formatted strings, which its VM turns into a
// file.Error holding only the message.
func notYet(msg string) bool {
	return strings.Contains(msg, "<nil>") || strings.Contains(msg, "out of range")
}

func (w *Wait) outputs(st *state, satisfied bool) engine.Outputs {
	keys := st.keys()
	out := engine.Outputs{"count": len(keys), "satisfied": satisfied}
	if w.Name != "" {
		out["found"] = len(keys) == 1
		if len(keys) == 1 {
			out["object"] = st.objects[keys[0]].Object
		}
		return out
	}
	names := make([]any, len(keys))
	for i, k := range keys {
		names[i] = k
	}
	out["names"] = names
	if w.Items {
		items := make([]any, len(keys))
		for i, k := range keys {
			items[i] = st.objects[k].Object
		}
		out["items"] = items
	}
	return out
}

// brief is the telling part of an object as compact JSON: its status, else its spec, else
// whatever it holds besides apiVersion, kind and metadata (a ConfigMap's data).
func brief(obj map[string]any) string {
	for _, part := range []string{"status", "spec"} {
		if v, ok := obj[part]; ok && !empty(v) {
			b, _ := json.Marshal(v)
			return part + " " + string(b)
		}
	}
	rest := map[string]any{}
	for k, v := range obj {
		if k != "apiVersion" && k != "kind" && k != "metadata" && k != "status" && k != "spec" {
			rest[k] = v
		}
	}
	b, _ := json.Marshal(rest)
	return string(b)
}

func empty(v any) bool {
	m, isMap := v.(map[string]any)
	return v == nil || isMap && len(m) == 0
}

// summary is one line on the last observed state: the object's status (or spec) as compact
// JSON (see brief), or the names of the matching objects, cut to about 300 characters.
func (w *Wait) summary(st *state) string {
	var s string
	keys := st.keys()
	switch {
	case w.Name != "" && len(keys) == 0:
		s = "not found"
	case w.Name != "":
		s = brief(st.objects[keys[0]].Object)
	default:
		s = fmt.Sprintf("%d objects", len(keys))
		if len(keys) > 0 {
			s += ": " + strings.Join(keys, ", ")
		}
	}
	if st.lastErr != "" {
		s += " (condition: " + st.lastErr + ")"
	}
	if len(s) > summaryLen {
		cut := summaryLen
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
