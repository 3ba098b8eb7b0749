package clusterstore

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"

	"planrun.dev/planrun/engine"
)

// A PlanRun holds, in spec, the plan source as the run started from it, and in status a summary
// for people (kubectl get planruns: phase, step, progress, error) and the journal itself,
// gzip-compressed: journals carry every step's outputs and compress about tenfold, and an object
// is at most about 1.5 MiB in etcd. A journal that does not fit even so is refused with the
// reason (large outputs belong in object storage, as kube.backup's do).

var planRunGVR = schema.GroupVersionResource{Group: Group, Version: "v1alpha1", Resource: Resource}

const (
	managedByLabel = "app.kubernetes.io/managed-by"
	planLabel      = "planrun.dev/plan"
	runLabel       = "planrun.dev/run"
	fieldManager   = "planrun"
	// maxObjectBytes bounds the journal (compressed, base64) and the plan source together,
	// leaving room for the object's metadata under etcd's default request limit (1.5 MiB).
	maxObjectBytes = 1300 << 10
	// maxPlanBytes bounds the plan source a PlanRun keeps.
	maxPlanBytes = 256 << 10
	// maxErrorBytes bounds the error shown in the summary (the journal has it whole).
	maxErrorBytes = 1024
)

func newRunObject(namespace string, j *engine.Journal, planSource []byte) (*unstructured.Unstructured, error) {
	if len(planSource) > maxPlanBytes {
		return nil, fmt.Errorf("plan of run %s is %d KiB: more than a PlanRun keeps (%d KiB)", j.RunID, len(planSource)>>10, maxPlanBytes>>10)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": planRunGVR.GroupVersion().String(),
		"kind":       "PlanRun",
		"metadata": map[string]any{
			"name":      j.RunID,
			"namespace": namespace,
			"labels":    map[string]any{managedByLabel: "planrun", planLabel: LabelValue(j.Plan.Name)},
		},
		"spec": map[string]any{"planSource": string(planSource)},
	}}
	return obj, setJournal(obj, j)
}

// setJournal writes j and its summary into obj's status.
func setJournal(obj *unstructured.Unstructured, j *engine.Journal) error {
	data, err := j.Encode()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed) // a checkpoint before and after every step
	if _, err := zw.Write(data); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	encoded := base64.StdEncoding.EncodeToString(buf.Bytes())
	plan, _, _ := unstructured.NestedString(obj.Object, "spec", "planSource")
	if len(encoded)+len(plan) > maxObjectBytes {
		return fmt.Errorf("journal of run %s is %d KiB compressed (%d KiB as JSON): with its plan, more than a PlanRun holds (%d KiB); keep large step outputs in object storage",
			j.RunID, len(encoded)>>10, len(data)>>10, maxObjectBytes>>10)
	}
	done := 0
	current := ""
	for _, r := range j.Steps {
		if r.Status == engine.StepSucceeded || r.Status == engine.StepSkipped || r.Status == engine.StepRolledBack {
			done++
		}
		if r.Status == engine.StepRunning || r.Status == engine.StepFailed {
			current = r.ID
		}
	}
	status := map[string]any{
		"phase":       string(j.Status),
		"plan":        fmt.Sprintf("%s v%d", j.Plan.Name, j.Plan.Version),
		"progress":    fmt.Sprintf("%d/%d", done, len(j.Steps)),
		"started":     j.Started.UTC().Format(time.RFC3339),
		"updated":     j.Updated.UTC().Format(time.RFC3339),
		"journalGzip": encoded,
	}
	if current != "" {
		status["step"] = current
	}
	if j.Finished != nil {
		status["finished"] = j.Finished.UTC().Format(time.RFC3339)
	}
	if j.Error != "" {
		e := j.Error
		if len(e) > maxErrorBytes {
			e = e[:maxErrorBytes] + "…"
		}
		status["error"] = e
	}
	if holder, ok, _ := unstructured.NestedString(obj.Object, "status", "holder"); ok {
		status["holder"] = holder
	}
	return unstructured.SetNestedField(obj.Object, status, "status")
}

// journalOf reads the journal of a PlanRun; a missing or damaged one is ErrCorruptJournal.
func journalOf(obj *unstructured.Unstructured, runID string) (*engine.Journal, error) {
	corrupt := func(why string, args ...any) error {
		return fmt.Errorf("PlanRun %s/%s: %w: %s", obj.GetNamespace(), obj.GetName(), engine.ErrCorruptJournal, fmt.Sprintf(why, args...))
	}
	enc, _, _ := unstructured.NestedString(obj.Object, "status", "journalGzip")
	if enc == "" {
		return nil, corrupt("no journal in its status")
	}
	zipped, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return nil, corrupt("journal: %v", err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(zipped))
	if err != nil {
		return nil, corrupt("journal: %v", err)
	}
	// A journal that fitted compressed is at most some hundred times larger: a bound against a
	// forged object that inflates without end.
	data, err := io.ReadAll(io.LimitReader(zr, 256<<20))
	if err != nil {
		return nil, corrupt("journal: %v", err)
	}
	j, err := engine.DecodeJournal(data)
	if err != nil {
		return nil, fmt.Errorf("PlanRun %s/%s: %w", obj.GetNamespace(), obj.GetName(), err)
	}
	if j.RunID != runID {
		// A journal copied from another run would make planrun write that run.
		return nil, corrupt("it names run %q", j.RunID)
	}
	return j, nil
}

// LabelValue is a name (of a plan, a run) as a label value, "" when it cannot be one.
func LabelValue(s string) string {
	if len(validation.IsValidLabelValue(s)) > 0 {
		return ""
	}
	return s
}
