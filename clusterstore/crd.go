package clusterstore

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// crdName is the name of the PlanRun CustomResourceDefinition.
const crdName = "planruns.planrun.dev"

// CRD is the PlanRun CustomResourceDefinition, as YAML: what Open installs when the cluster
// lacks it and the credentials may, and what a cluster admin applies otherwise
// (planrun install-crd prints it).
func CRD() []byte {
	b, err := yaml.Marshal(crdObject().Object)
	if err != nil {
		panic(err) // a literal
	}
	return b
}

func crdObject() *unstructured.Unstructured {
	str := map[string]any{"type": "string"}
	col := func(name, path, typ string) map[string]any {
		return map[string]any{"name": name, "type": typ, "jsonPath": path}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1",
		"kind":       "CustomResourceDefinition",
		"metadata":   map[string]any{"name": crdName, "labels": map[string]any{managedByLabel: "planrun"}},
		"spec": map[string]any{
			"group": planRunGVR.Group,
			"scope": "Namespaced",
			"names": map[string]any{
				"plural": "planruns", "singular": "planrun", "kind": "PlanRun", "listKind": "PlanRunList",
				"shortNames": []any{"pr"}, "categories": []any{"planrun"},
			},
			"versions": []any{map[string]any{
				"name": planRunGVR.Version, "served": true, "storage": true,
				"additionalPrinterColumns": []any{
					col("Plan", ".status.plan", "string"),
					col("Phase", ".status.phase", "string"),
					col("Progress", ".status.progress", "string"),
					col("Step", ".status.step", "string"),
					col("Holder", ".status.holder", "string"),
					col("Age", ".metadata.creationTimestamp", "date"),
				},
				"schema": map[string]any{"openAPIV3Schema": map[string]any{
					"type":        "object",
					"description": "A run of a planrun plan: the plan as it started, and the run's journal (planrun status RUN --state k8s://… reads it).",
					"properties": map[string]any{
						"apiVersion": str, "kind": str, "metadata": map[string]any{"type": "object"},
						"spec": map[string]any{"type": "object", "properties": map[string]any{
							"planSource": map[string]any{"type": "string", "description": "The plan file as the run started from it."},
						}},
						"status": map[string]any{"type": "object", "properties": map[string]any{
							"phase": str, "plan": str, "progress": str, "step": str, "holder": str,
							"started": str, "updated": str, "finished": str, "error": str,
							"journalGzip": map[string]any{"type": "string", "description": "The run's journal, JSON, gzip-compressed, base64."},
						}},
					},
				}},
			}},
		},
	}}
}

// ensureCRD makes sure the cluster serves PlanRuns: it installs the definition when it is
// missing, and says what to do when it may not.
func (s *Store) ensureCRD(ctx context.Context) error {
	crds := s.dyn.Resource(crdGVR)
	_, err := crds.Get(ctx, crdName, metav1.GetOptions{})
	switch {
	case err == nil:
		return nil
	case apierrors.IsForbidden(err):
		// May not read definitions: use PlanRuns if they are served, say so if not.
		_, lerr := s.runs().List(ctx, metav1.ListOptions{Limit: 1})
		switch {
		case lerr == nil:
			return nil
		case apierrors.IsForbidden(lerr):
			// Served, perhaps, but not to these credentials: the server's message says which
			// verb on which resource they lack.
			return s.apiErr("listing PlanRuns", lerr)
		}
		return fmt.Errorf("state in %s: the PlanRun resource is not installed and these credentials may not check or install it; a cluster admin runs: planrun install-crd | kubectl apply -f -", s.where)
	case !apierrors.IsNotFound(err):
		return s.apiErr("reading CustomResourceDefinition "+crdName, err)
	}
	_, err = crds.Create(ctx, crdObject(), metav1.CreateOptions{FieldManager: fieldManager})
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("state in %s: the PlanRun resource is not installed and these credentials may not install it; a cluster admin runs: planrun install-crd | kubectl apply -f -", s.where)
	}
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return s.apiErr("installing CustomResourceDefinition "+crdName, err)
	}
	return s.waitEstablished(ctx)
}

// waitEstablished waits until the API server serves the definition it was just given.
func (s *Store) waitEstablished(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		obj, err := s.dyn.Resource(crdGVR).Get(ctx, crdName, metav1.GetOptions{})
		if err == nil && established(obj) {
			// Discovery lags the condition a little: the first list says when it is served.
			if _, err := s.runs().List(ctx, metav1.ListOptions{Limit: 1}); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("state in %s: CustomResourceDefinition %s installed but not served after 30s", s.where, crdName)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func established(obj *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}
