package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// LocalStorageClass is the StorageClass of a node's local volumes (Options.LocalVolumes).
const LocalStorageClass = "local"

// LocalVolume is a PersistentVolume of type local that Options.LocalVolumes created: a folder
// of the node, which a test can read and write from outside the cluster.
type LocalVolume struct {
	// Name is the PersistentVolume's name: local-0, local-1, ...
	Name string
	// Path is the folder on this machine: what a pod using the volume sees at its mount point.
	Path string
}

// localVolumesDir is where a node's local volumes live, under its folder: removed with the node
// (cleanupNode), by root as the node runs, whatever the pods wrote into them and as whom.
func (p nodePaths) localVolumesDir() string { return filepath.Join(p.dir, "local-volumes") }

// createLocalVolumes gives a cluster what one without a dynamic provisioner has: a StorageClass
// "local" (kubernetes.io/no-provisioner, WaitForFirstConsumer) and n PersistentVolumes of type
// local, each a folder of its own under the node's folder, with a node affinity to the node. The
// scheduler's volume binding then binds a claim of the class when its first pod is scheduled,
// and the kubelet bind-mounts the folder into the pod.
func createLocalVolumes(ctx context.Context, cfg *rest.Config, paths nodePaths, n int, size resource.Quantity) ([]LocalVolume, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	wait := storagev1.VolumeBindingWaitForFirstConsumer
	class := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: LocalStorageClass},
		Provisioner:       "kubernetes.io/no-provisioner",
		VolumeBindingMode: &wait,
	}
	if _, err := cs.StorageV1().StorageClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating StorageClass %s: %w", LocalStorageClass, err)
	}
	var out []LocalVolume
	for i := range n {
		v := LocalVolume{Name: fmt.Sprintf("local-%d", i), Path: filepath.Join(paths.localVolumesDir(), fmt.Sprintf("local-%d", i))}
		// Owned by root, 0755: as an administrator prepares a local volume's folder.
		if err := os.MkdirAll(v.Path, 0o755); err != nil {
			return nil, fmt.Errorf("creating local volume folder: %w", err)
		}
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: v.Name},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:    corev1.ResourceList{corev1.ResourceStorage: size},
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				// Nothing can delete a local volume's data: a released volume keeps it, as
				// without sig-storage-local-static-provisioner.
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				StorageClassName:              LocalStorageClass,
				VolumeMode:                    ptrTo(corev1.PersistentVolumeFilesystem),
				PersistentVolumeSource:        corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: v.Path}},
				NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
					MatchExpressions: []corev1.NodeSelectorRequirement{{
						Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{nodeName},
					}},
				}}}},
			},
		}
		if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("creating PersistentVolume %s: %w", v.Name, err)
		}
		out = append(out, v)
	}
	return out, nil
}

// localVolumeSize is Options.LocalVolumeSize parsed (1Gi when empty).
func localVolumeSize(opts Options) (resource.Quantity, error) {
	if opts.LocalVolumes < 0 {
		return resource.Quantity{}, fmt.Errorf("local volumes: %d is not a number of volumes", opts.LocalVolumes)
	}
	if opts.LocalVolumeSize == "" {
		return resource.MustParse("1Gi"), nil
	}
	q, err := resource.ParseQuantity(opts.LocalVolumeSize)
	if err != nil || q.Sign() <= 0 {
		return resource.Quantity{}, fmt.Errorf("local volume size %q: want a positive quantity such as 1Gi", opts.LocalVolumeSize)
	}
	return q, nil
}

func ptrTo[T any](v T) *T { return &v }
