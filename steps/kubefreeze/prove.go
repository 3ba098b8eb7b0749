package kubefreeze

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

// maxProbes bounds how many resources are tried when looking for one that can test the freeze.
const maxProbes = 8

// target is a resource the policy freezes, where a dry-run write can test it.
type target struct {
	gvr        schema.GroupVersionResource
	kind       string
	namespaced bool
	namespace  string
	ops        []admissionv1.OperationType
}

func (t target) String() string {
	if t.namespaced {
		return kube.ObjectName(t.kind, t.namespace, probeName)
	}
	return kube.ObjectName(t.kind, "", probeName)
}

// outcome of one dry-run write.
type outcome int

const (
	unusable outcome = iota // the write failed before admission could say anything
	allowed
	denied
)

// prove waits until a dry-run write to a frozen resource is denied by the policy (wantDenied) or
// no longer denied (after an unblock), and returns the object written. Policies take effect
// asynchronously, so it polls until timeout.
func prove(ctx context.Context, rc *engine.RunContext, c *kube.Client, policy *admissionv1.ValidatingAdmissionPolicy, wantDenied bool, timeout time.Duration) (string, error) {
	targets, err := targetsOf(c, policy)
	if err != nil {
		return "", err
	}
	if len(targets) == 0 {
		return "", fmt.Errorf("the freeze cannot be proven: no served resource matches ValidatingAdmissionPolicy %s (set prove: false)", policy.Name)
	}
	deadline := time.Now().Add(timeout)
	var reasons []string
	usable := targets
	for attempt := 1; ; attempt++ {
		var next []target
		reasons = reasons[:0]
		for _, t := range usable {
			o, why, err := probe(ctx, c, policy.Name, t)
			if err != nil {
				return "", err
			}
			switch {
			case o == denied && wantDenied, o == allowed && !wantDenied:
				return t.String(), nil
			case o == unusable:
				reasons = append(reasons, t.String()+": "+why)
				continue
			}
			next = append(next, t)
		}
		if len(next) == 0 {
			return "", fmt.Errorf("the freeze cannot be proven: no dry-run write reaches admission (%s); set prove: false", strings.Join(reasons, "; "))
		}
		usable = next
		if time.Now().After(deadline) {
			if wantDenied {
				return "", fmt.Errorf("the freeze is not in effect after %s: a dry-run write to %s is still allowed (is %s served by an aggregated API server, which ValidatingAdmissionPolicies do not reach?)",
					timeout, usable[0], usable[0].gvr.GroupResource())
			}
			return "", fmt.Errorf("writes are still refused %s after deleting ValidatingAdmissionPolicy %s: a dry-run write to %s is denied", timeout, policy.Name, usable[0])
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(provePoll):
		}
		if attempt == 1 {
			rc.Logger.Debug("waiting for the admission policy to take effect", "policy", policy.Name)
		}
	}
}

// probe makes one dry-run write to t: a create of a minimal object, else an update or delete of
// an existing object, according to the operations frozen.
func probe(ctx context.Context, c *kube.Client, policy string, t target) (outcome, string, error) {
	var r dynamic.ResourceInterface = c.Dynamic.Resource(t.gvr)
	if t.namespaced {
		r = c.Dynamic.Resource(t.gvr).Namespace(t.namespace)
	}
	dry := []string{metav1.DryRunAll}
	var why string
	if slices.Contains(t.ops, admissionv1.Create) {
		obj := &unstructured.Unstructured{}
		obj.SetAPIVersion(t.gvr.GroupVersion().String())
		obj.SetKind(t.kind)
		obj.SetName(probeName)
		_, err := r.Create(ctx, obj, metav1.CreateOptions{DryRun: dry, FieldManager: kube.FieldManager})
		o, reason, ferr := classify(err, policy)
		if o != unusable || ferr != nil {
			return o, reason, ferr
		}
		why = "create: " + reason
	}
	if !slices.Contains(t.ops, admissionv1.Update) && !slices.Contains(t.ops, admissionv1.Delete) {
		return unusable, why, nil
	}
	list, err := r.List(ctx, metav1.ListOptions{Limit: 1})
	if err != nil || len(list.Items) == 0 {
		if why == "" {
			why = "no object to update or delete"
		} else {
			why += "; no object to update or delete"
		}
		return unusable, why, transientOnly(err)
	}
	obj := &list.Items[0]
	if slices.Contains(t.ops, admissionv1.Update) {
		_, err = r.Update(ctx, obj, metav1.UpdateOptions{DryRun: dry, FieldManager: kube.FieldManager})
	} else {
		err = r.Delete(ctx, obj.GetName(), metav1.DeleteOptions{DryRun: dry})
	}
	o, reason, ferr := classify(err, policy)
	if why != "" && o == unusable {
		reason = why + "; " + reason
	}
	return o, reason, ferr
}

// classify says what a dry-run write tells about the policy. Transient errors are returned as
// errors so the step is retried.
func classify(err error, policy string) (outcome, string, error) {
	switch {
	case err == nil:
		return allowed, "", nil
	case deniedBy(err, policy):
		return denied, kube.Reason(err), nil
	case apierrors.IsAlreadyExists(err):
		// Admission ran before storage said the name is taken: the policy did not deny it.
		return allowed, "", nil
	}
	if t := transientOnly(err); t != nil {
		return unusable, "", t
	}
	return unusable, kube.Reason(err), nil
}

// deniedBy reports whether err is policy's denial: the API server adds a cause of its own to the
// status it returns, "ValidatingAdmissionPolicy 'name' [with binding 'name'] denied request: ...".
// No type: that cause's message is the only place naming the policy (no field of the status or
// cause carries it), so its start is matched.
func deniedBy(err error, policy string) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		return false
	}
	for _, c := range status.Status().Details.Causes {
		if strings.HasPrefix(c.Message, "ValidatingAdmissionPolicy '"+policy+"' ") {
			return true
		}
	}
	return false
}

func transientOnly(err error) error {
	if err = kube.Classify(err); engine.IsTransient(err) {
		return err
	}
	return nil
}

// targetsOf lists the resources a policy freezes, through discovery, with where to write them.
func targetsOf(c *kube.Client, p *admissionv1.ValidatingAdmissionPolicy) ([]target, error) {
	mc := p.Spec.MatchConstraints
	if mc == nil {
		return nil, nil
	}
	namespace := "default"
	if sel := mc.NamespaceSelector; sel != nil {
		for _, e := range sel.MatchExpressions {
			if e.Key == nsLabel && e.Operator == metav1.LabelSelectorOpIn && len(e.Values) > 0 {
				namespace = e.Values[0]
			}
		}
	}
	var out []target
	seen := map[schema.GroupResource]bool{}
	for _, rule := range mc.ResourceRules {
		namespacedOnly := rule.Scope != nil && *rule.Scope == admissionv1.NamespacedScope
		for _, g := range rule.APIGroups {
			resources, err := groupResources(c, g)
			if err != nil {
				return nil, err
			}
			for _, ar := range resources {
				gr := schema.GroupResource{Group: ar.Group, Resource: ar.Name}
				if seen[gr] || strings.Contains(ar.Name, "/") || !slices.Contains(ar.Verbs, "list") ||
					!matches(rule.Resources, ar.Name) || excluded(mc.ExcludeResourceRules, gr) ||
					namespacedOnly && !ar.Namespaced {
					continue
				}
				seen[gr] = true
				gvr := schema.GroupVersionResource{Group: ar.Group, Version: ar.Version, Resource: ar.Name}
				t := target{gvr: gvr, kind: ar.Kind, namespaced: ar.Namespaced, ops: rule.Operations}
				if ar.Namespaced {
					t.namespace = namespace
				}
				if slices.Contains(t.ops, admissionv1.OperationAll) {
					t.ops = []admissionv1.OperationType{admissionv1.Create, admissionv1.Update, admissionv1.Delete}
				}
				out = append(out, t)
			}
		}
	}
	// Plain data kinds first: their minimal object is valid, so the create is admitted or denied.
	slices.SortStableFunc(out, func(a, b target) int { return rank(a) - rank(b) })
	if len(out) > maxProbes {
		out = out[:maxProbes]
	}
	return out, nil
}

func rank(t target) int {
	switch t.gvr.GroupResource().String() {
	case "configmaps", "secrets", "serviceaccounts", "leases.coordination.k8s.io":
		return 0
	}
	if !slices.Contains(t.ops, admissionv1.Create) {
		return 2
	}
	return 1
}

// matches reports whether admission rule resources match a resource (not a subresource): "*"
// and "*/*" (everything, subresources included) do; "name/*" covers subresources only.
func matches(patterns []string, resource string) bool {
	for _, p := range patterns {
		if p == "*" || p == "*/*" || p == resource {
			return true
		}
	}
	return false
}

func excluded(rules []admissionv1.NamedRuleWithOperations, gr schema.GroupResource) bool {
	for _, r := range rules {
		if (slices.Contains(r.APIGroups, "*") || slices.Contains(r.APIGroups, gr.Group)) && matches(r.Resources, gr.Resource) {
			return true
		}
	}
	return false
}

// apiResource is a discovered resource with its version.
type apiResource struct {
	metav1.APIResource
	Group, Version string
}

// groupResources lists the resources of an API group at its preferred version ("*": every group).
func groupResources(c *kube.Client, group string) ([]apiResource, error) {
	out, err := discoverGroup(c, group)
	if err == nil && len(out) == 0 {
		c.ResetDiscovery() // the group may have been installed since discovery was cached
		out, err = discoverGroup(c, group)
	}
	return out, err
}

func discoverGroup(c *kube.Client, group string) ([]apiResource, error) {
	groups, err := c.Discovery.ServerGroups()
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", kube.Classify(err))
	}
	var out []apiResource
	for _, g := range groups.Groups {
		if group != "*" && g.Name != group {
			continue
		}
		list, err := c.Discovery.ServerResourcesForGroupVersion(g.PreferredVersion.GroupVersion)
		if err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return nil, fmt.Errorf("discovery of %s: %w", g.PreferredVersion.GroupVersion, kube.Classify(err))
		}
		for _, r := range list.APIResources {
			out = append(out, apiResource{APIResource: r, Group: g.Name, Version: g.PreferredVersion.Version})
		}
	}
	return out, nil
}
