package incluster

import (
	"fmt"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"planrun.dev/planrun/clusterstore"
)

// Options say how the runner runs.
type Options struct {
	// Image is the planrun image the runner runs.
	Image string
	// PullPolicy of the image (default IfNotPresent).
	PullPolicy corev1.PullPolicy
	// ClusterSecrets maps plan clusters the runner reaches through a kubeconfig to the Secret
	// in the state namespace holding it (key "kubeconfig"). Every other cluster of the plan is
	// the runner's own, reached as its ServiceAccount.
	ClusterSecrets map[string]string
	// HostNetwork runs the runner on its node's network, for API servers and stores that only
	// the nodes reach. The runner then reaches its own cluster's API server at APIServer.
	HostNetwork bool
	// APIServer is the URL the runner reaches its own cluster's API server at instead of the
	// kubernetes Service ("" keeps the Service): for clusters without a service proxy, with
	// HostNetwork.
	APIServer string
	// ServiceAccount, when set, is an existing ServiceAccount of the state namespace the runner
	// runs as, with the access an admin gave it (planrun rbac prints what it needs): no RBAC is
	// made for the run then.
	ServiceAccount string
	// NoRollback leaves a failed run as it is, as apply --no-rollback.
	NoRollback bool
	// Retries is how many runner pods may fail (killed, evicted, lock lost) before the Job gives
	// up (default 6). A run that failed, or a bad argument, fails the Job at once.
	Retries int32
	// LockWait is how long a runner pod waits for the lock of a runner that died to expire
	// (default: twice the lease).
	LockWait time.Duration
	// Verbose is the runner's -v count.
	Verbose int
	// Artifacts is where the runner uploads its steps' files (--artifacts), "" for nowhere;
	// ArtifactsSecret the Secret of the state namespace holding its keys ("" for the provider's
	// own chain: a workload identity).
	Artifacts, ArtifactsSecret string
}

// Exit codes of `planrun runner` that end the Job at once: a run that failed (and rolled back
// unless NoRollback), or a failure another pod would meet too (a missing permission); a bad
// argument or plan; a failed rollback. Any other end (interrupted, lock lost, the API server
// unavailable: 75, killed) is retried by the Job's next pod.
var finalExitCodes = []int32{1, 2, 4}

const (
	containerName = "planrun"
	// clustersDir holds one folder per cluster Secret, with its kubeconfig.
	clustersDir = "/var/run/planrun/clusters"
	// cacheDir is the runner's XDG_CACHE_HOME: step artifacts (logs) while it runs.
	cacheDir = "/var/cache/planrun"
)

// runnerArgs are the arguments of `planrun runner` for a run.
func runnerArgs(runID, ns, state string, clusters []string, opts Options) []string {
	args := []string{"runner", runID, "--state", state}
	for _, c := range clusters {
		kubeconfig := "" // the pod's ServiceAccount
		if i := slices.Index(secretClusters(opts), c); i >= 0 {
			kubeconfig = path.Join(clustersDir, strconv.Itoa(i), "kubeconfig")
		}
		args = append(args, "--cluster-kubeconfig", c+"="+kubeconfig)
	}
	if opts.LockWait > 0 {
		args = append(args, "--lock-wait", opts.LockWait.String())
	}
	if opts.NoRollback {
		args = append(args, "--no-rollback")
	}
	if opts.Artifacts != "" {
		args = append(args, "--artifacts", opts.Artifacts)
	}
	if opts.ArtifactsSecret != "" {
		args = append(args, "--artifacts-credentials-from", ns+"/"+opts.ArtifactsSecret)
	}
	if opts.Verbose > 0 {
		args = append(args, "-"+strings.Repeat("v", opts.Verbose))
	}
	return args
}

// secretClusters are the clusters reached through Secrets, sorted.
func secretClusters(opts Options) []string {
	out := make([]string, 0, len(opts.ClusterSecrets))
	for c := range opts.ClusterSecrets {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// apiServerEnv points the pod's in-cluster configuration at server instead of the kubernetes
// Service: client-go reads KUBERNETES_SERVICE_HOST and _PORT, and the variables a pod spec sets
// win over those the kubelet adds.
func apiServerEnv(server string) ([]corev1.EnvVar, error) {
	if server == "" {
		return nil, nil
	}
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" || strings.Trim(u.Path, "/") != "" {
		// The in-cluster configuration has a host and a port, no path (a proxy's prefix).
		return nil, fmt.Errorf("API server %q: want https://HOST[:PORT]", server)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return []corev1.EnvVar{{Name: "KUBERNETES_SERVICE_HOST", Value: u.Hostname()}, {Name: "KUBERNETES_SERVICE_PORT", Value: port}}, nil
}

// newJob is the runner Job of a run.
func newJob(name, ns, runID, state string, clusters []string, owner metav1.OwnerReference, opts Options) (*batchv1.Job, error) {
	env := []corev1.EnvVar{{Name: "XDG_CACHE_HOME", Value: cacheDir}, {Name: "TMPDIR", Value: "/tmp"}}
	serverEnv, err := apiServerEnv(opts.APIServer)
	if err != nil {
		return nil, err
	}
	env = append(env, serverEnv...)
	mounts := []corev1.VolumeMount{{Name: "tmp", MountPath: "/tmp"}, {Name: "cache", MountPath: cacheDir}}
	volumes := []corev1.Volume{
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "cache", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
	}
	for i, c := range secretClusters(opts) {
		// Folders and volumes by number: plan cluster names need not be file or volume names.
		vol := fmt.Sprintf("cluster-%d", i)
		mounts = append(mounts, corev1.VolumeMount{Name: vol, MountPath: path.Join(clustersDir, strconv.Itoa(i)), ReadOnly: true})
		volumes = append(volumes, corev1.Volume{Name: vol, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: opts.ClusterSecrets[c], Items: []corev1.KeyToPath{{Key: "kubeconfig", Path: "kubeconfig"}}}}})
	}
	pull := opts.PullPolicy
	if pull == "" {
		pull = corev1.PullIfNotPresent
	}
	retries := opts.Retries
	if retries == 0 {
		retries = 6
	}
	dns := corev1.DNSClusterFirst
	if opts.HostNetwork {
		dns = corev1.DNSClusterFirstWithHostNet
	}
	labels := map[string]string{managedByLabel: "planrun", runLabel: clusterstore.LabelValue(runID)}
	serviceAccount := name
	if opts.ServiceAccount != "" {
		serviceAccount = opts.ServiceAccount
	}
	return &batchv1.Job{
		TypeMeta:   metav1.TypeMeta{APIVersion: batchv1.SchemeGroupVersion.String(), Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, OwnerReferences: []metav1.OwnerReference{owner}},
		Spec: batchv1.JobSpec{
			BackoffLimit: &retries,
			// The next runner starts once the last one is gone: two pods of one run at a time
			// would only wait on each other's Lease.
			PodReplacementPolicy: ptr.To(batchv1.Failed),
			PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
				// A pod evicted, preempted or lost with its node is not the run's fault, whatever
				// it exited with (rules apply in order).
				{Action: batchv1.PodFailurePolicyActionIgnore, OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{
					{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}}},
				{Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
					ContainerName: ptr.To(containerName), Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: finalExitCodes}},
			}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: serviceAccount,
					RestartPolicy:      corev1.RestartPolicyNever,
					HostNetwork:        opts.HostNetwork,
					DNSPolicy:          dns,
					// SIGTERM makes the runner stop at a safe point and checkpoint.
					TerminationGracePeriodSeconds: ptr.To(int64(60)),
					SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To(int64(65532)),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}},
					Containers: []corev1.Container{{
						Name: containerName, Image: opts.Image, ImagePullPolicy: pull,
						Args: runnerArgs(runID, ns, state, clusters, opts), Env: env, VolumeMounts: mounts,
						// The runner's last words (its one-line error) are the pod's message.
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
							Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}},
					}},
					Volumes: volumes,
				},
			},
		},
	}, nil
}
