package controlplane

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"

	"planrun.dev/planrun/internal/images"
)

// Images every node has, built locally (internal/images) and imported at node start: nothing can
// be pulled on these machines, so the sandbox image too is ours.
const (
	PauseImage   = images.PauseImage
	BusyboxImage = images.BusyboxImage
)

// nodeName is the name every local node registers with. kubelet refuses a loopback node IP, so
// the API server reaches the kubelet (logs, exec) through the node's Hostname address, which must
// resolve to loopback on any machine: that is "localhost". Each cluster has one node, so the
// name never clashes inside a cluster.
const nodeName = "localhost"

// nodePaths are the files and folders of one node, all under its folder.
type nodePaths struct {
	dir    string
	logDir string // outside dir: see ControlPlane.logDir
}

func (p nodePaths) containerdConfig() string { return filepath.Join(p.dir, "containerd.toml") }
func (p nodePaths) containerdRoot() string   { return filepath.Join(p.dir, "containerd", "root") }
func (p nodePaths) containerdState() string  { return filepath.Join(p.dir, "containerd", "state") }
func (p nodePaths) socket() string           { return filepath.Join(p.dir, "containerd.sock") }
func (p nodePaths) cniConfDir() string       { return filepath.Join(p.dir, "net.d") }
func (p nodePaths) kubeletConfig() string    { return filepath.Join(p.dir, "kubelet.json") }
func (p nodePaths) kubeletRoot() string      { return filepath.Join(p.dir, "kubelet") }
func (p nodePaths) kubeconfig() string       { return filepath.Join(p.dir, "kubelet.kubeconfig") }
func (p nodePaths) log(name string) string   { return filepath.Join(p.logDir, name+".log") }

// cniBinDir is where Debian's containernetworking-plugins puts the plugins.
const cniBinDir = "/usr/lib/cni"

// writeContainerdConfig writes a containerd configuration whose every path is the node's own, so
// that several nodes run side by side without sharing state.
func writeContainerdConfig(p nodePaths) error {
	q := strconv.Quote
	cfg := `version = 2
root = ` + q(p.containerdRoot()) + `
state = ` + q(p.containerdState()) + `
# Snapshotters that need kernel features or tools this machine lacks only add errors to the log.
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = ` + q(p.socket()) + `

[plugins."io.containerd.internal.v1.opt"]
  path = ` + q(filepath.Join(p.dir, "containerd", "opt")) + `

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = ` + q(PauseImage) + `
  # A random port on loopback: the default 10010 would clash between nodes.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Network namespaces are mounted below the node's state folder rather than /var/run/netns, so
  # that sweeping the folder removes them.
  netns_mounts_under_state_dir = true
  # Sandboxed machines (CI, these VMs) refuse a negative oom_score_adj even to root; the kubelet
  # asks for -998 for pod sandboxes, so scores are clamped to containerd's own instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # The kubelet uses the cgroupfs driver: nodes must not depend on a systemd.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ` + q(cniBinDir) + `
    conf_dir = ` + q(p.cniConfDir()) + `
`
	return os.WriteFile(p.containerdConfig(), []byte(cfg), 0o600)
}

// writeCNIConfig writes the node's pod network: a bridge of its own with addresses from its pod
// CIDR. There is no gateway and no masquerading: pods reach each other on the bridge and nothing
// else, so no pod traffic leaves the machine and no host sysctl or iptables rule is changed.
func writeCNIConfig(p nodePaths, slot *nodeSlot) error {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       slot.network(),
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      slot.bridgeName(),
			"isGateway":   false,
			"ipMasq":      false,
			"hairpinMode": false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": slot.podCIDR()}}},
				"dataDir": filepath.Join(p.dir, "cni", "ipam"),
			},
		}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(p.cniConfDir(), 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(p.cniConfDir(), "10-planrun.conflist"), b, 0o600)
}

// kubeletPorts are the kubelet's listening ports, free ones picked at start.
type kubeletPorts struct {
	server, healthz int
}

// writeKubeletConfig writes the KubeletConfiguration (JSON is YAML) of a node on this kind of
// machine: cgroup v1 allowed, no swap check, everything kept under the node's folder, and no
// image garbage collection (the images were imported, not pulled, and cannot come back).
func writeKubeletConfig(p nodePaths, cgroupRoot, clientCAFile string, ports kubeletPorts) error {
	cfg := map[string]any{
		"apiVersion":         "kubelet.config.k8s.io/v1beta1",
		"kind":               "KubeletConfiguration",
		"address":            "127.0.0.1",
		"port":               ports.server,
		"readOnlyPort":       0,
		"healthzBindAddress": "127.0.0.1",
		"healthzPort":        ports.healthz,
		// The API server authenticates with a client certificate of the node's own CA; what it
		// may do is asked of the API server (SubjectAccessReview).
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": true},
			"x509":      map[string]any{"clientCAFile": clientCAFile},
		},
		"authorization":            map[string]any{"mode": "Webhook"},
		"containerRuntimeEndpoint": "unix://" + p.socket(),
		"cgroupDriver":             "cgroupfs",
		// Pods' cgroups go below the test's own cgroup, one folder per node: two kubelets
		// sharing /kubepods would each remove the other's pods as orphans.
		"cgroupRoot": cgroupRoot,
		// kubelet >= 1.35 refuses cgroup v1 unless told; these machines are cgroup v1 (hybrid).
		"failCgroupV1":                false,
		"failSwapOn":                  false,
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		// The disk is shared with everything else on the machine: evict only when truly full.
		"evictionHard": map[string]string{
			"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%",
		},
		"volumePluginDir":           filepath.Join(p.kubeletRoot(), "volume-plugins"),
		"podLogsDir":                filepath.Join(p.dir, "pod-logs"),
		"hairpinMode":               "none",
		"resolvConf":                "/etc/resolv.conf",
		"nodeStatusUpdateFrequency": "4s",
		"syncFrequency":             "10s",
		"shutdownGracePeriod":       "0s",
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(p.kubeletConfig(), b, 0o600)
}
