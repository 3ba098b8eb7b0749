// Package kubeapply implements the steps that change Kubernetes objects: kube.apply (server-side
// apply of manifests; undo deletes what it created), kube.patch (merge, JSON or strategic patch;
// undo restores the prior values) and kube.delete (by name or selector, optionally waiting until
// gone and removing finalizers).
package kubeapply

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	"planrun.dev/planrun/steps/kube"
)

// ObjectRef names one object in outputs; UID tells it apart from a later object of the same name.
type ObjectRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	UID        string `json:"uid,omitempty"`
}

func refOf(obj *unstructured.Unstructured) ObjectRef {
	return ObjectRef{APIVersion: obj.GetAPIVersion(), Kind: obj.GetKind(), Namespace: obj.GetNamespace(), Name: obj.GetName(), UID: string(obj.GetUID())}
}

func (r ObjectRef) key() string {
	return r.APIVersion + "|" + r.Kind + "|" + r.Namespace + "|" + r.Name
}

func (r ObjectRef) String() string { return kube.ObjectName(r.Kind, r.Namespace, r.Name) }

// fromOutputs decodes a value of recorded outputs (plain JSON shapes after the checkpoint) into v.
func fromOutputs(value any, v any) error {
	b, err := json.Marshal(value)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// isDryRunOutputs reports whether outputs were recorded by a dry run (nothing to undo).
func isDryRunOutputs(out map[string]any) bool {
	b, _ := out["dryRun"].(bool)
	return b
}

// decodeDocuments reads multi-document YAML (or JSON objects one after another) into objects;
// empty documents are skipped and v1 Lists are expanded into their items.
func decodeDocuments(data []byte) ([]map[string]any, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []map[string]any
	for doc := 1; ; doc++ {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %s", doc, oneLine(err.Error()))
		}
		if len(obj) == 0 {
			continue
		}
		out = append(out, obj)
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// expandList turns a List (kind ending in List, with items) into its items.
func expandList(obj map[string]any) ([]map[string]any, bool) {
	kind, _ := obj["kind"].(string)
	items, ok := obj["items"].([]any)
	if !ok || !strings.HasSuffix(kind, "List") {
		return nil, false
	}
	out := make([]map[string]any, 0, len(items))
	for _, it := range items {
		m, _ := it.(map[string]any)
		out = append(out, m)
	}
	return out, true
}

// checkObject checks what server-side apply needs of a manifest: apiVersion, kind and a name.
func checkObject(obj map[string]any) error {
	if obj == nil {
		return errors.New("expected an object (a mapping)")
	}
	for _, f := range []string{"apiVersion", "kind"} {
		s, ok := obj[f].(string)
		if !ok || s == "" {
			return fmt.Errorf("%s: required", f)
		}
	}
	if _, err := schema.ParseGroupVersion(obj["apiVersion"].(string)); err != nil {
		return fmt.Errorf("apiVersion: %v", err)
	}
	md, ok := obj["metadata"].(map[string]any)
	if !ok {
		return errors.New("metadata.name: required")
	}
	if name, _ := md["name"].(string); name == "" {
		if _, gen := md["generateName"]; gen {
			return errors.New("metadata.name: required (server-side apply cannot use generateName)")
		}
		return errors.New("metadata.name: required")
	}
	if ns, ok := md["namespace"]; ok {
		if _, isStr := ns.(string); !isStr {
			return errors.New("metadata.namespace: expected a string")
		}
	}
	return nil
}

// namespaced reports whether a mapping is for namespaced objects.
func namespaced(m *meta.RESTMapping) bool { return m.Scope.Name() == meta.RESTScopeNameNamespace }

// checkNamespace catches a namespace given for a cluster-scoped kind, or missing for a named
// namespaced object, before the API server answers with something less clear.
func checkNamespace(m *meta.RESTMapping, ns, kind string, named bool) error {
	switch {
	case namespaced(m) && ns == "" && named:
		return fmt.Errorf("namespace: required, %s is namespaced", kind)
	case !namespaced(m) && ns != "":
		return errors.New("namespace: " + kind + " is cluster-scoped; remove namespace")
	}
	return nil
}

// pageSize bounds each list request.
const pageSize = 500

// selectTargets returns the objects a patch or delete works on: the named one (nil when it does
// not exist), or every object matching the label selector in ns ("" for all namespaces).
func selectTargets(ctx context.Context, c *kube.Client, m *meta.RESTMapping, kind, ns, name, selector string) ([]*unstructured.Unstructured, error) {
	if name != "" {
		obj, err := c.Resource(m, ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		if err != nil {
			return nil, kube.ObjectError(kind, ns, name, err)
		}
		return []*unstructured.Unstructured{obj}, nil
	}
	var r dynamic.ResourceInterface = c.Dynamic.Resource(m.Resource)
	if ns != "" {
		r = c.Dynamic.Resource(m.Resource).Namespace(ns)
	}
	var out []*unstructured.Unstructured
	opts := metav1.ListOptions{LabelSelector: selector, Limit: pageSize}
	for {
		page, err := r.List(ctx, opts)
		if err != nil {
			what := kind
			if selector != "" {
				what += " matching " + selector
			}
			return nil, fmt.Errorf("list %s: %w", what, kube.Classify(err))
		}
		for i := range page.Items {
			out = append(out, &page.Items[i])
		}
		if page.GetContinue() == "" {
			return out, nil
		}
		opts.Continue = page.GetContinue()
	}
}

// sameUID reports whether obj is the object ref names (a ref without a UID matches any).
func sameUID(obj *unstructured.Unstructured, uid string) bool {
	return uid == "" || types.UID(uid) == obj.GetUID()
}

// isUnknownKind reports whether err is kube.Client.Mapping's answer for a kind the cluster does
// not serve (its CRD is gone, for instance).
func isUnknownKind(err error) bool { return errors.Is(err, kube.ErrUnknownKind) }

// targetDesc says which objects a patch or delete works on, for Describe.
func targetDesc(kind, ns, name, selector string) string {
	if name != "" {
		return kube.ObjectName(kind, ns, name)
	}
	return fmt.Sprintf("every %s matching %q in %s", kind, selector, namespaceDesc(ns))
}

// namespaceDesc says where objects are looked for: one namespace, or all of them.
func namespaceDesc(ns string) string {
	if ns == "" {
		return "all namespaces"
	}
	return "namespace " + ns
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
