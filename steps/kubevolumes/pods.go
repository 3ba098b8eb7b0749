package kubevolumes

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Where a mover pod mounts what it works on, and its container's name.
const (
	dataDir        = "/data"
	workDir        = "/work"
	credentialsDir = "/credentials"
	containerName  = "mover"
)

// Labels and annotations of what the steps create (mover pods, their Secrets, target claims),
// so that a step run again finds its own objects and never adopts someone else's. Run and step
// ids need not be valid label values: the labels carry a hash, the annotations the ids.
const (
	managedByLabel  = "app.kubernetes.io/managed-by"
	componentLabel  = "app.kubernetes.io/component"
	component       = "volume-mover"
	stepLabel       = "planrun.dev/mover-step" // stepHash(run, step)
	roleLabel       = "planrun.dev/mover-role" // backup, restore, verify
	runAnnotation   = "planrun.dev/run"
	stepAnnotation  = "planrun.dev/step"
	claimAnnotation = "planrun.dev/claim" // the source claim, namespace/name
	// copiedFromAnnotation, on a target claim the step created, names the source claim:
	// "<cluster>/<namespace>/<claim>".
	copiedFromAnnotation = "planrun.dev/copied-from"
)

// stepHash identifies a step of a run in a label value.
func stepHash(runID, stepID string) string {
	sum := sha256.Sum256([]byte(runID + "\x00" + stepID))
	return hex.EncodeToString(sum[:8])
}

// objectName is the name of an object the step makes for a claim: prefix, the claim's name cut
// to fit, and a hash of the run, the step and parts (the claim's namespace and name), so that it
// is the same every time the step runs and differs between claims, steps and runs. At most 63
// characters (a DNS label, which pods, Secrets and label values all accept).
func objectName(prefix, claim, runID, stepID string, parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(append([]string{runID, stepID}, parts...), "\x00")))
	var sb strings.Builder
	for _, r := range claim {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			sb.WriteRune(r)
		} else {
			sb.WriteByte('-')
		}
	}
	name := sb.String()
	if room := 63 - len(prefix) - 9; len(name) > room {
		name = name[:room]
	}
	name = strings.Trim(name, "-")
	if name != "" {
		name += "-"
	}
	return prefix + name + hex.EncodeToString(sum[:4])
}

// moverPod is one mover pod to run: which claim, where, with which arguments.
type moverPod struct {
	role      string // mover.PhaseBackup, PhaseRestore or PhaseVerify: the mover's subcommand
	cl        *cluster
	namespace string
	claim     string // the claim mounted at /data
	readOnly  bool   // the claim is mounted read-only (backup, verify)
	name      string // of the pod
	secret    string // of its Secret ("" when it needs none)
	args      []string
	// node pins the pod to a node (that of a running pod using the claim), "" leaves it to the
	// scheduler; tolerations are those of the pod using the claim.
	node        string
	tolerations []corev1.Toleration
	key         string // the source claim, namespace/name, for the annotation
	// started: this attempt of the step made or found the pod already (a restore started with
	// its backup), so that a failed one is this attempt's failure, not one to run again.
	started bool
}

// meta is the labels and annotations of every object a mover pod needs.
func (r *runner) meta(p *moverPod, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: p.namespace,
		Labels: map[string]string{
			managedByLabel: "planrun",
			componentLabel: component,
			stepLabel:      r.hash,
			roleLabel:      p.role,
		},
		Annotations: map[string]string{
			runAnnotation:   r.runID,
			stepAnnotation:  r.stepID,
			claimAnnotation: p.key,
		},
	}
}

// ours reports whether an object was made by this step of this run.
func (r *runner) ours(m metav1.Object) bool {
	a := m.GetAnnotations()
	return a[runAnnotation] == r.runID && a[stepAnnotation] == r.stepID
}

// podObject is the pod that runs `planrun mover ROLE` on p's claim (the image's entrypoint is
// the planrun binary). It runs as root to read
// (and restore the owners and modes of) every file whatever its owner, but is not privileged:
// every capability is dropped except those file ownership needs (CHOWN, DAC_OVERRIDE, FOWNER,
// FSETID, all within the Baseline Pod Security level), no privilege escalation, a read-only
// root file system; the only writable folders are the claim (restore) and an emptyDir at /work
// for the mover's caches.
func (r *runner) podObject(p *moverPod, deadline time.Time) *corev1.Pod {
	args := append([]string{"mover", p.role, "--dir", dataDir, "--repository", r.m.Repository}, p.args...)
	args = append(args, "--workdir", workDir)
	mounts := []corev1.VolumeMount{
		{Name: "data", MountPath: dataDir, ReadOnly: p.readOnly},
		{Name: "work", MountPath: workDir},
	}
	volumes := []corev1.Volume{
		{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: p.claim, ReadOnly: p.readOnly}}},
		{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	if len(r.credKeys) > 0 {
		args = append(args, "--credentials-dir", credentialsDir)
		items := make([]corev1.KeyToPath, len(r.credKeys))
		for i, k := range r.credKeys {
			items[i] = corev1.KeyToPath{Key: k, Path: k}
		}
		mounts = append(mounts, corev1.VolumeMount{Name: "credentials", MountPath: credentialsDir, ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: "credentials", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: p.secret, Items: items, DefaultMode: ptr(int32(0o400)),
		}}})
	}
	// Kopia's configuration and caches, and any temporary file, go to /work: the root file
	// system is read-only.
	env := []corev1.EnvVar{{Name: "HOME", Value: workDir}, {Name: "TMPDIR", Value: workDir}}
	if r.password != nil {
		env = append(env, corev1.EnvVar{Name: "PLANRUN_MOVER_PASSWORD", ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: p.secret}, Key: passwordKey},
		}})
	}
	pod := &corev1.Pod{
		ObjectMeta: r.meta(p, p.name),
		Spec: corev1.PodSpec{
			RestartPolicy:      corev1.RestartPolicyNever,
			HostNetwork:        r.m.HostNetwork,
			ServiceAccountName: r.m.ServiceAccount,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser:      ptr(int64(0)),
				RunAsGroup:     ptr(int64(0)),
				RunAsNonRoot:   ptr(false),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            containerName,
				Image:           r.m.image(),
				ImagePullPolicy: corev1.PullIfNotPresent,
				Args:            args,
				Env:             env,
				VolumeMounts:    mounts,
				// The mover writes its result (or error) to the default path; a mover that
				// died before it could is told by the end of its log.
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				SecurityContext: &corev1.SecurityContext{
					Privileged:               ptr(false),
					AllowPrivilegeEscalation: ptr(false),
					ReadOnlyRootFilesystem:   ptr(true),
					Capabilities: &corev1.Capabilities{
						Drop: []corev1.Capability{"ALL"},
						Add:  []corev1.Capability{"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"},
					},
				},
			}},
			Volumes:     volumes,
			Tolerations: p.tolerations,
		},
	}
	if r.m.HostNetwork {
		pod.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
	}
	if r.m.ServiceAccount == "" {
		// The mover does not talk to the API server.
		pod.Spec.AutomountServiceAccountToken = ptr(false)
	}
	if secs := int64(time.Until(deadline).Seconds()); secs > 0 {
		// The pod stops on its own should planrun be gone for good.
		pod.Spec.ActiveDeadlineSeconds = &secs
	}
	if p.node != "" {
		// Where the claim is in use already: a ReadWriteOnce volume is attached to one node.
		pod.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{p.node}}},
			}}},
		}}
	}
	return pod
}

// secretObject is the Secret beside a mover pod: the repository's credentials (copied from
// credentialsFrom) and password; nil when there is neither.
func (r *runner) secretObject(p *moverPod) *corev1.Secret {
	if p.secret == "" {
		return nil
	}
	data := make(map[string][]byte, len(r.credData)+1)
	for k, v := range r.credData {
		data[k] = v
	}
	if r.password != nil {
		data[passwordKey] = r.password
	}
	return &corev1.Secret{ObjectMeta: r.meta(p, p.secret), Type: corev1.SecretTypeOpaque, Data: data}
}

func ptr[T any](v T) *T { return &v }
