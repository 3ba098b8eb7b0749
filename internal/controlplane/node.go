package controlplane

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"planrun.dev/planrun/internal/childproc"
)

// nodeReadyTimeout bounds the wait for the node to report Ready; kubelet reports within seconds,
// and a kubelet that exits is reported at once instead.
const nodeReadyTimeout = 2 * time.Minute

// node is a kubelet with its own containerd (and runc, CNI plugins) registered to one cluster.
type node struct {
	slot       *nodeSlot
	paths      nodePaths
	rec        slotRecord
	containerd *childproc.Process
	kubelet    *childproc.Process
}

// nodeConfig is what a node needs from its cluster.
type nodeConfig struct {
	binaryDir    string
	apiServer    *envtest.APIServer
	admin        *rest.Config
	clientCAFile string   // CA of the API server's client certificate for kubelets
	logDir       string   // where containerd's and the kubelet's logs go
	images       []string // image tarballs imported into containerd before the kubelet starts
	output       io.Writer
}

// startNode starts containerd and a kubelet on slot, imports the images and waits until the node
// is Ready. On error everything started is removed; the slot stays with the caller.
func startNode(ctx context.Context, slot *nodeSlot, cfg nodeConfig) (*node, error) {
	dir, err := os.MkdirTemp("", fmt.Sprintf("planrun-node%d-", slot.index))
	if err != nil {
		return nil, fmt.Errorf("creating the node folder: %w", err)
	}
	n := &node{slot: slot, paths: nodePaths{dir: dir, logDir: cfg.logDir}}
	if err := n.start(ctx, cfg); err != nil {
		return nil, errors.Join(err, n.stop())
	}
	return n, nil
}

func (n *node) start(ctx context.Context, cfg nodeConfig) error {
	own, err := ownCgroup()
	if err != nil {
		return err
	}
	n.rec = slotRecord{
		Dir:        n.paths.dir,
		CgroupRoot: strings.TrimSuffix(own, "/") + fmt.Sprintf("/planrun-node%d", n.slot.index),
		Bridge:     n.slot.bridgeName(),
		Socket:     n.paths.socket(),
		Network:    n.slot.network(),
	}
	// Recorded before anything exists, so that a kill at any later point is swept.
	if err := n.slot.record(n.rec); err != nil {
		return err
	}
	if err := createCgroups(n.rec.CgroupRoot); err != nil {
		return err
	}

	if err := writeContainerdConfig(n.paths); err != nil {
		return fmt.Errorf("writing containerd configuration: %w", err)
	}
	if err := writeCNIConfig(n.paths, n.slot); err != nil {
		return fmt.Errorf("writing CNI configuration: %w", err)
	}
	n.containerd, err = childproc.Start("containerd", "containerd", []string{"--config", n.paths.containerdConfig()},
		nil, n.paths.log("containerd"), cfg.output)
	if err != nil {
		return err
	}
	cri, err := dialCRI(n.paths.socket())
	if err != nil {
		return err
	}
	defer cri.close()
	if err := cri.waitReady(ctx, n.containerd); err != nil {
		return err
	}
	for _, image := range cfg.images {
		if err := n.importImage(ctx, image); err != nil {
			return err
		}
	}

	ports := kubeletPorts{}
	for _, port := range []*int{&ports.server, &ports.healthz} {
		if *port, err = freePort(); err != nil {
			return err
		}
	}
	if err := writeKubeletConfig(n.paths, n.rec.CgroupRoot, cfg.clientCAFile, ports); err != nil {
		return fmt.Errorf("writing kubelet configuration: %w", err)
	}
	// The kubelet acts for its node only, but a Node authorizer is not configured on these API
	// servers (RBAC only), so it gets system:masters beside system:nodes.
	if err := writeUserKubeconfig(cfg.apiServer, n.paths.kubeconfig(), "system:node:"+nodeName, "system:nodes", "system:masters"); err != nil {
		return err
	}
	n.kubelet, err = childproc.Start("kubelet", filepath.Join(cfg.binaryDir, "kubelet"), []string{
		"--config=" + n.paths.kubeletConfig(),
		"--kubeconfig=" + n.paths.kubeconfig(),
		"--root-dir=" + n.paths.kubeletRoot(),
		"--hostname-override=" + nodeName,
		"--v=2",
	}, nil, n.paths.log("kubelet"), cfg.output)
	if err != nil {
		return err
	}
	return n.waitReady(ctx, cfg.admin)
}

// importImage imports an image tarball into the namespace the CRI plugin reads (k8s.io).
func (n *node) importImage(ctx context.Context, tarball string) error {
	cmd := exec.CommandContext(ctx, "ctr", "--address", n.paths.socket(), "--namespace", "k8s.io", "images", "import", tarball)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("importing image %s into the node's containerd: %v: %s", tarball, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// waitReady polls the Node until its Ready condition is True, failing at once when the kubelet
// or containerd exits.
func (n *node) waitReady(ctx context.Context, admin *rest.Config) error {
	client, err := dynamic.NewForConfig(admin)
	if err != nil {
		return err
	}
	nodes := client.Resource(schema.GroupVersionResource{Version: "v1", Resource: "nodes"})
	ctx, cancel := context.WithTimeout(ctx, nodeReadyTimeout)
	defer cancel()
	last := "not registered"
	for {
		for _, p := range []*childproc.Process{n.kubelet, n.containerd} {
			if ended, _ := p.Exited(); ended {
				return p.Failed(fmt.Errorf("node %s did not become Ready", nodeName))
			}
		}
		obj, err := nodes.Get(ctx, nodeName, metav1.GetOptions{})
		if err == nil {
			ready, why := nodeReady(obj)
			if ready {
				return nil
			}
			last = why
		}
		select {
		case <-ctx.Done():
			return n.kubelet.Failed(fmt.Errorf("node %s not Ready after %s (%s)", nodeName, nodeReadyTimeout, last))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// nodeReady reads the Ready condition of a Node, with its message when it is not True.
func nodeReady(obj *unstructured.Unstructured) (bool, string) {
	conditions, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conditions {
		m, _ := c.(map[string]any)
		if m["type"] == "Ready" {
			return m["status"] == "True", fmt.Sprintf("Ready=%v: %v", m["status"], m["message"])
		}
	}
	return false, "no Ready condition yet"
}

// stop stops the kubelet, removes every pod through the CRI (so that network namespaces and
// addresses are released in order), stops containerd, sweeps whatever is left and frees the slot.
func (n *node) stop() error {
	var errs []error
	if n.kubelet != nil {
		errs = append(errs, n.kubelet.Stop(stopTimeout))
	}
	if n.containerd != nil {
		if ended, _ := n.containerd.Exited(); !ended {
			if cri, err := dialCRI(n.paths.socket()); err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				// A failure here is not final: the sweep below kills and unmounts what is left.
				_ = cri.removeAllPods(ctx)
				cancel()
				cri.close()
			}
		}
		errs = append(errs, n.containerd.Stop(stopTimeout))
	}
	rec := n.rec
	if rec == (slotRecord{}) {
		rec = slotRecord{Dir: n.paths.dir}
	}
	errs = append(errs, cleanupNode(rec))
	n.slot.release()
	return errors.Join(errs...)
}

// ownCgroup returns this process's cgroup path: the memory controller's on cgroup v1, the unified
// one on cgroup v2. Nodes put their pods below it, so that whatever limits or tracks this process
// (a CI job, a session) also covers its pods.
func ownCgroup() (string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("reading own cgroup: %w", err)
	}
	defer f.Close()
	var unified string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, controller := range strings.Split(parts[1], ",") {
			if controller == "memory" {
				return parts[2], nil
			}
		}
		if parts[0] == "0" && parts[1] == "" {
			unified = parts[2]
		}
	}
	if unified == "" {
		return "", errors.New("reading own cgroup: no memory controller and no unified hierarchy in /proc/self/cgroup")
	}
	return unified, nil
}

// createCgroups creates root in every cgroup hierarchy: the kubelet refuses a cgroup root that
// does not exist. On cgroup v1 a new cpuset is empty and cannot hold processes until it has CPUs
// and memory nodes, so those are copied down from the parent.
func createCgroups(root string) error {
	hierarchies, err := cgroupHierarchies()
	if err != nil {
		return fmt.Errorf("listing cgroups: %w", err)
	}
	for _, h := range hierarchies {
		dir := h
		for _, part := range strings.Split(strings.Trim(root, "/"), "/") {
			parent := dir
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("creating cgroup %s: %w", dir, err)
			}
			for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
				if cur, err := os.ReadFile(filepath.Join(dir, file)); err == nil && strings.TrimSpace(string(cur)) == "" {
					if v, err := os.ReadFile(filepath.Join(parent, file)); err == nil {
						if err := os.WriteFile(filepath.Join(dir, file), v, 0o644); err != nil {
							return fmt.Errorf("initialising cgroup %s: %w", filepath.Join(dir, file), err)
						}
					}
				}
			}
		}
	}
	return nil
}
