// Package kubefreeze implements kube.blockWrites and kube.unblockWrites: freeze writes to chosen
// API groups and resources with a ValidatingAdmissionPolicy and its binding (no webhook server),
// proven by a server-side dry-run write that must be denied, and lift the freeze again.
package kubefreeze

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

func init() {
	engine.Register(engine.StepType{
		Name: "kube.blockWrites",
		Doc:  "Refuse writes to API groups/resources with a ValidatingAdmissionPolicy, proven by a denied dry-run write; undo lifts it.",
		New:  func() engine.Action { return new(BlockWrites) },
	})
	engine.Register(engine.StepType{
		Name: "kube.unblockWrites",
		Doc:  "Lift a freeze made by kube.blockWrites: delete its ValidatingAdmissionPolicy and binding.",
		New:  func() engine.Action { return new(UnblockWrites) },
	})
}

var (
	policyGVR  = admissionv1.SchemeGroupVersion.WithResource("validatingadmissionpolicies")
	bindingGVR = admissionv1.SchemeGroupVersion.WithResource("validatingadmissionpolicybindings")
)

const (
	// proveTimeout bounds the wait for a new (or deleted) policy to take effect: the API server
	// loads policies asynchronously, usually within a second.
	defaultProveTimeout = 30 * time.Second
	provePoll           = 250 * time.Millisecond
	// probeName is the name of the object a dry-run create uses to test the freeze.
	probeName = "planrun-freeze-probe"
	// nsLabel is set by the API server on every namespace to its name.
	nsLabel = "kubernetes.io/metadata.name"
)

// BlockWrites freezes writes.
type BlockWrites struct {
	kube.ClusterRef `yaml:",inline"`
	Name            string          `yaml:"name" doc:"Name of the ValidatingAdmissionPolicy and of its binding; default planrun-freeze-<run id>-<step id>."`
	Groups          []string        `yaml:"groups" doc:"API groups whose resources are frozen, such as servicecatalog.k8s.io (\"\" is the core group)."`
	Resources       []string        `yaml:"resources" doc:"Resources frozen, such as configmaps, deployments.apps or serviceinstances.servicecatalog.k8s.io."`
	Operations      []string        `yaml:"operations" doc:"Operations refused: CREATE, UPDATE, DELETE (default all three) or CONNECT."`
	Subresources    bool            `yaml:"subresources" doc:"Also refuse writes through subresources (status, scale...) of the frozen resources."`
	Namespaces      []string        `yaml:"namespaces" doc:"Freeze only in these namespaces (cluster-scoped resources are then not frozen); default everywhere."`
	ExemptResources []string        `yaml:"exemptResources" doc:"Resources still writable, such as leases (resolved like resources)."`
	ExemptUsers     []string        `yaml:"exemptUsers" doc:"User names still allowed to write, such as system:serviceaccount:ns:migrator."`
	ExemptGroups    []string        `yaml:"exemptGroups" doc:"User groups still allowed to write."`
	Message         string          `yaml:"message" doc:"Denial message; default says a migration is in progress, with the run id."`
	Prove           *bool           `yaml:"prove" doc:"Prove the freeze with a server-side dry-run write that must be denied (default true)."`
	ProveTimeout    engine.Duration `yaml:"proveTimeout" doc:"How long to wait for the policy to take effect (default 30s)."`
}

var (
	_ engine.Action     = (*BlockWrites)(nil)
	_ engine.Validator  = (*BlockWrites)(nil)
	_ engine.Undoer     = (*BlockWrites)(nil)
	_ engine.Describer  = (*BlockWrites)(nil)
	_ kube.AccessNeeder = (*BlockWrites)(nil)
)

// Policy and binding, as kube.ResourceRule names them.
const (
	policyResource  = "validatingadmissionpolicies.admissionregistration.k8s.io"
	bindingResource = "validatingadmissionpolicybindings.admissionregistration.k8s.io"
)

// Access implements kube.AccessNeeder:
//   - create and patch on the policy and its binding: they are applied (server-side apply);
//   - get on the policy and delete on both: undo, or a freeze that cannot be proven, reads the
//     policy and deletes them;
//   - create on selfsubjectreviews: with exempt users or groups, the proof first checks that
//     planrun is not exempt itself;
//   - on the frozen resources (groups: any resource of the group), the proof's dry-run writes:
//     create (CREATE frozen), list and update (UPDATE) or delete (DELETE without UPDATE).
func (b *BlockWrites) Access() []kube.Rule {
	out := []kube.Rule{
		kube.ResourceRule(policyResource, "get", "create", "patch", "delete"),
		kube.ResourceRule(bindingResource, "create", "patch", "delete"),
	}
	if b.Prove != nil && !*b.Prove {
		return out
	}
	if len(b.ExemptUsers) > 0 || len(b.ExemptGroups) > 0 {
		out = append(out, kube.ResourceRule("selfsubjectreviews.authentication.k8s.io", "create"))
	}
	verbs := probeVerbs(b.Operations)
	for _, g := range b.Groups {
		out = append(out, kube.Rule{Groups: []string{g}, Resources: []string{"*"}, Verbs: verbs})
	}
	for _, r := range b.Resources {
		out = append(out, kube.ResourceRule(r, verbs...))
	}
	if len(b.Groups) == 0 && len(b.Resources) == 0 {
		out = append(out, kube.AnyResource(verbs...)) // they hold ${{ }}
	}
	return out
}

// probeVerbs are the verbs of the dry-run writes that prove a freeze of operations (default,
// or one that holds ${{ }}: CREATE, UPDATE and DELETE): see probe.
func probeVerbs(operations []string) []string {
	ops := map[string]bool{}
	for _, op := range operations {
		ops[strings.ToUpper(op)] = true
	}
	if len(ops) == 0 || ops[""] {
		ops = map[string]bool{"CREATE": true, "UPDATE": true, "DELETE": true}
	}
	var verbs []string
	if ops["CREATE"] {
		verbs = append(verbs, "create")
	}
	if ops["UPDATE"] || ops["DELETE"] {
		verbs = append(verbs, "list")
	}
	switch {
	case ops["UPDATE"]:
		verbs = append(verbs, "update")
	case ops["DELETE"]:
		verbs = append(verbs, "delete")
	}
	return verbs
}

// Validate implements engine.Validator.
func (b *BlockWrites) Validate() error {
	if len(b.Groups) == 0 && len(b.Resources) == 0 {
		return errors.New("groups, resources: at least one is required")
	}
	if b.Name != "" {
		if errs := validation.IsDNS1123Subdomain(b.Name); len(errs) > 0 {
			return fmt.Errorf("name: %q is not a valid object name (lower-case letters, digits, '-' and '.')", b.Name)
		}
	}
	for _, op := range b.Operations {
		switch strings.ToUpper(op) {
		case "CREATE", "UPDATE", "DELETE", "CONNECT":
		default:
			return fmt.Errorf("operations: %q is not one of CREATE, UPDATE, DELETE, CONNECT", op)
		}
	}
	if strings.ContainsAny(b.Message, "\r\n") {
		return errors.New("message: must be one line")
	}
	for _, ns := range b.Namespaces {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return fmt.Errorf("namespaces: %q is not a namespace name", ns)
		}
	}
	return nil
}

// Describe implements engine.Describer.
func (b *BlockWrites) Describe() string {
	what := append(append([]string{}, b.Resources...), groupNames(b.Groups)...)
	s := "block writes to " + strings.Join(what, ", ")
	if len(b.Namespaces) > 0 {
		s += " in " + strings.Join(b.Namespaces, ", ")
	}
	return s
}

func groupNames(groups []string) []string {
	out := make([]string, len(groups))
	for i, g := range groups {
		if g == "" {
			g = "core"
		}
		out[i] = "group " + g
	}
	return out
}

// Run implements engine.Action.
func (b *BlockWrites) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	c, err := b.Client(rc)
	if err != nil {
		return nil, err
	}
	name := b.Name
	if name == "" {
		name = DefaultName(rc.RunID, rc.StepID)
	}
	policy, binding, err := b.objects(c, rc, name)
	if err != nil {
		return nil, err
	}
	proving := !rc.DryRun && (b.Prove == nil || *b.Prove)
	if proving {
		if err := b.checkNotExempt(ctx, c); err != nil {
			return nil, err
		}
	}
	for _, o := range []struct {
		gvr schema.GroupVersionResource
		obj any
	}{{policyGVR, policy}, {bindingGVR, binding}} {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o.obj)
		if err != nil {
			return nil, err
		}
		obj := &unstructured.Unstructured{Object: u}
		_, err = c.Dynamic.Resource(o.gvr).Apply(ctx, name, obj, metav1.ApplyOptions{FieldManager: kube.FieldManager, Force: true, DryRun: kube.DryRun(rc)})
		if err != nil {
			return nil, kube.ObjectError(obj.GetKind(), "", name, err)
		}
	}
	out := engine.Outputs{"policy": name, "binding": name, "message": policy.Spec.Validations[0].Message}
	if rc.DryRun {
		out["dryRun"] = true
		return out, nil
	}
	if !proving {
		out["proven"] = false
		return out, nil
	}
	timeout := time.Duration(b.ProveTimeout)
	if timeout == 0 {
		timeout = defaultProveTimeout
	}
	probe, err := prove(ctx, rc, c, policy, true, timeout)
	if err != nil {
		if !engine.IsTransient(err) && ctx.Err() == nil {
			// A freeze that cannot be proven is not left behind: the step failed, and the
			// run's rollback will not undo a failed step.
			if _, uerr := unblock(ctx, rc, c, name); uerr != nil {
				err = fmt.Errorf("%w (and removing the unproven policy failed: %v)", err, uerr)
			}
		}
		return nil, err
	}
	out["proven"] = true
	out["probe"] = probe
	return out, nil
}

// Undo implements engine.Undoer: the freeze is lifted.
func (b *BlockWrites) Undo(ctx context.Context, rc *engine.RunContext, outputs engine.Outputs) error {
	name, _ := outputs["policy"].(string)
	if name == "" || outputs["dryRun"] == true {
		return nil
	}
	c, err := b.Client(rc)
	if err != nil {
		return err
	}
	_, err = unblock(ctx, rc, c, name)
	return err
}

// DefaultName is the name of the policy and binding of a blockWrites step without a name: a
// DNS label made of the run and step ids, shortened with a hash when too long.
func DefaultName(runID, stepID string) string {
	return kube.ObjectNameFor("planrun-freeze-", runID, stepID)
}

// objects builds the policy and its binding.
func (b *BlockWrites) objects(c *kube.Client, rc *engine.RunContext, name string) (*admissionv1.ValidatingAdmissionPolicy, *admissionv1.ValidatingAdmissionPolicyBinding, error) {
	ops := []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete}
	if len(b.Operations) > 0 {
		ops = nil
		for _, op := range b.Operations {
			if o := admissionv1.OperationType(strings.ToUpper(op)); !slices.Contains(ops, o) {
				ops = append(ops, o)
			}
		}
	}
	scope := admissionv1.AllScopes
	if len(b.Namespaces) > 0 {
		scope = admissionv1.NamespacedScope
	}
	rule := func(group string, resources []string) admissionv1.NamedRuleWithOperations {
		return admissionv1.NamedRuleWithOperations{RuleWithOperations: admissionv1.RuleWithOperations{
			Operations: ops,
			Rule:       admissionv1.Rule{APIGroups: []string{group}, APIVersions: []string{"*"}, Resources: resources, Scope: &scope},
		}}
	}
	var rules []admissionv1.NamedRuleWithOperations
	for _, g := range b.Groups {
		res := []string{"*"}
		if b.Subresources {
			res = []string{"*/*"} // every resource and subresource; the API refuses "*" beside it
		}
		rules = append(rules, rule(g, res))
	}
	byGroup, groups, err := resolve(c, "resources", b.Resources)
	if err != nil {
		return nil, nil, err
	}
	for _, g := range groups {
		res := byGroup[g]
		if b.Subresources {
			for _, r := range byGroup[g] {
				res = append(res, r+"/*")
			}
		}
		rules = append(rules, rule(g, res))
	}
	var exclude []admissionv1.NamedRuleWithOperations
	exByGroup, exGroups, err := resolve(c, "exemptResources", b.ExemptResources)
	if err != nil {
		return nil, nil, err
	}
	allScopes := admissionv1.AllScopes
	for _, g := range exGroups {
		res := exByGroup[g]
		for _, r := range exByGroup[g] {
			res = append(res, r+"/*")
		}
		exclude = append(exclude, admissionv1.NamedRuleWithOperations{RuleWithOperations: admissionv1.RuleWithOperations{
			Operations: []admissionv1.OperationType{admissionv1.OperationAll},
			Rule:       admissionv1.Rule{APIGroups: []string{g}, APIVersions: []string{"*"}, Resources: res, Scope: &allScopes},
		}})
	}

	msg := b.Message
	if msg == "" {
		msg = fmt.Sprintf("writes are blocked while a migration is in progress (planrun run %s, step %s)", rc.RunID, rc.StepID)
	}
	fail := admissionv1.Fail
	equivalent := admissionv1.Equivalent
	forbidden := metav1.StatusReasonForbidden
	policy := &admissionv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels(rc)},
		Spec: admissionv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: &fail,
			MatchConstraints: &admissionv1.MatchResources{
				ResourceRules:        rules,
				ExcludeResourceRules: exclude,
				MatchPolicy:          &equivalent,
			},
			Validations: []admissionv1.Validation{{Expression: "false", Message: msg, Reason: &forbidden}},
		},
	}
	if len(b.Namespaces) > 0 {
		policy.Spec.MatchConstraints.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: nsLabel, Operator: metav1.LabelSelectorOpIn, Values: b.Namespaces},
		}}
	}
	if len(b.ExemptUsers) > 0 {
		policy.Spec.MatchConditions = append(policy.Spec.MatchConditions, admissionv1.MatchCondition{
			Name: "exempt-users", Expression: "!(request.userInfo.username in " + celList(b.ExemptUsers) + ")",
		})
	}
	if len(b.ExemptGroups) > 0 {
		policy.Spec.MatchConditions = append(policy.Spec.MatchConditions, admissionv1.MatchCondition{
			Name: "exempt-groups", Expression: "!request.userInfo.groups.exists(g, g in " + celList(b.ExemptGroups) + ")",
		})
	}
	binding := &admissionv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels(rc)},
		Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        name,
			ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
		},
	}
	return policy, binding, nil
}

func labels(rc *engine.RunContext) map[string]string {
	l := map[string]string{"app.kubernetes.io/managed-by": "planrun"}
	if errs := validation.IsValidLabelValue(rc.RunID); len(errs) == 0 {
		l["planrun.dev/run"] = rc.RunID
	}
	return l
}

// celList is a CEL list literal of strings (Go's quoting is valid CEL).
func celList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// resolve maps resource names to their groups through discovery: group → plural names, and the
// groups in order of first appearance.
func resolve(c *kube.Client, field string, names []string) (map[string][]string, []string, error) {
	byGroup := map[string][]string{}
	var groups []string
	for _, n := range names {
		gvr, err := c.ResourceFor(n)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", field, err)
		}
		if _, ok := byGroup[gvr.Group]; !ok {
			groups = append(groups, gvr.Group)
		}
		if !slices.Contains(byGroup[gvr.Group], gvr.Resource) {
			byGroup[gvr.Group] = append(byGroup[gvr.Group], gvr.Resource)
		}
	}
	return byGroup, groups, nil
}

// checkNotExempt fails early when planrun's own identity is exempt from the freeze: its
// dry-run write would be allowed, so the freeze could not be proven.
func (b *BlockWrites) checkNotExempt(ctx context.Context, c *kube.Client) error {
	if len(b.ExemptUsers) == 0 && len(b.ExemptGroups) == 0 {
		return nil
	}
	review := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}}
	res, err := c.Dynamic.Resource(schema.GroupVersionResource{Group: "authentication.k8s.io", Version: "v1", Resource: "selfsubjectreviews"}).
		Create(ctx, review, metav1.CreateOptions{})
	if err != nil {
		return nil // the server cannot say; the proof will tell
	}
	user, _, _ := unstructured.NestedString(res.Object, "status", "userInfo", "username")
	groups, _, _ := unstructured.NestedStringSlice(res.Object, "status", "userInfo", "groups")
	if slices.Contains(b.ExemptUsers, user) {
		return fmt.Errorf("the freeze cannot be proven: planrun's own user %s is in exemptUsers (set prove: false)", user)
	}
	for _, g := range groups {
		if slices.Contains(b.ExemptGroups, g) {
			return fmt.Errorf("the freeze cannot be proven: planrun's own user %s is in exempt group %s (set prove: false)", user, g)
		}
	}
	return nil
}

// UnblockWrites lifts a freeze.
type UnblockWrites struct {
	kube.ClusterRef `yaml:",inline"`
	Name            string          `yaml:"name" plan:"required" doc:"Name of the policy and binding, such as ${{ steps.freeze.outputs.policy }}."`
	Prove           bool            `yaml:"prove" doc:"Wait until a dry-run write the freeze refused is allowed again."`
	ProveTimeout    engine.Duration `yaml:"proveTimeout" doc:"How long to wait for writes to be allowed again (default 30s)."`
}

var (
	_ engine.Action     = (*UnblockWrites)(nil)
	_ engine.Describer  = (*UnblockWrites)(nil)
	_ kube.AccessNeeder = (*UnblockWrites)(nil)
)

// Access implements kube.AccessNeeder:
//   - get and delete on the policy, delete on its binding: the policy is read, then both deleted;
//   - with prove, the dry-run writes of blockWrites' proof (create, list, update, delete) on the
//     resources the policy froze, which only the policy read when the step runs says: on every
//     resource.
func (u *UnblockWrites) Access() []kube.Rule {
	out := []kube.Rule{
		kube.ResourceRule(policyResource, "get", "delete"),
		kube.ResourceRule(bindingResource, "delete"),
	}
	if u.Prove {
		out = append(out, kube.AnyResource("create", "list", "update", "delete"))
	}
	return out
}

// Describe implements engine.Describer.
func (u *UnblockWrites) Describe() string { return "unblock writes frozen by " + u.Name }

// Run implements engine.Action.
func (u *UnblockWrites) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	c, err := u.Client(rc)
	if err != nil {
		return nil, err
	}
	if rc.DryRun {
		out := engine.Outputs{"policy": u.Name, "binding": u.Name, "dryRun": true}
		for _, gvr := range []schema.GroupVersionResource{bindingGVR, policyGVR} {
			err := c.Dynamic.Resource(gvr).Delete(ctx, u.Name, metav1.DeleteOptions{DryRun: kube.DryRun(rc)})
			if err != nil && !apierrors.IsNotFound(err) {
				return nil, kube.ObjectError(kindOf(gvr), "", u.Name, err)
			}
		}
		return out, nil
	}
	policy, err := unblock(ctx, rc, c, u.Name)
	if err != nil {
		return nil, err
	}
	out := engine.Outputs{"policy": u.Name, "binding": u.Name, "found": policy != nil}
	if u.Prove && policy != nil {
		timeout := time.Duration(u.ProveTimeout)
		if timeout == 0 {
			timeout = defaultProveTimeout
		}
		probe, err := prove(ctx, rc, c, policy, false, timeout)
		if err != nil {
			return nil, err
		}
		out["probe"] = probe
	}
	return out, nil
}

func kindOf(gvr schema.GroupVersionResource) string {
	if gvr == policyGVR {
		return "ValidatingAdmissionPolicy"
	}
	return "ValidatingAdmissionPolicyBinding"
}

// unblock deletes the binding and the policy (absent ones are fine) and returns the policy as it
// was, or nil if it was already gone.
func unblock(ctx context.Context, rc *engine.RunContext, c *kube.Client, name string) (*admissionv1.ValidatingAdmissionPolicy, error) {
	var policy *admissionv1.ValidatingAdmissionPolicy
	u, err := c.Dynamic.Resource(policyGVR).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil:
		policy = new(admissionv1.ValidatingAdmissionPolicy)
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, policy); err != nil {
			return nil, kube.ObjectError("ValidatingAdmissionPolicy", "", name, err)
		}
	case !apierrors.IsNotFound(err):
		return nil, kube.ObjectError("ValidatingAdmissionPolicy", "", name, err)
	}
	for _, gvr := range []schema.GroupVersionResource{bindingGVR, policyGVR} {
		err := c.Dynamic.Resource(gvr).Delete(ctx, name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return nil, kube.ObjectError(kindOf(gvr), "", name, err)
		}
	}
	rc.Logger.Info("writes unblocked", "policy", name)
	return policy, nil
}
