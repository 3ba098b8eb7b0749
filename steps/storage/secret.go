package storage

import (
	"context"
	"fmt"

	"planrun.dev/planrun/engine"
	"planrun.dev/planrun/steps/kube"
)

// CredentialsFrom names the Secret that holds a location's credentials, in a step's config
// (credentialsFrom: {cluster: garden, namespace: garden, name: backup-seed-a}).
type CredentialsFrom struct {
	Cluster   string `yaml:"cluster" plan:"cluster" doc:"Plan cluster the Secret is on; may be left out when the plan has at most one."`
	Namespace string `yaml:"namespace" doc:"Namespace of the Secret."`
	Name      string `yaml:"name" doc:"Name of the Secret (an empty credentialsFrom, {}, means the provider's default chain, so that a plan can choose in an expression). S3 reads accessKeyID/secretAccessKey (Gardener), aws_access_key_id/aws_secret_access_key or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, aws-access-key-id/aws-secret-access-key (CAM), or an AWS credentials file under cloud (Velero); GCS a service account JSON key under serviceaccount.json, service_account.json, credentials.json or cloud; Azure storageAccount/storageKey, AZURE_STORAGE_ACCOUNT/AZURE_STORAGE_KEY, a connection string, or those as KEY=value lines under cloud."`
}

// IsZero reports whether no Secret is named: nil or {} (the provider's default chain).
func (c *CredentialsFrom) IsZero() bool { return c == nil || *c == CredentialsFrom{} }

// Check is for a step's Validate: nil and {} are fine; otherwise both namespace and name.
func (c *CredentialsFrom) Check() error {
	if c.IsZero() || c.Name != "" && c.Namespace != "" {
		return nil
	}
	return fmt.Errorf("give both namespace and name of the Secret (got namespace %q, name %q), or {} for the provider's default credentials", c.Namespace, c.Name)
}

// Access is the API access reading the Secret takes, for the kube.AccessNeeder of a step that
// names one: get on secrets, on the Secret's cluster; nothing for nil or {}.
func (c *CredentialsFrom) Access() []kube.Rule {
	if c.IsZero() {
		return nil
	}
	return kube.OnCluster(c.Cluster, kube.ResourceRule("secrets", "get"))
}

func (c *CredentialsFrom) String() string {
	s := "Secret " + c.Namespace + "/" + c.Name
	if c.Cluster != "" {
		s += " on cluster " + c.Cluster
	}
	return s
}

// Resolve reads the Secret, on the step's cluster. Its values are decoded into Credentials and
// go nowhere else.
func (c *CredentialsFrom) Resolve(ctx context.Context, rc *engine.RunContext) (*Credentials, error) {
	if c.IsZero() {
		return nil, nil
	}
	if err := c.Check(); err != nil {
		return nil, fmt.Errorf("credentialsFrom: %w", err)
	}
	cl, err := kube.ClusterRef{Cluster: c.Cluster}.Client(rc)
	if err != nil {
		return nil, fmt.Errorf("credentialsFrom: %w", err)
	}
	creds, err := c.ResolveWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("credentialsFrom: %w", err)
	}
	return creds, nil
}

// OpenFor opens a step's location: credentials from the Secret credentialsFrom names when it
// is set, the provider's default chain otherwise. Locations are shared by the steps of a run
// (one client per URL and Secret), and closed when the run ends.
func OpenFor(ctx context.Context, rc *engine.RunContext, raw string, from *CredentialsFrom) (Location, error) {
	key := "storage/" + raw
	if !from.IsZero() {
		key += "\x00" + from.String()
	}
	v, err := rc.Shared(key, func() (any, error) {
		creds, err := from.Resolve(ctx, rc)
		if err != nil {
			return nil, err
		}
		return Open(ctx, raw, creds)
	})
	if err != nil {
		return nil, err
	}
	return v.(Location), nil
}
