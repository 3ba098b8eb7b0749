package kubevolumes

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/parallel"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/mover"
)

// Run implements engine.Action: check everything, then copy the claims, parallel at a time,
// each through a backup pod on the source and a restore pod on the target.
func (c *CopyVolumes) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	r := newRunner(rc, &c.Mover)
	plan, err := c.prepare(ctx, rc, r)
	if err != nil {
		return nil, err
	}
	if err := r.checkMover(ctx); err != nil {
		return nil, err
	}
	if rc.DryRun {
		return c.dryRunOutputs(r, plan), nil
	}
	kind := "final"
	if c.Stage {
		kind = "stage"
	}
	if err := r.startRun(ctx, plan.src, kind); err != nil {
		return nil, err
	}
	phases := []string{mover.PhaseBackup, mover.PhaseRestore}
	if c.Verify {
		phases = append(phases, mover.PhaseVerify)
	}
	r.progress = newProgress(rc, phases...)
	err = parallel.Each(ctx, c.parallel(), plan.volumes, func(ctx context.Context, v *volume) error {
		if err := c.copyOne(ctx, r, plan, v); err != nil {
			return fmt.Errorf("claim %s: %w", v.key, err)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			// Interrupted: the mover pods go on, and the step run again finds them.
			return nil, err
		}
		return nil, r.sweepAfterFailure(ctx, err, c.sweepTargets(plan.src, plan.dst))
	}
	// Pods and Secrets of claims an earlier attempt finished, should a crash have come
	// between its checkpoint and its cleanup.
	if left := r.sweep(ctx, c.sweepTargets(plan.src, plan.dst)); len(left) > 0 {
		r.progress.say("could not delete " + joinMax(left))
	}
	return c.outputs(plan, r), nil
}

// copyOne copies one claim: the target claim (created if needed), the backup (unless an earlier
// attempt finished it) with the restore pod started beside it, then the restore.
func (c *CopyVolumes) copyOne(ctx context.Context, r *runner, plan *copyPlan, v *volume) error {
	deadline := time.Now().Add(c.timeout())
	backup := &moverPod{
		role: mover.PhaseBackup, cl: plan.src, namespace: v.namespace, claim: v.claim, readOnly: true,
		name:   objectName("planrun-backup-", v.claim, r.runID, r.stepID, v.namespace, v.claim),
		secret: r.secretName(v.claim, "source", v.namespace, v.claim),
		args:   []string{"--source", v.sourceID},
		node:   v.node, tolerations: v.tolerations, key: v.key,
	}
	if c.Stage {
		backup.args = append(backup.args, "--stage")
	}
	restore := &moverPod{
		role: mover.PhaseRestore, cl: plan.dst, namespace: v.targetNamespace, claim: v.targetClaim,
		name:   objectName("planrun-restore-", v.targetClaim, r.runID, r.stepID, v.namespace, v.claim),
		secret: r.secretName(v.targetClaim, "target", v.namespace, v.claim),
		key:    v.key,
	}

	if err := r.state.target(ctx, v.key, plan.dst.name+"/"+v.targetNamespace+"/"+v.targetClaim); err != nil {
		return err
	}
	st := r.state.get(v.key)
	if st.Restore != nil {
		r.progress.finished(v.key, mover.PhaseBackup, st.Backup.Files, st.Backup.Bytes)
		c.restoreFinished(r, v, st.Restore, st.Backup)
		return nil
	}
	if st.Backup == nil {
		// The restore pod starts with the backup: its scheduling, image start and repository
		// open overlap the backup, and it waits for the snapshot the backup hands off (by the
		// backup pod's name, unique to this copy of this claim).
		if err := c.prepareTarget(ctx, r, plan, v, &st); err != nil {
			return err
		}
		backup.args = append(backup.args, "--handoff", backup.name)
		restore.args = []string{"--source", v.sourceID, "--handoff", backup.name, "--wait", waitArg(deadline)}
		if c.Verify {
			restore.args = append(restore.args, "--verify")
		}
		if err := r.start(ctx, restore, deadline); err != nil {
			return err
		}
		res, err := runMover[*mover.BackupResult](ctx, r, backup, deadline)
		if err != nil {
			// The waiting restore would only time out.
			if cerr := r.cleanup(context.WithoutCancel(ctx), restore); cerr != nil {
				r.rc.Logger.Warn(cerr.Error())
			}
			return err
		}
		if res.Snapshot == "" {
			return fmt.Errorf("mover pod %s/%s on %s gave no snapshot id in its result", backup.namespace, backup.name, backup.cl)
		}
		if err := r.state.update(ctx, v.key, func(s *claimState) { s.Backup = res }); err != nil {
			return err
		}
		st.Backup = res
	}
	r.progress.finished(v.key, mover.PhaseBackup, st.Backup.Files, st.Backup.Bytes)
	if err := r.cleanup(ctx, backup); err != nil {
		return err
	}

	if err := c.prepareTarget(ctx, r, plan, v, &st); err != nil {
		return err
	}
	// A restore pod started with the backup is followed to its end; one made now (after a
	// resume, or again after it was lost) restores the recorded snapshot.
	restore.args = []string{"--snapshot", st.Backup.Snapshot}
	if c.Verify {
		restore.args = append(restore.args, "--verify")
	}
	res, err := runMover[*mover.RestoreResult](ctx, r, restore, deadline)
	if err != nil {
		return err
	}
	if res.Snapshot != st.Backup.Snapshot {
		return fmt.Errorf("mover pod %s/%s on %s restored snapshot %s, not the backup's %s", restore.namespace, restore.name, restore.cl, res.Snapshot, st.Backup.Snapshot)
	}
	if err := r.state.update(ctx, v.key, func(s *claimState) { s.Restore = res }); err != nil {
		return err
	}
	c.restoreFinished(r, v, res, st.Backup)
	return r.cleanup(ctx, restore)
}

// prepareTarget creates the target claim unless it exists, and records that the step created it.
func (c *CopyVolumes) prepareTarget(ctx context.Context, r *runner, plan *copyPlan, v *volume, st *claimState) error {
	created, err := c.ensureTargetClaim(ctx, r, plan.dst, v)
	if err != nil || !created || st.CreatedClaim {
		return err
	}
	st.CreatedClaim = true
	return r.state.update(ctx, v.key, func(s *claimState) { s.CreatedClaim = true })
}

// waitArg is a mover's --wait: until the copy's deadline (the pod's own deadline too).
func waitArg(deadline time.Time) string {
	return fmt.Sprintf("%ds", max(1, int64(time.Until(deadline).Seconds())))
}

// restoreFinished counts a claim's restore (and verify) as done.
func (c *CopyVolumes) restoreFinished(r *runner, v *volume, res *mover.RestoreResult, backup *mover.BackupResult) {
	files, bytes := max(res.Files, backup.Files), max(res.Bytes, backup.Bytes)
	r.progress.finished(v.key, mover.PhaseRestore, files, bytes)
	if c.Verify {
		r.progress.finished(v.key, mover.PhaseVerify, files, bytes)
	}
}

// ensureTargetClaim creates the target claim unless it exists, and reports whether this step
// created it (now, or in an earlier attempt: its annotations say so).
func (c *CopyVolumes) ensureTargetClaim(ctx context.Context, r *runner, dst *cluster, v *volume) (bool, error) {
	claims := dst.cs.CoreV1().PersistentVolumeClaims(v.targetNamespace)
	existing, err := claims.Get(ctx, v.targetClaim, metav1.GetOptions{})
	if err == nil {
		return r.ours(existing), nil
	}
	if !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("claim %s/%s on %s: %w", v.targetNamespace, v.targetClaim, dst, kube.Classify(err))
	}
	if !v.create {
		return false, fmt.Errorf("claim %s/%s on %s was deleted while the step ran", v.targetNamespace, v.targetClaim, dst)
	}
	_, err = claims.Create(ctx, v.target, metav1.CreateOptions{FieldManager: kube.FieldManager})
	if apierrors.IsAlreadyExists(err) {
		return c.ensureTargetClaim(ctx, r, dst, v)
	}
	if err != nil {
		return false, fmt.Errorf("creating claim %s/%s on %s: %w", v.targetNamespace, v.targetClaim, dst, kube.Classify(err))
	}
	r.rc.Logger.Info("created the target claim", "claim", v.targetNamespace+"/"+v.targetClaim, "cluster", dst.name)
	return true, nil
}

// sweepTargets are where this step's mover pods and Secrets may be: the source namespaces on
// the source, the target namespaces on the target.
func (c *CopyVolumes) sweepTargets(src, dst *cluster) []sweepTarget {
	var out []sweepTarget
	for _, ns := range c.Namespaces {
		out = append(out, sweepTarget{src, ns}, sweepTarget{dst, c.targetNamespace(ns)})
	}
	return out
}

// sweepAfterFailure deletes the step's mover pods and Secrets after a claim failed for good
// (the other claims' were cancelled), and adds to err what could not be deleted.
func (r *runner) sweepAfterFailure(ctx context.Context, err error, where []sweepTarget) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	if left := r.sweep(ctx, where); len(left) > 0 {
		return fmt.Errorf("%w; left behind: %s", err, joinMax(left))
	}
	return err
}

// dryRunOutputs say what the copy would do.
func (c *CopyVolumes) dryRunOutputs(r *runner, plan *copyPlan) engine.Outputs {
	volumes := make([]any, 0, len(plan.volumes))
	var create []any
	var total int64
	for _, v := range plan.volumes {
		m := map[string]any{
			"namespace": v.namespace, "claim": v.claim,
			"targetNamespace": v.targetNamespace, "targetClaim": v.targetClaim,
			"size": v.size.String(), "createClaim": v.create,
		}
		if v.create {
			create = append(create, v.targetNamespace+"/"+v.targetClaim)
			m["storageClass"] = derefString(v.target.Spec.StorageClassName)
		}
		if v.node != "" {
			m["node"], m["usedBy"] = v.node, v.usedBy
		}
		total += v.size.Value()
		volumes = append(volumes, m)
	}
	summary := fmt.Sprintf("would copy %s (%s of claims) from cluster %s to %s", plural(len(plan.volumes), "volume"), formatBytes(total), c.From, c.To)
	if len(create) > 0 {
		summary += fmt.Sprintf("; would create %s", plural(len(create), "claim"))
	}
	return engine.Outputs{
		"dryRun":            true,
		"volumes":           volumes,
		"wouldCreateClaims": orEmpty(create),
		"createdClaims":     []any{},
		"snapshots":         map[string]any{},
		"summary":           summary,
		"step":              r.stepID,
	}
}

// outputs are each volume's figures, the totals and a summary line.
func (c *CopyVolumes) outputs(plan *copyPlan, r *runner) engine.Outputs {
	volumes := make([]any, 0, len(plan.volumes))
	snapshots := map[string]any{}
	var created []any
	var t totals
	for _, v := range plan.volumes {
		st := r.state.get(v.key)
		b, res := st.Backup, st.Restore
		vt := totals{files: b.Files, bytes: b.Bytes, uploaded: b.UploadedBytes, written: res.WrittenBytes, warnings: b.Warnings}
		t.add(vt)
		volumes = append(volumes, map[string]any{
			"namespace": v.namespace, "claim": v.claim,
			"targetNamespace": v.targetNamespace, "targetClaim": v.targetClaim,
			"snapshot": b.Snapshot,
			"files":    vt.files, "bytes": vt.bytes, "uploadedBytes": vt.uploaded, "writtenBytes": vt.written,
			"deleted": res.Deleted, "verified": res.Verified,
			"seconds": roundSeconds(b.Seconds + res.Seconds), "warnings": vt.warnings,
			"createdClaim": st.CreatedClaim,
		})
		snapshots[v.targetNamespace+"/"+v.targetClaim] = b.Snapshot
		if st.CreatedClaim {
			created = append(created, v.targetNamespace+"/"+v.targetClaim)
		}
	}
	out := t.outputs()
	out["volumes"] = volumes
	out["snapshots"] = snapshots
	out["createdClaims"] = orEmpty(created)
	out["stage"] = c.Stage
	out["verified"] = c.Verify
	out["summary"] = t.summary(len(plan.volumes), c.Verify)
	out["step"] = r.stepID // whose objects an undo deletes
	return out
}

// claimOf is a claim's object for Undo.
func claimOf(ctx context.Context, cl *cluster, ns, name string) (*corev1.PersistentVolumeClaim, error) {
	pvc, err := cl.cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("claim %s/%s on %s: %w", ns, name, cl, kube.Classify(err))
	}
	return pvc, nil
}
