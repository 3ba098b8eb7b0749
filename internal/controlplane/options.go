package controlplane

import "io"

// DefaultContextName names the cluster, user and context of the written kubeconfig when
// Options.ContextName is empty.
const DefaultContextName = "planrun-local"

// Options configures one control plane. The zero value starts kube-apiserver on its own etcd,
// with binaries from FindBinaries and a kubeconfig in a folder that Stop removes.
type Options struct {
	// BinaryDir is the folder holding kube-apiserver and etcd. Empty means FindBinaries; setting it
	// lets a caller starting many control planes resolve the binaries only once.
	BinaryDir string

	// KubeconfigPath is where the admin kubeconfig is written. Empty means a file inside the
	// control plane's own temporary folder, removed by Stop. A file at a chosen path is left in
	// place by Stop: it belongs to the caller.
	KubeconfigPath string

	// ContextName names the cluster, user and context in the kubeconfig (DefaultContextName if
	// empty), so that tests and tools can select it explicitly.
	ContextName string

	// APIServerFlags are extra kube-apiserver flags, each "--name=value" or "--name". A flag
	// replaces envtest's default of the same name; a repeated flag keeps every value.
	APIServerFlags []string

	// EtcdURL is the client URL of an etcd to use instead of starting one (for example
	// Etcd.URL from StartEtcd). Combined with "--etcd-prefix" in APIServerFlags, several API
	// servers can share one etcd, or a new API server can reopen an earlier one's data. Stop
	// leaves an external etcd running.
	EtcdURL string

	// Controllers starts kube-controller-manager and kube-scheduler, with service account tokens
	// signed by the API server's key: garbage collection, namespace deletion, Jobs, ReplicaSets,
	// Deployments and scheduling then happen as in a real cluster.
	Controllers bool

	// Node starts a node (containerd, runc and CNI plugins from Debian, kubelet from the module
	// cache) registered as "localhost" and waits until it is Ready. It implies Controllers. The
	// node has the pause and busybox images (PauseImage, BusyboxImage) and NodeImages. It needs
	// root and the packages hack/install-node-deps.sh installs.
	Node bool

	// NodeImages are image tarballs (docker-archive or OCI) imported into the node's containerd
	// before the kubelet starts, for pods to run with imagePullPolicy Never or IfNotPresent.
	NodeImages []string

	// LocalVolumes, when above 0, gives the node what a cluster without a dynamic provisioner
	// has: a StorageClass "local" (LocalStorageClass: kubernetes.io/no-provisioner,
	// WaitForFirstConsumer) and that many PersistentVolumes of type local (local-0, local-1, ...),
	// each a folder of its own under the node's folder (ControlPlane.LocalVolumes), removed with
	// the node. It implies Node.
	LocalVolumes int
	// LocalVolumeSize is the capacity of each local volume, a quantity ("1Gi"); default 1Gi. The
	// folders share the machine's disk: the capacity is what claims are matched against, not a
	// limit.
	LocalVolumeSize string

	// Output, if set, also receives the output of kube-apiserver and of an etcd started for this
	// control plane. Without it the output is dropped, except a tail kept for error messages.
	Output io.Writer
}

// Option changes Options; the test helpers take them so that a call reads as a sentence.
type Option func(*Options)

// WithKubeconfigPath sets Options.KubeconfigPath.
func WithKubeconfigPath(path string) Option {
	return func(o *Options) { o.KubeconfigPath = path }
}

// WithContextName sets Options.ContextName.
func WithContextName(name string) Option {
	return func(o *Options) { o.ContextName = name }
}

// WithAPIServerFlags appends to Options.APIServerFlags.
func WithAPIServerFlags(flags ...string) Option {
	return func(o *Options) { o.APIServerFlags = append(o.APIServerFlags, flags...) }
}

// WithEtcdURL sets Options.EtcdURL.
func WithEtcdURL(url string) Option {
	return func(o *Options) { o.EtcdURL = url }
}

// WithControllers sets Options.Controllers.
func WithControllers() Option {
	return func(o *Options) { o.Controllers = true }
}

// WithNode sets Options.Node and appends images to Options.NodeImages.
func WithNode(images ...string) Option {
	return func(o *Options) {
		o.Node = true
		o.NodeImages = append(o.NodeImages, images...)
	}
}

// WithLocalVolumes sets Options.Node, Options.LocalVolumes and Options.LocalVolumeSize.
func WithLocalVolumes(n int, size string) Option {
	return func(o *Options) {
		o.Node = true
		o.LocalVolumes, o.LocalVolumeSize = n, size
	}
}

// WithOutput sets Options.Output.
func WithOutput(w io.Writer) Option {
	return func(o *Options) { o.Output = w }
}
