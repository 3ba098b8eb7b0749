package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"planrun.dev/planrun/internal/childproc"
)

// criClient talks to a node's containerd through the Container Runtime Interface, as the kubelet
// does: to know when containerd is ready, and to remove pods in order (network namespace, CNI
// addresses, mounts) when a node stops.
type criClient struct {
	conn    *grpc.ClientConn
	runtime runtimeapi.RuntimeServiceClient
}

func dialCRI(socket string) (*criClient, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connecting to containerd at %s: %w", socket, err)
	}
	return &criClient{conn: conn, runtime: runtimeapi.NewRuntimeServiceClient(conn)}, nil
}

func (c *criClient) close() { c.conn.Close() }

// waitReady polls the CRI Version call until it answers, failing at once when containerd exits.
func (c *criClient) waitReady(ctx context.Context, containerd *childproc.Process) error {
	ctx, cancel := context.WithTimeout(ctx, componentStartTimeout)
	defer cancel()
	var last error
	for {
		if ended, _ := containerd.Exited(); ended {
			return containerd.Failed(errors.New("containerd did not start"))
		}
		callCtx, callCancel := context.WithTimeout(ctx, 2*time.Second)
		_, last = c.runtime.Version(callCtx, &runtimeapi.VersionRequest{})
		callCancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return containerd.Failed(fmt.Errorf("containerd's CRI not answering after %s: %v", componentStartTimeout, last))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// removeAllPods stops and removes every pod sandbox (and with it its containers).
func (c *criClient) removeAllPods(ctx context.Context) error {
	resp, err := c.runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("listing pods on the node: %w", err)
	}
	var errs []error
	for _, sb := range resp.Items {
		if _, err := c.runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stopping pod %s/%s: %w", sb.GetMetadata().GetNamespace(), sb.GetMetadata().GetName(), err))
			continue
		}
		if _, err := c.runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.Id}); err != nil {
			errs = append(errs, fmt.Errorf("removing pod %s/%s: %w", sb.GetMetadata().GetNamespace(), sb.GetMetadata().GetName(), err))
		}
	}
	return errors.Join(errs...)
}
