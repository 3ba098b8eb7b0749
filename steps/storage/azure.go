package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"gocloud.dev/blob"
	"gocloud.dev/blob/azureblob"
)

func init() {
	Register(Provider{
		Scheme: "azblob",
		Doc:    "azblob://container/prefix — Azure Blob Storage. Options: storage_account, domain (blob.core.windows.net by default; 127.0.0.1:10000 for Azurite), protocol (https or http), localemu, cdn.",
		Open:   openAzure,
	})
}

// Where operators' Secrets keep an Azure storage account's credentials: Gardener's backup
// Secrets, the SDK's environment names (also as KEY=value lines under Velero's "cloud" key).
var (
	azureAccountNames = []string{"storageAccount", "AZURE_STORAGE_ACCOUNT", "accountName"}
	azureKeyNames     = []string{"storageKey", "AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_ACCESS_KEY", "accountKey"}
	azureConnNames    = []string{"connectionString", "AZURE_STORAGE_CONNECTION_STRING"}
)

func openAzure(ctx context.Context, u *url.URL, prefix string, creds *Credentials) (Location, error) {
	display := Redact(u.String())
	svcOpts := azureblob.NewDefaultServiceURLOptions()
	q := u.Query()
	account, key, conn := "", "", ""
	if creds != nil {
		account, _ = creds.first(azureAccountNames...)
		key, _ = creds.first(azureKeyNames...)
		conn, _ = creds.first(azureConnNames...)
		if file, ok := creds.raw("cloud"); ok && key == "" && conn == "" {
			kv := envFile(file, "")
			account = firstOf(account, kv["AZURE_STORAGE_ACCOUNT"], kv["AZURE_STORAGE_ACCOUNT_ID"])
			key = firstOf(kv["AZURE_STORAGE_KEY"], kv["AZURE_STORAGE_ACCOUNT_ACCESS_KEY"])
			conn = kv["AZURE_STORAGE_CONNECTION_STRING"]
		}
		if key == "" && conn == "" {
			return nil, fmt.Errorf("%s: %w", display, creds.missing("Azure storage account key (storageAccount and storageKey) or connection string"))
		}
		if account != "" {
			svcOpts.AccountName = account
		}
	}
	for k, v := range q {
		switch k {
		case "domain":
			svcOpts.StorageDomain = v[0]
		case "protocol":
			svcOpts.Protocol = v[0]
		case "storage_account":
			svcOpts.AccountName = v[0]
		case "localemu":
			svcOpts.IsLocalEmulator = v[0] == "true"
		case "cdn":
			svcOpts.IsCDN = v[0] == "true"
		default:
			return nil, fmt.Errorf("%s: unknown option %q (azblob:// takes storage_account, domain, protocol, localemu, cdn)", display, k)
		}
	}
	containerName := u.Host
	var client *container.Client
	var err error
	service := "azblob|" + svcOpts.StorageDomain + "|" + svcOpts.AccountName
	switch {
	case conn != "":
		client, err = container.NewClientFromConnectionString(conn, containerName, nil)
	default:
		if svcOpts.AccountName == "" {
			return nil, fmt.Errorf("%s: no storage account: add ?storage_account=… or set AZURE_STORAGE_ACCOUNT", display)
		}
		svcURL, uerr := azureblob.NewServiceURL(svcOpts)
		if uerr != nil {
			return nil, fmt.Errorf("%s: %v", display, uerr)
		}
		containerURL, uerr := url.JoinPath(string(svcURL), containerName)
		if uerr != nil {
			return nil, fmt.Errorf("%s: %v", display, uerr)
		}
		if key != "" {
			cred, kerr := azblob.NewSharedKeyCredential(svcOpts.AccountName, key)
			if kerr != nil {
				return nil, fmt.Errorf("%s: %s: the storage key is not valid base64", display, creds.Source())
			}
			client, err = container.NewClientWithSharedKeyCredential(containerURL, cred, nil)
		} else {
			client, err = azureblob.NewDefaultClient(svcURL, azureblob.ContainerName(containerName))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %v", display, err)
	}
	if creds != nil {
		service += "|" + creds.Source()
	}
	b, err := azureblob.OpenBucket(ctx, client, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", display, err)
	}
	return &bucketLocation{
		display:  display,
		bucket:   containerName,
		prefix:   prefix,
		b:        b,
		service:  service,
		partSize: defaultPartSize,
		hooks:    providerHooks{detail: azureDetail},
	}, nil
}

func firstOf(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func azureDetail(_ *blob.Bucket, err error) (error, string) {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		reason := fmt.Sprintf("%s (HTTP %d)", re.ErrorCode, re.StatusCode)
		switch {
		case bloberror.HasCode(err, bloberror.ContainerNotFound):
			return ErrNoBucket, reason
		case bloberror.HasCode(err, bloberror.AuthenticationFailed, bloberror.AuthorizationFailure, bloberror.InsufficientAccountPermissions):
			return ErrAccessDenied, reason + " (check the credentials)"
		case re.StatusCode == 404:
			return nil, ""
		}
		return nil, reason
	}
	var ae *azidentity.AuthenticationFailedError
	if errors.As(err, &ae) {
		return ErrAccessDenied, "no Azure credentials found: give credentialsFrom, or set AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY or a workload identity"
	}
	return nil, ""
}
