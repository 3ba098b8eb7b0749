package s3test

import (
	"bytes"
	"errors"

	"io"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// errorCode returns the S3 error code of err ("NoSuchBucket"), "" for nil, or err itself when
// the server did not answer with an S3 error.
func errorCode(err error) string {
	if err == nil {
		return ""
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.ErrorCode()
	}
	return err.Error()
}

// noRetries is a client option for requests whose failure is the point: the SDK would retry a
// refused connection three times with back-off first.
func noRetries(o *s3.Options) { o.RetryMaxAttempts = 1 }

// mustCreateBucket creates a bucket or fails the test.
func mustCreateBucket(t *testing.T, s *Server, name string) {
	t.Helper()
	if err := s.CreateBucket(name); err != nil {
		t.Fatal(err)
	}
}

// mustPut stores body at bucket/key with metadata, or fails the test.
func mustPut(t *testing.T, c *s3.Client, bucket, key string, body []byte, metadata map[string]string) {
	t.Helper()
	_, err := c.PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String(key), Body: bytes.NewReader(body), Metadata: metadata,
	})
	if err != nil {
		t.Fatalf("putting %s/%s: %v", bucket, key, err)
	}
}

// mustGet returns the content and metadata of bucket/key, or fails the test.
func mustGet(t *testing.T, c *s3.Client, bucket, key string) ([]byte, map[string]string) {
	t.Helper()
	out, err := c.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("getting %s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	body, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("reading %s/%s: %v", bucket, key, err)
	}
	return body, out.Metadata
}

// listKeys returns the keys of bucket under prefix, every page.
func listKeys(t *testing.T, c *s3.Client, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatalf("listing %s/%s: %v", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}
