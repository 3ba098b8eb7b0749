package storage

import (
	"context"
	"encoding/base64"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"planrun.dev/planrun/steps/kube"
)

var secrets = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// ResolveWith reads the Secret through cl (Resolve picks the step's cluster; the CLI's
// verify-backup passes the one --kubeconfig and --context name). Its values are decoded into
// Credentials and go nowhere else; errors name the Secret, not the field that names it.
func (c *CredentialsFrom) ResolveWith(ctx context.Context, cl *kube.Client) (*Credentials, error) {
	obj, err := cl.Dynamic.Resource(secrets).Namespace(c.Namespace).Get(ctx, c.Name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%s not found", c)
		}
		return nil, fmt.Errorf("%s: %s", c, kube.Reason(kube.Classify(err)))
	}
	data := map[string][]byte{}
	raw, _, _ := unstructured.NestedStringMap(obj.Object, "data")
	for k, v := range raw {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("%s: key %s is not base64", c, k)
		}
		data[k] = b
	}
	return NewCredentials(c.String(), data), nil
}
