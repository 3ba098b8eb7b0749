package kubevolumes

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/internal/parallel"
	"planrun.dev/planrun/steps/mover"
)

// checked is one claim to verify, as the checks found it.
type checked struct {
	key, namespace, claim, snapshot string
	node, usedBy                    string
	tolerations                     []corev1.Toleration
}

// Run implements engine.Action: a verify pod per claim reads every file of the claim and checks
// it against the snapshot's per-file index (sha256, size); a difference fails the step, the
// mover's message naming the files.
func (v *VerifyVolumes) Run(ctx context.Context, rc *engine.RunContext) (engine.Outputs, error) {
	r := newRunner(rc, &v.Mover)
	cl, err := connect(rc, v.Cluster)
	if err != nil {
		return nil, err
	}
	claims, err := v.prepare(ctx, r, cl)
	if err != nil {
		return nil, err
	}
	if err := r.checkMover(ctx); err != nil {
		return nil, err
	}
	if rc.DryRun {
		list := make([]any, 0, len(claims))
		for _, c := range claims {
			list = append(list, map[string]any{"namespace": c.namespace, "claim": c.claim, "snapshot": c.snapshot})
		}
		return engine.Outputs{"dryRun": true, "volumes": list, "summary": "would verify " + plural(len(claims), "volume")}, nil
	}
	if err := r.startRun(ctx, cl, "verify"); err != nil {
		return nil, err
	}
	r.progress = newProgress(rc, mover.PhaseVerify)
	var where []sweepTarget
	seen := map[string]bool{}
	for _, c := range claims {
		if !seen[c.namespace] {
			seen[c.namespace] = true
			where = append(where, sweepTarget{cl, c.namespace})
		}
	}
	err = parallel.Each(ctx, v.parallel(), claims, func(ctx context.Context, c *checked) error {
		if err := v.verifyOne(ctx, r, cl, c); err != nil {
			return fmt.Errorf("claim %s: %w", c.key, err)
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, r.sweepAfterFailure(ctx, err, where)
	}
	if left := r.sweep(ctx, where); len(left) > 0 {
		r.progress.say("could not delete " + joinMax(left))
	}

	volumes := make([]any, 0, len(claims))
	var files, bytes int64
	for _, c := range claims {
		res := r.state.get(c.key).Verify
		files += res.Files
		bytes += res.Bytes
		volumes = append(volumes, map[string]any{
			"namespace": c.namespace, "claim": c.claim, "snapshot": c.snapshot,
			"files": res.Files, "bytes": res.Bytes, "seconds": roundSeconds(res.Seconds),
		})
	}
	return engine.Outputs{
		"volumes": volumes, "files": files, "bytes": bytes,
		"summary": fmt.Sprintf("%s verified: %s in %s", plural(len(claims), "volume"), formatBytes(bytes), plural64(files, "file")),
	}, nil
}

// prepare checks the claims to verify: each exists and is Bound, and can be mounted.
func (v *VerifyVolumes) prepare(ctx context.Context, r *runner, cl *cluster) ([]*checked, error) {
	keys := make([]string, 0, len(v.Snapshots))
	for k := range v.Snapshots {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var bad problems
	var out []*checked
	users := map[string]map[string][]corev1.Pod{}
	for _, key := range keys {
		ns, name, _ := strings.Cut(key, "/")
		if _, ok := users[ns]; !ok {
			found, err := namespaceExists(ctx, cl, ns)
			if err != nil {
				return nil, err
			}
			if !found {
				bad.add("namespace %s on %s not found", ns, cl)
				users[ns] = nil
				continue
			}
			if users[ns], err = claimUsers(ctx, cl, ns, r.hash); err != nil {
				return nil, err
			}
			if err := r.checkServiceAccount(ctx, cl, ns, &bad); err != nil {
				return nil, err
			}
		} else if users[ns] == nil {
			continue // the namespace is missing: said once
		}
		pvc, err := claimOf(ctx, cl, ns, name)
		if err != nil {
			return nil, err
		}
		if pvc == nil {
			bad.add("claim %s on %s not found", key, cl)
			continue
		}
		if pvc.Status.Phase != corev1.ClaimBound {
			bad.add("claim %s on %s is %s, not Bound", key, cl, phaseOf(pvc))
			continue
		}
		c := &checked{key: key, namespace: ns, claim: name, snapshot: v.Snapshots[key]}
		if u := users[ns][name]; len(u) > 0 {
			if hasMode(pvc, corev1.ReadWriteOncePod) {
				bad.add("claim %s on %s is ReadWriteOncePod and mounted by pod %s: a mover cannot mount it too", key, cl, u[0].Name)
				continue
			}
			c.node, c.usedBy, c.tolerations = u[0].Spec.NodeName, u[0].Name, u[0].Spec.Tolerations
			r.rc.Warn(fmt.Sprintf("claim %s on %s is in use by pod %s: files it changed since the copy will differ", key, cl, u[0].Name))
		}
		out = append(out, c)
	}
	if err := bad.err(); err != nil {
		return nil, err
	}
	return out, nil
}

// verifyOne runs the verify pod of a claim, unless an earlier attempt did.
func (v *VerifyVolumes) verifyOne(ctx context.Context, r *runner, cl *cluster, c *checked) error {
	if st := r.state.get(c.key); st.Verify != nil && st.Verify.Snapshot == c.snapshot {
		r.progress.finished(c.key, mover.PhaseVerify, st.Verify.Files, st.Verify.Bytes)
		return nil
	}
	p := &moverPod{
		role: mover.PhaseVerify, cl: cl, namespace: c.namespace, claim: c.claim, readOnly: true,
		name:   objectName("planrun-verify-", c.claim, r.runID, r.stepID, c.namespace, c.claim),
		secret: r.secretName(c.claim, "verify", c.namespace, c.claim),
		args:   []string{"--snapshot", c.snapshot},
		node:   c.node, tolerations: c.tolerations, key: c.key,
	}
	res, err := runMover[*mover.VerifyResult](ctx, r, p, time.Now().Add(v.timeout()))
	if err != nil {
		return err
	}
	if res.Snapshot == "" {
		res.Snapshot = c.snapshot
	}
	if err := r.state.update(ctx, c.key, func(s *claimState) { s.Verify = res }); err != nil {
		return err
	}
	r.progress.finished(c.key, mover.PhaseVerify, res.Files, res.Bytes)
	return r.cleanup(ctx, p)
}
