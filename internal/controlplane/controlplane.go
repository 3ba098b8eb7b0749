// Package controlplane runs real Kubernetes clusters on loopback for tests and local demos:
// kube-apiserver on etcd (through controller-runtime's envtest), and on request the controllers
// and scheduler (Options.Controllers) and a node that runs pods (Options.Node: kubelet, containerd,
// runc, CNI). Without them objects are stored and served exactly as a real API server does,
// nothing more.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"planrun.dev/planrun/internal/childproc"
)

// ControlPlane is a running kube-apiserver with its etcd.
type ControlPlane struct {
	// Config connects as an admin (group system:masters, which bypasses authorization). Copy it
	// with rest.CopyConfig before changing it.
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file with the same credentials, whose current
	// context is ContextName.
	Kubeconfig string
	// ContextName is the name of the kubeconfig's cluster, user and context.
	ContextName string
	// EtcdURL is the client URL of the etcd the API server stores its data in.
	EtcdURL string
	// LocalVolumes are the node's local PersistentVolumes (Options.LocalVolumes), in order.
	LocalVolumes []LocalVolume

	apiServer   *envtest.APIServer
	etcd        *Etcd        // nil when Options.EtcdURL named an external etcd
	controllers *controllers // nil unless Options.Controllers or Options.Node
	slot        *nodeSlot    // held from before the controllers start until the node owns it
	node        *node        // nil unless Options.Node
	logDir      string       // logs of the controllers and the node; kept if the start failed
	startFailed bool
	dir         string // holds certificates, etcd data and the default kubeconfig
	stopOnce    sync.Once
	stopErr     error
}

// Start starts etcd (unless opts.EtcdURL names one) and kube-apiserver, provisions an admin
// user, waits until the default namespaces exist and writes a kubeconfig. ctx bounds finding
// the binaries and the wait; each process start is bounded by its own timeout. On error,
// everything already started is stopped.
func Start(ctx context.Context, opts Options) (*ControlPlane, error) {
	if opts.ContextName == "" {
		opts.ContextName = DefaultContextName
	}
	if opts.LocalVolumes > 0 {
		opts.Node = true
	}
	if opts.Node {
		opts.Controllers = true
	}
	// Mistakes in the options are reported before any process starts.
	out := &childproc.Tail{}
	apiServer := &envtest.APIServer{
		StartTimeout: startTimeout,
		StopTimeout:  stopTimeout,
		Out:          processOutput(out, opts.Output),
		Err:          processOutput(out, opts.Output),
	}
	if err := applyFlags(apiServer.Configure(), opts.APIServerFlags); err != nil {
		return nil, err
	}
	if opts.EtcdURL != "" {
		if _, err := parseEtcdURL(opts.EtcdURL); err != nil {
			return nil, err
		}
	}
	if _, err := localVolumeSize(opts); err != nil {
		return nil, err
	}
	binaries := defaultBinaries
	if opts.Controllers {
		binaries = completeBinaries
	}
	if opts.BinaryDir == "" {
		var err error
		if opts.BinaryDir, err = findBinaries(ctx, binaries...); err != nil {
			return nil, err
		}
	} else if err := checkBinaries(opts.BinaryDir, binaries); err != nil {
		return nil, err
	}
	if opts.Node {
		if err := checkNodePrerequisites(opts.BinaryDir); err != nil {
			return nil, err
		}
	}

	dir, err := os.MkdirTemp("", "planrun-controlplane-")
	if err != nil {
		return nil, fmt.Errorf("creating a folder for the control plane: %w", err)
	}
	cp := &ControlPlane{dir: dir, ContextName: opts.ContextName}
	if err := cp.start(ctx, opts, apiServer, out); err != nil {
		cp.startFailed = true
		if stopErr := cp.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up after the failed start: %w", stopErr))
		}
		return nil, err
	}
	return cp, nil
}

// start runs the processes of a control plane whose options Start has checked; apiServer is
// configured but for its paths and etcd, and out collects its output.
func (cp *ControlPlane) start(ctx context.Context, opts Options, apiServer *envtest.APIServer, out *childproc.Tail) error {
	if opts.EtcdURL == "" {
		etcd, err := startEtcd(opts.BinaryDir, filepath.Join(cp.dir, "etcd"), opts.Output)
		if err != nil {
			return err
		}
		cp.etcd = etcd
		cp.EtcdURL = etcd.URL
	} else {
		cp.EtcdURL = opts.EtcdURL
	}
	etcdURL, err := parseEtcdURL(cp.EtcdURL)
	if err != nil {
		return err
	}

	certDir := filepath.Join(cp.dir, "apiserver")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return fmt.Errorf("creating kube-apiserver folder: %w", err)
	}
	apiServer.Path = filepath.Join(opts.BinaryDir, "kube-apiserver")
	apiServer.CertDir = certDir
	apiServer.EtcdURL = etcdURL
	cp.apiServer = apiServer
	if opts.Controllers {
		if err := cp.configureForControllers(apiServer, opts.Node); err != nil {
			return err
		}
	}
	if err := apiServer.Start(); err != nil {
		return childproc.WithTail(fmt.Errorf("starting kube-apiserver %s on etcd %s: %w", apiServer.Path, cp.EtcdURL, err),
			"kube-apiserver", out)
	}

	// envtest.ControlPlane is used only as the handle that signs client certificates for the
	// API server started above; its Start would insist on running its own etcd. The group
	// system:masters makes the user a cluster admin, so that the dynamic client can do anything.
	admin := envtest.User{Name: "planrun-admin", Groups: []string{"system:masters"}}
	user, err := (&envtest.ControlPlane{APIServer: apiServer}).AddUser(admin, &rest.Config{
		// Tests hammer their private API server; client-side throttling would only slow them.
		QPS:   1000,
		Burst: 2000,
	})
	if err != nil {
		return fmt.Errorf("provisioning admin user on kube-apiserver: %w", err)
	}
	cp.Config = user.Config()
	cp.Config.Host = strings.TrimSuffix(cp.Config.Host, "/")

	if err := waitForObjects(ctx, cp.Config, schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, "", "default", "kube-system"); err != nil {
		return childproc.WithTail(fmt.Errorf("kube-apiserver at %s: %w", cp.Config.Host, err), "kube-apiserver", out)
	}

	cp.Kubeconfig = opts.KubeconfigPath
	if cp.Kubeconfig == "" {
		cp.Kubeconfig = filepath.Join(cp.dir, "kubeconfig")
	}
	if err := writeKubeconfig(cp.Kubeconfig, cp.ContextName, cp.Config); err != nil {
		return err
	}
	if opts.Controllers {
		return cp.startComplete(ctx, opts)
	}
	return nil
}

// parseEtcdURL accepts the client URL of a plain etcd; TLS client flags, if needed, go in
// Options.APIServerFlags.
func parseEtcdURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("etcd URL %q: want http://host:port or https://host:port", raw)
	}
	return u, nil
}

// Stop stops the node and the controllers if any, kube-apiserver, then the etcd started for it
// (an external etcd keeps running), and removes the control plane's temporary folder. It is safe
// to call more than once.
func (cp *ControlPlane) Stop() error {
	cp.stopOnce.Do(func() {
		var errs []error
		// The node first, while the API server still answers its kubelet; then the controllers,
		// which would otherwise log every missing piece as it goes.
		if cp.node != nil {
			errs = append(errs, cp.node.stop())
		} else if cp.slot != nil {
			cp.slot.release()
		}
		if cp.controllers != nil {
			errs = append(errs, cp.controllers.stop())
		}
		// The API server before etcd: stopping etcd under it would only produce errors on its side.
		if cp.apiServer != nil {
			if err := cp.apiServer.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stopping kube-apiserver: %w", err))
			}
		}
		if cp.etcd != nil {
			errs = append(errs, cp.etcd.Stop())
		}
		if err := os.RemoveAll(cp.dir); err != nil {
			errs = append(errs, fmt.Errorf("removing control plane folder: %w", err))
		}
		// The logs of a failed start stay: its error names them.
		if cp.logDir != "" && !cp.startFailed {
			if err := os.RemoveAll(cp.logDir); err != nil {
				errs = append(errs, fmt.Errorf("removing the log folder: %w", err))
			}
		}
		cp.stopErr = errors.Join(errs...)
		forget(cp)
	})
	return cp.stopErr
}

// applyFlags sets extra kube-apiserver flags given as "--name=value" or "--name". Values of one
// name are collected first so that a repeated flag keeps all its values, while a flag that envtest
// also sets replaces envtest's value instead of being passed twice.
func applyFlags(args *envtest.Arguments, flags []string) error {
	values := map[string][]string{}
	var names []string
	for _, flag := range flags {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(flag, "--"), "=")
		if !strings.HasPrefix(flag, "--") || name == "" {
			return fmt.Errorf("kube-apiserver flag %q: want --name=value or --name", flag)
		}
		if !hasValue {
			args.Enable(name)
			continue
		}
		if _, seen := values[name]; !seen {
			names = append(names, name)
		}
		values[name] = append(values[name], value)
	}
	for _, name := range names {
		args.Set(name, values[name]...)
	}
	return nil
}

// waitForObjects polls until the named objects exist (namespace "" for cluster-scoped ones).
// kube-apiserver reports healthy before its bootstrap hooks have created the default namespaces,
// and a namespace takes pods only once kube-controller-manager has made its default service
// account; tests expect a cluster that looks complete.
func waitForObjects(ctx context.Context, cfg *rest.Config, gvr schema.GroupVersionResource, namespace string, names ...string) error {
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	objects := client.Resource(gvr).Namespace(namespace)
	var lastErr error
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true,
		func(ctx context.Context) (bool, error) {
			for _, name := range names {
				if _, lastErr = objects.Get(ctx, name, metav1.GetOptions{}); lastErr != nil {
					// Anything but "not found yet" (or a server still warming up) is final.
					return false, ignoreTransient(lastErr)
				}
			}
			return true, nil
		})
	if err != nil {
		return fmt.Errorf("waiting for %s %v: %w (last error: %v)", gvr.Resource, names, err, lastErr)
	}
	return nil
}

// ignoreTransient returns nil for errors that a just-started API server may return for a moment.
func ignoreTransient(err error) error {
	if apierrors.IsNotFound(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsTooManyRequests(err) ||
		apierrors.IsInternalError(err) || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err) {
		return nil
	}
	return err
}
