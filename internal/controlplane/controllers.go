package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"planrun.dev/planrun/internal/childproc"
)

// controllers are kube-controller-manager and kube-scheduler: what turns stored objects into
// behaviour (garbage collection, namespace deletion, Jobs, ReplicaSets, Deployments, service
// account tokens, scheduling). They run only when Options.Controllers or Options.Node asks.
type controllers struct {
	manager   *childproc.Process
	scheduler *childproc.Process
}

// controllersConfig is what the components need from the control plane they serve.
type controllersConfig struct {
	binaryDir   string
	dir         string // the control plane's folder: kubeconfigs go below it
	logDir      string // where the components' logs go
	apiServer   *envtest.APIServer
	caFile      string // the API server's serving CA, published as kube-root-ca.crt
	clusterCIDR string // pod addresses, "" when there is no node
	output      io.Writer
}

// startControllers starts both components and waits until each reports healthy. On error the
// ones already started are stopped.
func startControllers(ctx context.Context, cfg controllersConfig) (*controllers, error) {
	c := &controllers{}
	// Both components take the same flags for reaching the API server and serving /healthz.
	common := func(kubeconfig string, port int) []string {
		return []string{
			"--kubeconfig=" + kubeconfig,
			"--authentication-kubeconfig=" + kubeconfig,
			"--authorization-kubeconfig=" + kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			// One instance: waiting for a lease would only add seconds to every start.
			"--leader-elect=false",
		}
	}
	managerArgs := []string{
		// Service account tokens of pods are signed by the API server's key; the token
		// controller and the root CA publisher need the same key and CA.
		"--service-account-private-key-file=" + filepath.Join(cfg.apiServer.CertDir, "sa-signer.key"),
		"--root-ca-file=" + cfg.caFile,
		"--service-cluster-ip-range=10.0.0.0/24", // envtest's default for kube-apiserver
	}
	if cfg.clusterCIDR != "" {
		// The node's pod CIDR is the one its CNI configuration hands out, so that
		// node.spec.podCIDR tells the truth.
		managerArgs = append(managerArgs, "--allocate-node-cidrs=true", "--cluster-cidr="+cfg.clusterCIDR, "--node-cidr-mask-size=24")
	}
	components := []struct {
		name, user string
		proc       **childproc.Process
		args       []string
	}{
		{"kube-controller-manager", "system:kube-controller-manager", &c.manager, managerArgs},
		{"kube-scheduler", "system:kube-scheduler", &c.scheduler, nil},
	}

	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, comp := range components {
		kubeconfig := filepath.Join(cfg.dir, comp.name, "kubeconfig")
		// Both act for the whole cluster; system:masters spares keeping their RBAC roles in
		// step with every controller that a new Kubernetes version adds.
		if err := writeUserKubeconfig(cfg.apiServer, kubeconfig, comp.user, "system:masters"); err != nil {
			return nil, errors.Join(err, c.stop())
		}
		port, err := freePort()
		if err != nil {
			return nil, errors.Join(err, c.stop())
		}
		p, err := childproc.Start(comp.name, filepath.Join(cfg.binaryDir, comp.name), append(common(kubeconfig, port), comp.args...),
			nil, filepath.Join(cfg.logDir, comp.name+".log"), cfg.output)
		if err != nil {
			return nil, errors.Join(err, c.stop())
		}
		*comp.proc = p
		wg.Go(func() {
			if err := waitHealthy(ctx, p, fmt.Sprintf("https://127.0.0.1:%d/healthz", port)); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, errors.Join(err, c.stop())
	}
	return c, nil
}

// stop stops the components that were started.
func (c *controllers) stop() error {
	var errs []error
	for _, p := range []*childproc.Process{c.scheduler, c.manager} {
		if p != nil {
			errs = append(errs, p.Stop(stopTimeout))
		}
	}
	return errors.Join(errs...)
}

// writeUserKubeconfig provisions a client certificate for user in groups on apiServer and writes
// a kubeconfig for it at path.
func writeUserKubeconfig(apiServer *envtest.APIServer, path, user string, groups ...string) error {
	u, err := (&envtest.ControlPlane{APIServer: apiServer}).AddUser(envtest.User{Name: user, Groups: groups}, &rest.Config{})
	if err != nil {
		return fmt.Errorf("provisioning user %s: %w", user, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return writeKubeconfig(path, "local", u.Config())
}
