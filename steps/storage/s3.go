package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	gcaws "gocloud.dev/aws"
	"gocloud.dev/blob"
	"gocloud.dev/blob/s3blob"
)

func init() {
	Register(Provider{
		Scheme: "s3",
		Doc: "s3://bucket/prefix — Amazon S3 or an S3-compatible server. Options: region, endpoint (an S3-compatible server's URL; " +
			"path-style addressing is then the default), use_path_style, profile, ssetype, kmskeyid, accelerate, fips, dualstack, " +
			"request_checksum_calculation / response_checksum_validation (when_required for servers without the newer checksums), part_size (MiB).",
		Open: openS3,
	})
}

// s3MaxCopy is the largest object one CopyObject request copies.
const s3MaxCopy = 5 << 30

// s3SecretKeys are the names operators' Secrets use, first match wins: Gardener's backup
// Secrets, the AWS CLI's file keys, the SDK's environment, CAM's MigStorage Secrets.
var (
	s3AccessKeyNames = []string{"accessKeyID", "aws_access_key_id", "AWS_ACCESS_KEY_ID", "aws-access-key-id", "accessKey"}
	s3SecretKeyNames = []string{"secretAccessKey", "aws_secret_access_key", "AWS_SECRET_ACCESS_KEY", "aws-secret-access-key", "secretKey"}
	s3TokenNames     = []string{"sessionToken", "aws_session_token", "AWS_SESSION_TOKEN"}
)

// s3Credentials finds static credentials in a Secret; a "cloud" key holding an AWS credentials
// file (Velero's format) is read with the profile asked for.
func s3Credentials(c *Credentials, profile string) (aws.CredentialsProvider, error) {
	id, okID := c.first(s3AccessKeyNames...)
	secret, okSecret := c.first(s3SecretKeyNames...)
	token, _ := c.first(s3TokenNames...)
	if !okID || !okSecret {
		if file, ok := c.raw("cloud", "credentials"); ok {
			kv := envFile(file, profile)
			id, secret, token = kv["aws_access_key_id"], kv["aws_secret_access_key"], kv["aws_session_token"]
			okID, okSecret = id != "", secret != ""
		}
	}
	if !okID || !okSecret {
		return nil, c.missing("S3 access key and secret key (accessKeyID and secretAccessKey, or aws_access_key_id and aws_secret_access_key)")
	}
	return aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(id, secret, token)), nil
}

func openS3(ctx context.Context, u *url.URL, prefix string, creds *Credentials) (Location, error) {
	display := Redact(u.String())
	q := u.Query()
	partSize := defaultPartSize
	if v := q.Get("part_size"); v != "" {
		mib, err := strconv.Atoi(v)
		if err != nil || mib < 5 || mib > 5120 {
			return nil, fmt.Errorf("%s: part_size: want MiB between 5 and 5120 (S3's limits), got %q", display, v)
		}
		partSize = mib << 20
		q.Del("part_size")
	}
	endpoint := q.Get("endpoint")
	if endpoint != "" {
		eu, err := url.Parse(endpoint)
		if err != nil || eu.Host == "" || (eu.Scheme != "http" && eu.Scheme != "https") {
			return nil, fmt.Errorf("%s: endpoint: want http(s)://host[:port], got %q", display, endpoint)
		}
		// S3-compatible servers mostly want path-style addressing (no bucket DNS names).
		if q.Get("use_path_style") == "" && q.Get("s3ForcePathStyle") == "" {
			q.Set("use_path_style", "true")
		}
		if q.Get("region") == "" && os.Getenv("AWS_REGION") == "" && os.Getenv("AWS_DEFAULT_REGION") == "" {
			q.Set("region", "us-east-1")
		}
	}
	pathStyle := false
	for _, k := range []string{"use_path_style", "s3ForcePathStyle"} {
		if v := q.Get(k); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: want true or false, got %q", display, k, v)
			}
			pathStyle = b
			q.Del(k)
		}
	}
	var s3opts s3blob.Options
	if v := q.Get("ssetype"); v != "" {
		s3opts.EncryptionType = types.ServerSideEncryption(v)
		q.Del("ssetype")
	}
	if v := q.Get("kmskeyid"); v != "" {
		s3opts.KMSEncryptionID = v
		q.Del("kmskeyid")
	}
	accelerate := false
	if v := q.Get("accelerate"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%s: accelerate: want true or false, got %q", display, v)
		}
		accelerate = b
		q.Del("accelerate")
	}
	cfg, err := gcaws.V2ConfigFromURLParams(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", display, err)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("%s: no region: add ?region=… to the URL or set AWS_REGION", display)
	}
	service := "s3|" + endpoint + "|" + cfg.Region + "|" + q.Get("profile")
	if creds != nil {
		p, err := s3Credentials(creds, q.Get("profile"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", display, err)
		}
		cfg.Credentials = p
		service += "|" + creds.Source()
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = pathStyle
		o.UseAccelerate = accelerate
		// An object uploaded in parts has no whole-object checksum to validate; the SDK
		// would log that on every read. planrun checks the sha256 itself.
		o.DisableLogOutputChecksumValidationSkipped = true
	})
	s3opts.RequestChecksumCalculation = cfg.RequestChecksumCalculation
	b, err := s3blob.OpenBucket(ctx, client, u.Host, &s3opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", display, err)
	}
	bucketName := u.Host
	return &bucketLocation{
		display:  display,
		bucket:   bucketName,
		prefix:   prefix,
		b:        b,
		service:  service,
		partSize: partSize,
		hooks: providerHooks{
			readerSHA256: func(r *blob.Reader) string {
				var out s3.GetObjectOutput
				if r.As(&out) {
					return out.Metadata[metaSHA256]
				}
				return ""
			},
			copyAcross: func(ctx context.Context, srcBucket, srcKey, dstKey string) error {
				in := &s3.CopyObjectInput{
					Bucket:     aws.String(bucketName),
					Key:        aws.String(dstKey),
					CopySource: aws.String(url.QueryEscape(srcBucket + "/" + srcKey)),
				}
				if s3opts.EncryptionType != "" {
					in.ServerSideEncryption = s3opts.EncryptionType
				}
				if s3opts.KMSEncryptionID != "" {
					in.SSEKMSKeyId = aws.String(s3opts.KMSEncryptionID)
				}
				_, err := client.CopyObject(ctx, in)
				return err
			},
			putObject: func(ctx context.Context, key string, body []byte, metadata map[string]string) error {
				in := &s3.PutObjectInput{
					Bucket:        aws.String(bucketName),
					Key:           aws.String(key),
					Body:          bytes.NewReader(body),
					ContentLength: aws.Int64(int64(len(body))),
					ContentType:   aws.String("application/octet-stream"),
					Metadata:      metadata,
				}
				if s3opts.EncryptionType != "" {
					in.ServerSideEncryption = s3opts.EncryptionType
				}
				if s3opts.KMSEncryptionID != "" {
					in.SSEKMSKeyId = aws.String(s3opts.KMSEncryptionID)
				}
				_, err := client.PutObject(ctx, in)
				return err
			},
			maxServerCopy: s3MaxCopy,
			detail:        s3Detail,
		},
	}, nil
}

// s3Detail classifies an S3 error by its code, and says in one line what the operator can do.
func s3Detail(_ *blob.Bucket, err error) (error, string) {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		reason := ae.ErrorCode()
		if m := ae.ErrorMessage(); m != "" {
			reason += ": " + m
		}
		switch ae.ErrorCode() {
		case "NoSuchBucket":
			return ErrNoBucket, reason
		case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "Forbidden",
			"XAdminUserNotFound": // versitygw's InvalidAccessKeyId
			return ErrAccessDenied, reason + " (check the credentials)"
		case "NoSuchKey", "NotFound":
			return nil, ""
		}
		return nil, reason
	}
	var ne *net.OpError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return ErrUnreachable, dnsErr.Error()
	case errors.As(err, &ne):
		return ErrUnreachable, ne.Error()
	}
	// The signer fails when no credentials can be found (none in the environment, no profile,
	// no workload identity).
	var se *v4.SigningError
	if errors.As(err, &se) {
		return ErrAccessDenied, "no credentials found: give credentialsFrom, or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a workload identity"
	}
	return nil, ""
}
