package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// ConfigMapStore keeps fleet records in a cluster namespace, next to the fleet's runs, one
// ConfigMap per fleet (planrun-fleet-NAME): the plan, the targets with their params and run
// names. A record that would not fit a ConfigMap (1 MiB) is refused when the fleet is created,
// with its size; targets' errors are cut to 1 KiB so that it does not grow past it later. Updates
// are guarded by the resourceVersion read, and retried on a conflict.
type ConfigMapStore struct {
	Client    kubernetes.Interface
	Namespace string
}

var _ Store = (*ConfigMapStore)(nil)

const (
	recordKey = "fleet.json"
	// maxRecordBytes leaves a ConfigMap's metadata room under its 1 MiB.
	maxRecordBytes = 900 << 10
	fleetLabel     = "planrun.dev/fleet"
	managedByLabel = "app.kubernetes.io/managed-by"
)

func configMapName(name string) string { return "planrun-fleet-" + name }

func (s *ConfigMapStore) maps() interface {
	Get(context.Context, string, metav1.GetOptions) (*corev1.ConfigMap, error)
	Create(context.Context, *corev1.ConfigMap, metav1.CreateOptions) (*corev1.ConfigMap, error)
	Update(context.Context, *corev1.ConfigMap, metav1.UpdateOptions) (*corev1.ConfigMap, error)
	List(context.Context, metav1.ListOptions) (*corev1.ConfigMapList, error)
} {
	return s.Client.CoreV1().ConfigMaps(s.Namespace)
}

// Create implements Store.
func (s *ConfigMapStore) Create(ctx context.Context, r *Record) error {
	if err := checkName(r.Name); err != nil {
		return err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if len(data) > maxRecordBytes/2 {
		// Half: the targets' run ids, states and errors are still to come.
		return fmt.Errorf("fleet %s: its record is %d KiB before it ran, too large for a ConfigMap (at most %d KiB): fewer targets, or smaller params", r.Name, len(data)>>10, maxRecordBytes>>11)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: configMapName(r.Name), Namespace: s.Namespace,
		Labels: map[string]string{fleetLabel: r.Name, managedByLabel: "planrun"}}, Data: map[string]string{recordKey: string(data)}}
	_, err = s.maps().Create(ctx, cm, metav1.CreateOptions{FieldManager: "planrun"})
	if apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("%w: %s", ErrExists, r.Name)
	}
	if err != nil {
		return fmt.Errorf("creating fleet %s in namespace %s: %w", r.Name, s.Namespace, err)
	}
	return nil
}

func (s *ConfigMapStore) get(ctx context.Context, name string) (*corev1.ConfigMap, *Record, error) {
	if err := checkName(name); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	cm, err := s.maps().Get(ctx, configMapName(name), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, fmt.Errorf("%w: %s (no ConfigMap %s in namespace %s)", ErrNotFound, name, configMapName(name), s.Namespace)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading fleet %s in namespace %s: %w", name, s.Namespace, err)
	}
	r, err := decodeRecord([]byte(cm.Data[recordKey]), "ConfigMap "+s.Namespace+"/"+cm.Name)
	return cm, r, err
}

// Load implements Store.
func (s *ConfigMapStore) Load(ctx context.Context, name string) (*Record, error) {
	_, r, err := s.get(ctx, name)
	return r, err
}

// Update implements Store.
func (s *ConfigMapStore) Update(ctx context.Context, name string, change func(*Record) error) (*Record, error) {
	var out *Record
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		cm, r, err := s.get(ctx, name)
		if err != nil {
			return err
		}
		if err := change(r); err != nil {
			return err
		}
		data, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if len(data) > maxRecordBytes {
			return fmt.Errorf("fleet %s: its record grew to %d KiB, more than a ConfigMap holds", name, len(data)>>10)
		}
		cm.Data[recordKey] = string(data)
		if _, err := s.maps().Update(ctx, cm, metav1.UpdateOptions{FieldManager: "planrun"}); err != nil {
			return err
		}
		out = r
		return nil
	})
	if err != nil && !apierrors.IsConflict(err) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("updating fleet %s: %w", name, err)
	}
	return out, nil
}

// List implements Store.
func (s *ConfigMapStore) List(ctx context.Context) ([]*Record, error) {
	list, err := s.maps().List(ctx, metav1.ListOptions{LabelSelector: fleetLabel})
	if err != nil {
		return nil, fmt.Errorf("listing fleets in namespace %s: %w", s.Namespace, err)
	}
	var out []*Record
	for _, cm := range list.Items {
		r, err := decodeRecord([]byte(cm.Data[recordKey]), "ConfigMap "+s.Namespace+"/"+cm.Name)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}
