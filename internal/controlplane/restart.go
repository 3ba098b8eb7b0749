package controlplane

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Restart stops kube-apiserver and starts it again on the etcd at etcdURL, keeping its address,
// its serving certificate, its service-account keys and the CA of its client certificates: Config
// and Kubeconfig keep working, as they do for a Kamaji tenant whose control plane is moved to
// another datastore behind the same endpoint and certificates. flags are extra kube-apiserver
// flags ("--name=value"), for example the client TLS files of the new etcd (--etcd-cafile,
// --etcd-certfile, --etcd-keyfile); they replace flags of the same name given before, and every
// other flag (--etcd-prefix...) stays. An etcd started for this control plane keeps running
// until Stop, holding its data.
func (cp *ControlPlane) Restart(ctx context.Context, etcdURL string, flags ...string) error {
	if cp.apiServer == nil {
		return errors.New("restarting kube-apiserver: the control plane was not started")
	}
	u, err := parseEtcdURL(etcdURL)
	if err != nil {
		return err
	}
	if err := applyFlags(cp.apiServer.Configure(), flags); err != nil {
		return err
	}
	// envtest keeps, in the same APIServer value, the port it picked and the CA that signs the
	// client certificates; the serving certificate and the service-account keys stay in CertDir,
	// which envtest only fills when it is empty.
	if err := cp.apiServer.Stop(); err != nil {
		return fmt.Errorf("stopping kube-apiserver: %w", err)
	}
	cp.apiServer.EtcdURL = u
	cp.EtcdURL = etcdURL
	if err := cp.apiServer.Start(); err != nil {
		return fmt.Errorf("restarting kube-apiserver at %s on etcd %s: %w", cp.Config.Host, etcdURL, err)
	}
	if err := waitForObjects(ctx, cp.Config, schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, "", "default", "kube-system"); err != nil {
		return fmt.Errorf("kube-apiserver at %s on etcd %s: %w", cp.Config.Host, etcdURL, err)
	}
	return nil
}
