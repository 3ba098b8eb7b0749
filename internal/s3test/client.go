package s3test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// requestTimeout bounds the requests the helpers make themselves (CreateBucket).
const requestTimeout = 30 * time.Second

// Client returns an S3 client for the server, signed with its root keys, for tests that look at
// or prepare objects directly. Without arguments it is made once and shared; with optFns (wrong
// keys, no retries, another checksum setting) it is a new client.
//
// Derive clients this way, never as s3.New(srv.Client().Options(), ...): that copy shares the
// SDK's request signer, whose cache of signing keys is keyed on the access key id and not the
// secret, so a client with a wrong secret signs with the right one (its requests succeed), and
// then poisons the cache for the original client.
func (s *Server) Client(optFns ...func(*s3.Options)) *s3.Client {
	if len(optFns) > 0 {
		return s.newClient(optFns...)
	}
	s.clientOnce.Do(func() { s.client = s.newClient() })
	return s.client
}

// newClient returns a new client of the server, with its own signer, and optFns applied.
func (s *Server) newClient(optFns ...func(*s3.Options)) *s3.Client {
	return s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint),
		Region:       s.Region,
		// Path-style (http://127.0.0.1:PORT/BUCKET/KEY): virtual-hosted style would need a DNS
		// name per bucket.
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		HTTPClient:   s.http,
		// What config.LoadDefaultConfig (and so gocloud.dev's s3blob) sets; a bare s3.Options
		// leaves them unset, which sends no checksum at all with PutObject and UploadPart.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenSupported,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenSupported,
	}, optFns...)
}

// newHTTPClient returns the HTTP client that every client of the server shares (one pool of
// connections): the SDK's default, trusting the server's CA with Options.TLS.
func (s *Server) newHTTPClient() *awshttp.BuildableClient {
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		if s.tlsConfig != nil {
			tr.TLSClientConfig = s.tlsConfig.Clone()
		}
	})
}

// CreateBucket creates a bucket through the S3 API.
func (s *Server) CreateBucket(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	if _, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return fmt.Errorf("creating bucket %q on %s: %w", name, s.Endpoint, err)
	}
	return nil
}

// URL returns the s3:// URL of prefix in bucket on this server, in the form gocloud.dev/blob's
// s3blob opens: s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:PORT&region=us-east-1&use_path_style=true
// (s3://BUCKET?... for an empty prefix). It carries no credentials: see Env.
func (s *Server) URL(bucket, prefix string) string {
	u := url.URL{
		Scheme: "s3",
		Host:   bucket,
		// Written out rather than url.Values.Encode, which would escape the endpoint's ":" and
		// "/" and make the URL harder to read in a test's output; none needs escaping here.
		RawQuery: "endpoint=" + s.Endpoint + "&region=" + s.Region + "&use_path_style=true",
	}
	if prefix != "" {
		u.Path = "/" + prefix
	}
	return u.String()
}

// Env returns the environment variables through which the AWS SDK's default configuration
// finds this server's keys and region, and with Options.TLS its CA (for t.Setenv, or a child
// process's environment).
func (s *Server) Env() []string {
	env := []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
	}
	if s.CAFile != "" {
		env = append(env, "AWS_CA_BUNDLE="+s.CAFile)
	}
	return env
}
