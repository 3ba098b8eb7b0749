package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"cloud.google.com/go/storage"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"

	"gocloud.dev/blob"
	"gocloud.dev/blob/gcsblob"
	"gocloud.dev/gcp"
)

func init() {
	Register(Provider{
		Scheme: "gs",
		Doc:    "gs://bucket/prefix — Google Cloud Storage. Options: endpoint (an emulator's or a private endpoint's URL).",
		Open:   openGCS,
	})
}

// gcsKeyNames are where operators' Secrets keep a service account key: Gardener, the common
// file names, Velero's cloud-credentials.
var gcsKeyNames = []string{"serviceaccount.json", "service_account.json", "credentials.json", "cloud"}

func openGCS(ctx context.Context, u *url.URL, prefix string, creds *Credentials) (Location, error) {
	display := Redact(u.String())
	q := u.Query()
	var copts []option.ClientOption
	endpoint := q.Get("endpoint")
	if endpoint != "" {
		copts = append(copts, option.WithEndpoint(endpoint))
		q.Del("endpoint")
	}
	for k := range q {
		return nil, fmt.Errorf("%s: unknown option %q (gs:// takes endpoint)", display, k)
	}
	scope := storage.ScopeReadWrite
	var ts gcp.TokenSource
	service := "gs|" + endpoint
	if creds != nil {
		key, ok := creds.raw(gcsKeyNames...)
		if !ok {
			return nil, fmt.Errorf("%s: %w", display, creds.missing("service account key (serviceaccount.json)"))
		}
		c, err := google.CredentialsFromJSON(ctx, key, scope)
		if err != nil {
			// The parser's message may quote the key: say only what is wrong.
			return nil, fmt.Errorf("%s: %s: the service account key is not valid JSON of a Google credential", display, creds.Source())
		}
		ts = c.TokenSource
		service += "|" + creds.Source()
	} else {
		c, err := google.FindDefaultCredentials(ctx, scope)
		if err != nil {
			return nil, &Error{URL: display, Op: "open", Kind: ErrAccessDenied, Detail: "no Google credentials found: give credentialsFrom, or set GOOGLE_APPLICATION_CREDENTIALS or a workload identity"}
		}
		ts = c.TokenSource
	}
	client, err := gcp.NewHTTPClient(gcp.DefaultTransport(), ts)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", display, err)
	}
	b, err := gcsblob.OpenBucket(ctx, client, u.Host, &gcsblob.Options{ClientOptions: copts})
	if err != nil {
		return nil, fmt.Errorf("%s: %v", display, err)
	}
	return &bucketLocation{
		display:  display,
		bucket:   u.Host,
		prefix:   prefix,
		b:        b,
		service:  service,
		partSize: defaultPartSize,
		hooks: providerHooks{
			detail: gcsDetail,
		},
	}, nil
}

func gcsDetail(_ *blob.Bucket, err error) (error, string) {
	if errors.Is(err, storage.ErrBucketNotExist) {
		return ErrNoBucket, "the bucket does not exist"
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		reason := fmt.Sprintf("HTTP %d: %s", ge.Code, ge.Message)
		switch ge.Code {
		case 401, 403:
			return ErrAccessDenied, reason + " (check the credentials)"
		case 404:
			return nil, ""
		}
		return nil, reason
	}
	return nil, ""
}
