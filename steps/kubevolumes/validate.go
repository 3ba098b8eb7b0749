package kubevolumes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
	"planrun.dev/planrun/steps/storage"
)

// Everything is checked before anything is written anywhere: a step with a missing claim, a
// claim not Bound, a storage class the target lacks, a target claim the app already uses or a
// repository that cannot be reached fails with nothing created on either cluster.

// volume is one claim to copy, as the checks found it.
type volume struct {
	key                          string // the source claim, namespace/name
	namespace, claim             string
	targetNamespace, targetClaim string
	sourceID                     string            // the mover's --source: <cluster uid>/<namespace>/<claim>
	size                         resource.Quantity // the larger of the claim's request and its volume's capacity
	// node is the node of a running pod that mounts the source claim ("" if none), usedBy
	// names that pod, tolerations are its tolerations.
	node, usedBy string
	tolerations  []corev1.Toleration
	// target is the existing target claim, or the one to create (create set).
	target *corev1.PersistentVolumeClaim
	create bool
}

// problems collects what the checks found wrong, so that one run of the step reports all of it
// on one line.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

func (p problems) err() error {
	if len(p) == 0 {
		return nil
	}
	const most = 10
	if len(p) > most {
		return fmt.Errorf("%s; and %d more", strings.Join(p[:most], "; "), len(p)-most)
	}
	return errors.New(strings.Join(p, "; "))
}

// copyPlan is what a copy will do, once checked.
type copyPlan struct {
	src, dst *cluster
	volumes  []*volume
}

// prepare checks the copy and returns its plan: each selected source claim exists and is
// Bound, can be mounted by a mover (not a ReadWriteOncePod claim in use), and has a target claim
// that either exists, unused by any pod, or can be created (its namespace and storage class
// exist, and a server-side dry run of its creation passes).
func (c *CopyVolumes) prepare(ctx context.Context, rc *engine.RunContext, r *runner) (*copyPlan, error) {
	src, err := connect(rc, c.From)
	if err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	dst, err := connect(rc, c.To)
	if err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	uid, err := src.uid(ctx)
	if err != nil {
		return nil, err
	}
	plan := &copyPlan{src: src, dst: dst}
	var bad problems
	classes := map[string]bool{} // storage classes found on the target
	for _, ns := range c.Namespaces {
		claims, err := c.selectClaims(ctx, src, ns, &bad)
		if err != nil {
			return nil, err
		}
		if len(claims) == 0 {
			continue
		}
		users, err := claimUsers(ctx, src, ns, r.hash)
		if err != nil {
			return nil, err
		}
		tns := c.targetNamespace(ns)
		tnsFound, err := namespaceExists(ctx, dst, tns)
		if err != nil {
			return nil, err
		}
		// A dry run of a plan whose earlier step creates the target namespace (a restore) finds
		// none: nothing was created. The source side is still checked and the copy listed.
		targetUnchecked := !tnsFound && rc.DryRun
		switch {
		case targetUnchecked:
			rc.Warn(fmt.Sprintf("dry run: namespace %s on %s does not exist yet (created by an earlier step when the run is real): the target side of its claims is not checked", tns, dst))
		case !tnsFound:
			bad.add("namespace %s on %s not found (restore or create it before copying its volumes)", tns, dst)
			continue
		}
		var targetUsers map[string][]corev1.Pod
		if !targetUnchecked {
			if targetUsers, err = claimUsers(ctx, dst, tns, r.hash); err != nil {
				return nil, err
			}
			if err := r.checkServiceAccount(ctx, dst, tns, &bad); err != nil {
				return nil, err
			}
		}
		if err := r.checkServiceAccount(ctx, src, ns, &bad); err != nil {
			return nil, err
		}
		for _, pvc := range claims {
			v := &volume{
				key: ns + "/" + pvc.Name, namespace: ns, claim: pvc.Name,
				targetNamespace: tns, targetClaim: pvc.Name,
				sourceID: uid + "/" + ns + "/" + pvc.Name,
				size:     claimSize(pvc),
			}
			if pvc.Status.Phase != corev1.ClaimBound {
				bad.add("claim %s on %s is %s, not Bound", v.key, src, phaseOf(pvc))
				continue
			}
			if u := users[pvc.Name]; len(u) > 0 {
				if hasMode(pvc, corev1.ReadWriteOncePod) {
					bad.add("claim %s on %s is ReadWriteOncePod and mounted by pod %s: a mover cannot mount it too (quiesce the app first)", v.key, src, u[0].Name)
					continue
				}
				// A ReadWriteOnce volume is attached to one node: the mover goes there.
				v.node, v.usedBy, v.tolerations = u[0].Spec.NodeName, u[0].Name, u[0].Spec.Tolerations
			}
			if !targetUnchecked {
				if err := c.checkTarget(ctx, r, dst, v, pvc, targetUsers[pvc.Name], classes, &bad); err != nil {
					return nil, err
				}
			}
			plan.volumes = append(plan.volumes, v)
		}
	}
	if err := bad.err(); err != nil {
		return nil, err
	}
	return plan, nil
}

// selectClaims lists the claims of ns to copy: those named (each must exist), else every claim
// of the namespace; narrowed by the selector. Sorted by name.
func (c *CopyVolumes) selectClaims(ctx context.Context, src *cluster, ns string, bad *problems) ([]*corev1.PersistentVolumeClaim, error) {
	found, err := namespaceExists(ctx, src, ns)
	if err != nil {
		return nil, err
	}
	if !found {
		bad.add("namespace %s on %s not found", ns, src)
		return nil, nil
	}
	list, err := src.cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{LabelSelector: c.selector.String()})
	if err != nil {
		return nil, fmt.Errorf("listing the claims of namespace %s on %s: %w", ns, src, kube.Classify(err))
	}
	byName := map[string]*corev1.PersistentVolumeClaim{}
	for i := range list.Items {
		byName[list.Items[i].Name] = &list.Items[i]
	}
	var out []*corev1.PersistentVolumeClaim
	if len(c.Claims) == 0 {
		for _, pvc := range byName {
			out = append(out, pvc)
		}
	} else {
		for _, want := range c.Claims {
			wantNS, name, qualified := strings.Cut(want, "/")
			if !qualified {
				name = wantNS
			} else if wantNS != ns {
				continue
			}
			if pvc, ok := byName[name]; ok {
				out = append(out, pvc)
				continue
			}
			if c.Selector != "" {
				bad.add("claim %s/%s on %s not found among the claims that match selector %q", ns, name, src, c.Selector)
			} else {
				bad.add("claim %s/%s on %s not found", ns, name, src)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// checkTarget checks the target claim of v: an existing one must be usable (not Lost, unused
// by any pod but the step's own movers); a missing one must be creatable.
func (c *CopyVolumes) checkTarget(ctx context.Context, r *runner, dst *cluster, v *volume, src *corev1.PersistentVolumeClaim,
	users []corev1.Pod, classes map[string]bool, bad *problems) error {
	what := v.targetNamespace + "/" + v.targetClaim
	existing, err := dst.cs.CoreV1().PersistentVolumeClaims(v.targetNamespace).Get(ctx, v.targetClaim, metav1.GetOptions{})
	switch {
	case err == nil:
		v.target = existing
		if existing.Status.Phase == corev1.ClaimLost {
			bad.add("claim %s on %s is Lost (its volume is gone)", what, dst)
			return nil
		}
		if len(users) > 0 {
			bad.add("claim %s on %s is in use by pod %s (%s): the mover writes only into a claim the app does not use yet (scale the app down on the target first)",
				what, dst, users[0].Name, users[0].Status.Phase)
			return nil
		}
		if size := claimSize(existing); size.Cmp(v.size) < 0 {
			r.rc.Warn(fmt.Sprintf("claim %s on %s (%s) is smaller than claim %s (%s): the copy may not fit", what, dst, size.String(), v.key, v.size.String()))
		}
		return nil
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("claim %s on %s: %w", what, dst, kube.Classify(err))
	}
	if !c.createClaims() {
		bad.add("claim %s on %s not found, and createClaims is false", what, dst)
		return nil
	}
	v.create = true
	v.target = c.newClaim(r, v, src)
	if sc := v.target.Spec.StorageClassName; sc != nil && *sc != "" {
		found, ok := classes[*sc]
		if !ok {
			_, err := dst.cs.StorageV1().StorageClasses().Get(ctx, *sc, metav1.GetOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("storage class %s on %s: %w", *sc, dst, kube.Classify(err))
			}
			found = err == nil
			classes[*sc] = found
		}
		if !found {
			how := "map it to one of the target's with storageClassMapping"
			if mapped, ok := c.StorageClassMapping[derefString(src.Spec.StorageClassName)]; ok && mapped == *sc {
				how = "storageClassMapping maps " + derefString(src.Spec.StorageClassName) + " to it"
			}
			bad.add("storage class %s of claim %s not found on %s (%s)", *sc, v.key, dst, how)
			return nil
		}
	}
	// The server checks the rest (quota, admission, a valid spec) and stores nothing.
	_, err = dst.cs.CoreV1().PersistentVolumeClaims(v.targetNamespace).Create(ctx, v.target,
		metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: kube.FieldManager})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		bad.add("claim %s on %s cannot be created: %s", what, dst, kube.Reason(err))
	}
	return nil
}

// newClaim is the target claim made from the source's spec: size, access modes, volume mode,
// labels and storage class (mapped); not its volumeName, selector, dataSource or binding
// annotations, which name things of the source cluster.
func (c *CopyVolumes) newClaim(r *runner, v *volume, src *corev1.PersistentVolumeClaim) *corev1.PersistentVolumeClaim {
	class := src.Spec.StorageClassName
	if class != nil && *class != "" {
		if mapped, ok := c.StorageClassMapping[*class]; ok {
			class = &mapped
		}
	}
	var labels map[string]string
	if len(src.Labels) > 0 {
		labels = make(map[string]string, len(src.Labels))
		for k, val := range src.Labels {
			labels[k] = val
		}
	}
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Name: v.targetClaim, Namespace: v.targetNamespace, Labels: labels,
			Annotations: map[string]string{
				runAnnotation:        r.runID,
				stepAnnotation:       r.stepID,
				copiedFromAnnotation: c.From + "/" + v.key,
			},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      src.Spec.AccessModes,
			VolumeMode:       src.Spec.VolumeMode,
			StorageClassName: class,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: v.size}},
		},
	}
}

// claimSize is the larger of a claim's request and the capacity of its volume: a claim bound
// to a volume larger than it asked for may hold more than its request.
func claimSize(pvc *corev1.PersistentVolumeClaim) resource.Quantity {
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if capacity, ok := pvc.Status.Capacity[corev1.ResourceStorage]; ok && capacity.Cmp(size) > 0 {
		size = capacity
	}
	return size.DeepCopy()
}

func phaseOf(pvc *corev1.PersistentVolumeClaim) string {
	if pvc.Status.Phase == "" {
		return "Pending"
	}
	return string(pvc.Status.Phase)
}

func hasMode(pvc *corev1.PersistentVolumeClaim, mode corev1.PersistentVolumeAccessMode) bool {
	for _, m := range pvc.Spec.AccessModes {
		if m == mode {
			return true
		}
	}
	return false
}

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func namespaceExists(ctx context.Context, cl *cluster, ns string) (bool, error) {
	_, err := cl.cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("namespace %s on %s: %w", ns, cl, kube.Classify(err))
	}
	return true, nil
}

// claimUsers maps each claim of ns to the pods that mount it and have not finished, those
// running on a node first; this step's own mover pods (label stepHash) are not users.
func claimUsers(ctx context.Context, cl *cluster, ns, hash string) (map[string][]corev1.Pod, error) {
	users := map[string][]corev1.Pod{}
	opts := metav1.ListOptions{Limit: 500}
	for {
		list, err := cl.cs.CoreV1().Pods(ns).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("listing the pods of namespace %s on %s: %w", ns, cl, kube.Classify(err))
		}
		for _, pod := range list.Items {
			if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || pod.Labels[stepLabel] == hash {
				continue
			}
			for _, vol := range pod.Spec.Volumes {
				if vol.PersistentVolumeClaim != nil {
					users[vol.PersistentVolumeClaim.ClaimName] = append(users[vol.PersistentVolumeClaim.ClaimName], pod)
				}
			}
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	for _, pods := range users {
		sort.SliceStable(pods, func(i, j int) bool {
			return pods[i].Spec.NodeName != "" && pods[j].Spec.NodeName == "" ||
				pods[i].Status.Phase == corev1.PodRunning && pods[j].Status.Phase != corev1.PodRunning
		})
	}
	return users, nil
}

// checkServiceAccount checks that the mover pods' service account exists in ns.
func (r *runner) checkServiceAccount(ctx context.Context, cl *cluster, ns string, bad *problems) error {
	if r.m.ServiceAccount == "" {
		return nil
	}
	_, err := cl.cs.CoreV1().ServiceAccounts(ns).Get(ctx, r.m.ServiceAccount, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		bad.add("service account %s/%s on %s not found (serviceAccount)", ns, r.m.ServiceAccount, cl)
		return nil
	}
	if err != nil {
		return fmt.Errorf("service account %s/%s on %s: %w", ns, r.m.ServiceAccount, cl, kube.Classify(err))
	}
	return nil
}

// readSecrets reads the repository's credentials (credentialsFrom) and password (passwordFrom)
// for the mover Secrets. Their values go into those Secrets and nowhere else.
func (r *runner) readSecrets(ctx context.Context) error {
	if from := r.m.CredentialsFrom; !from.IsZero() {
		data, err := readSecret(ctx, r.rc, from.Cluster, from.Namespace, from.Name)
		if err != nil {
			return fmt.Errorf("credentialsFrom: %w", err)
		}
		if _, clash := data[passwordKey]; clash {
			return fmt.Errorf("credentialsFrom: %s has a key %s, which the mover's password takes", from, passwordKey)
		}
		if len(data) == 0 {
			return fmt.Errorf("credentialsFrom: %s has no keys", from)
		}
		r.credData = data
		for k := range data {
			r.credKeys = append(r.credKeys, k)
		}
		sort.Strings(r.credKeys)
	}
	if p := r.m.PasswordFrom; p != nil {
		data, err := readSecret(ctx, r.rc, p.Cluster, p.Namespace, p.Name)
		if err != nil {
			return fmt.Errorf("passwordFrom: %w", err)
		}
		pw, ok := data[p.Key]
		if !ok || len(pw) == 0 {
			keys := make([]string, 0, len(data))
			for k := range data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			return fmt.Errorf("passwordFrom: %s: no such key, or empty (keys: %s)", p, strings.Join(keys, ", "))
		}
		r.password = pw
	}
	return nil
}

func readSecret(ctx context.Context, rc *engine.RunContext, clusterName, ns, name string) (map[string][]byte, error) {
	cl, err := connect(rc, clusterName)
	if err != nil {
		return nil, err
	}
	s, err := cl.cs.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("Secret %s/%s on %s not found", ns, name, cl)
	}
	if err != nil {
		return nil, fmt.Errorf("Secret %s/%s on %s: %s", ns, name, cl, kube.Reason(kube.Classify(err)))
	}
	return s.Data, nil
}

// checkMover checks what every mover pod needs from outside the clusters: the Secrets it copies
// (credentials, password) and the repository.
func (r *runner) checkMover(ctx context.Context) error {
	if err := r.readSecrets(ctx); err != nil {
		return err
	}
	return r.checkRepository(ctx)
}

// startRun readies a step that will start mover pods: its checkpoint, which holds for one copy
// (the repository, the source cluster's uid and what the step does: stage, final, verify), and
// the folder its movers' logs are kept in.
func (r *runner) startRun(ctx context.Context, cl *cluster, what string) error {
	uid, err := cl.uid(ctx)
	if err != nil {
		return err
	}
	if r.state, err = loadState(r.rc, storage.Redact(r.m.Repository)+" "+uid+" "+what); err != nil {
		return err
	}
	r.logDir, err = r.rc.ArtifactDir()
	return err
}

// errStopWalk ends the listing of the repository at its first entry.
var errStopWalk = errors.New("enough")

// checkRepository lists the repository's first entry: a missing bucket, refused credentials or
// an unreachable endpoint fails the step before any mover pod starts. An empty or absent prefix
// is fine: the first backup creates the repository there.
func (r *runner) checkRepository(ctx context.Context) error {
	loc, err := storage.OpenFor(ctx, r.rc, r.m.Repository, r.m.CredentialsFrom)
	if err != nil {
		return fmt.Errorf("repository: %w", err)
	}
	err = loc.Walk(ctx, "", func(storage.Entry) error { return errStopWalk })
	if err != nil && !errors.Is(err, errStopWalk) && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("repository: %w", err)
	}
	return nil
}
