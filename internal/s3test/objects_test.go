package s3test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// Objects go in and come back, over HTTP and over HTTPS (where the SDK streams with trailing
// checksums instead of reading each body twice).
func TestObjectsRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"http", false}, {"https", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := StartForTest(t, Options{TLS: tc.tls})
			c := s.Client()
			mustCreateBucket(t, s, "objects")

			t.Run("small object with metadata", func(t *testing.T) {
				meta := map[string]string{"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}
				mustPut(t, c, "objects", "small", []byte("test"), meta)
				body, got := mustGet(t, c, "objects", "small")
				if string(body) != "test" || got["sha256"] != meta["sha256"] {
					t.Errorf("got %q %v back", body, got)
				}
				head, err := c.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String("objects"), Key: aws.String("small")})
				if err != nil || head.Metadata["sha256"] != meta["sha256"] || aws.ToInt64(head.ContentLength) != 4 {
					t.Errorf("HeadObject: %v %v %v", head.Metadata, aws.ToInt64(head.ContentLength), err)
				}
			})

			// What gocloud.dev's s3blob does with a large write: the transfer manager, parts
			// from a stream that cannot be rewound.
			t.Run("multipart upload", func(t *testing.T) {
				data := make([]byte, 12<<20+1)
				rand.NewChaCha8([32]byte{1}).Read(data)
				tm := transfermanager.New(c, func(o *transfermanager.Options) {
					o.PartSizeBytes = 5 << 20 // the smallest S3 allows; default 8 MiB
					o.MultipartUploadThreshold = 5 << 20
				})
				out, err := tm.UploadObject(t.Context(), &transfermanager.UploadObjectInput{
					Bucket: aws.String("objects"), Key: aws.String("large"),
					Body:     io.MultiReader(bytes.NewReader(data)),
					Metadata: map[string]string{"sha256": "x"},
				})
				if err != nil {
					t.Fatal(err)
				}
				if etag := aws.ToString(out.ETag); !strings.HasSuffix(etag, `-3"`) {
					t.Errorf("ETag %s, want a multipart ETag of 3 parts", etag)
				}
				t.Logf("checksum of the multipart object: CRC32 %s, type %s", aws.ToString(out.ChecksumCRC32), out.ChecksumType)
				body, meta := mustGet(t, c, "objects", "large")
				if !bytes.Equal(body, data) || meta["sha256"] != "x" {
					t.Errorf("got %d bytes (equal: %v) and %v back", len(body), bytes.Equal(body, data), meta)
				}
			})
		})
	}
}

// The errors a client sees for bad credentials or a missing bucket or key. versitygw answers an
// unknown access key with its own code, where S3 says InvalidAccessKeyId.
func TestAccessErrors(t *testing.T) {
	s := StartForTest(t)
	mustCreateBucket(t, s, "present")
	withKeys := func(access, secret string) func(*s3.Options) {
		return func(o *s3.Options) { o.Credentials = credentials.NewStaticCredentialsProvider(access, secret, "") }
	}
	for _, tc := range []struct {
		name   string
		client *s3.Client
		bucket string
		key    string
		want   string
	}{
		{"wrong secret key", s.Client(noRetries, withKeys(s.AccessKey, "wrong")), "present", "", "SignatureDoesNotMatch"},
		{"unknown access key", s.Client(noRetries, withKeys("UNKNOWN", s.SecretKey)), "present", "", "XAdminUserNotFound"},
		{"wrong region", s.Client(noRetries, func(o *s3.Options) { o.Region = "eu-west-1" }), "present", "", "AuthorizationHeaderMalformed"},
		{"missing bucket", s.Client(), "absent", "", "NoSuchBucket"},
		{"missing bucket, object", s.Client(), "absent", "key", "NoSuchBucket"},
		{"missing key", s.Client(), "present", "absent", "NoSuchKey"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.key == "" {
				_, err = tc.client.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(tc.bucket)})
			} else {
				_, err = tc.client.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(tc.bucket), Key: aws.String(tc.key)})
			}
			if got := errorCode(err); got != tc.want {
				t.Errorf("got %q (%v), want %s", got, err, tc.want)
			}
		})
	}
	// HEAD answers carry no body, hence no S3 code: the SDK reports the status.
	_, err := s.Client().HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String("present"), Key: aws.String("absent")})
	var notFound *types.NotFound
	if !errors.As(err, &notFound) {
		t.Errorf("HeadObject of a missing key: %v, want types.NotFound", err)
	}
}

// A client made with wrong keys leaves the shared one working (see Client on the SDK's signer
// cache, which s3.New(srv.Client().Options()) would share).
func TestWrongKeysLeaveTheSharedClientAlone(t *testing.T) {
	s := StartForTest(t)
	mustCreateBucket(t, s, "shared")
	// The sequence that broke a shared signer: an unknown access key, then the right access key
	// with a wrong secret.
	for _, keys := range [][2]string{{"UNKNOWN", s.SecretKey}, {s.AccessKey, "wrong"}} {
		wrong := s.Client(noRetries, func(o *s3.Options) {
			o.Credentials = credentials.NewStaticCredentialsProvider(keys[0], keys[1], "")
		})
		if _, err := wrong.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String("shared")}); err == nil {
			t.Errorf("keys %q accepted", keys)
		}
		if _, err := s.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String("shared")}); err != nil {
			t.Errorf("the shared client after a wrong one: %v", err)
		}
	}
}
