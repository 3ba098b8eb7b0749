package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"planrun.dev/planrun/internal/images"
	"planrun.dev/planrun/internal/testcerts"
)

// configureForControllers sets the kube-apiserver flags a complete cluster needs, unless
// Options.APIServerFlags set them already.
func (cp *ControlPlane) configureForControllers(apiServer *envtest.APIServer, node bool) error {
	args := apiServer.Configure()
	setDefault := func(name string, values ...string) {
		const unset = "\x00unset"
		if got := args.Get(name).Get([]string{unset}); len(got) == 1 && got[0] == unset {
			args.Set(name, values...)
		}
	}
	// envtest turns the ServiceAccount admission plugin off because nothing would create the
	// default service accounts; kube-controller-manager does, and pods need their tokens.
	setDefault("disable-admission-plugins", "")
	if !node {
		return nil
	}
	// The API server fetches logs and runs exec through the kubelet, which accepts client
	// certificates of a CA of the control plane's own.
	dir := filepath.Join(cp.dir, "kubelet-client")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := testcerts.NewAuthority("planrun-kubelet-client-ca")
	if err != nil {
		return fmt.Errorf("making the kubelet client CA: %w", err)
	}
	cert, key, err := ca.Sign("kube-apiserver-kubelet-client", []string{"system:masters"}, false)
	if err != nil {
		return fmt.Errorf("making the kubelet client certificate: %w", err)
	}
	for name, b := range map[string][]byte{"ca.crt": ca.PEM, "client.crt": cert, "client.key": key} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	setDefault("kubelet-client-certificate", filepath.Join(dir, "client.crt"))
	setDefault("kubelet-client-key", filepath.Join(dir, "client.key"))
	// See nodeName: the node's Hostname address is "localhost".
	setDefault("kubelet-preferred-address-types", "Hostname")
	return nil
}

// startComplete starts the controllers and scheduler, then the node if asked, on a control plane
// whose API server answers.
func (cp *ControlPlane) startComplete(ctx context.Context, opts Options) error {
	// Logs live apart from the cluster's folder: a cluster that fails to start is removed, and
	// its logs are what the error points at (see ControlPlane.Stop).
	var err error
	if cp.logDir, err = os.MkdirTemp("", "planrun-cluster-logs-"); err != nil {
		return fmt.Errorf("creating the log folder: %w", err)
	}
	caFile := filepath.Join(cp.dir, "apiserver", "serving-ca.crt")
	if err := os.WriteFile(caFile, cp.Config.CAData, 0o600); err != nil {
		return err
	}
	cfg := controllersConfig{
		binaryDir: opts.BinaryDir,
		dir:       cp.dir,
		logDir:    cp.logDir,
		apiServer: cp.apiServer,
		caFile:    caFile,
		output:    opts.Output,
	}
	if opts.Node {
		slot, err := acquireSlot()
		if err != nil {
			return err
		}
		cp.slot = slot
		cfg.clusterCIDR = slot.podCIDR()
	}
	if cp.controllers, err = startControllers(ctx, cfg); err != nil {
		return err
	}
	if opts.Node {
		built, err := images.Build(ctx, images.Pause, images.Busybox)
		if err != nil {
			return fmt.Errorf("building the node's images: %w", err)
		}
		slot := cp.slot
		cp.slot = nil // the node owns it from here, and frees it when it stops or fails
		cp.node, err = startNode(ctx, slot, nodeConfig{
			binaryDir:    opts.BinaryDir,
			apiServer:    cp.apiServer,
			admin:        cp.Config,
			clientCAFile: filepath.Join(cp.dir, "kubelet-client", "ca.crt"),
			images:       append([]string{built[images.Pause], built[images.Busybox]}, opts.NodeImages...),
			logDir:       cp.logDir,
			output:       opts.Output,
		})
		if err != nil {
			return err
		}
		if opts.LocalVolumes > 0 {
			size, _ := localVolumeSize(opts) // checked by Start
			if cp.LocalVolumes, err = createLocalVolumes(ctx, cp.Config, cp.node.paths, opts.LocalVolumes, size); err != nil {
				return err
			}
		}
	}
	// Pods cannot be created in a namespace before its default service account exists.
	return waitForObjects(ctx, cp.Config, schema.GroupVersionResource{Version: "v1", Resource: "serviceaccounts"}, "default", "default")
}
