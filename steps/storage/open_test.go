package storage

import (
	"context"
	"errors"
	"strings"
	"testing"

	"planrun.dev/planrun/internal/safepath"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want error  // matched with errors.Is; nil: valid
		text string // in the message
	}{
		{url: "/backups/x"},
		{url: "relative/dir"},
		{url: "file:///backups/x"},
		{url: "file://localhost/backups/x"},
		{url: "s3://bucket"},
		{url: "s3://bucket/a/b?endpoint=http://127.0.0.1:9000&region=eu-west-1"},
		{url: "gs://bucket/prefix"},
		{url: "azblob://container/prefix?storage_account=acct"},
		{url: "", text: "empty location"},
		{url: "ftp://host/x", want: ErrUnsupported, text: "scheme ftp:// is not supported"},
		{url: "s3:///x", text: "no bucket"},
		{url: "s3://b/a/../x", want: safepath.ErrUnsafe, text: `prefix "a/../x"`},
		{url: "s3://b/a//x", want: safepath.ErrUnsafe},
		{url: "file://host/x", text: "names a local path"},
		{url: "s3://AKIA:SECRETVALUE@b/x", text: "must not hold credentials"},
		{url: "s3://b/%zz", text: "not a valid URL"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			err := Check(tc.url)
			if tc.want == nil && tc.text == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v does not match %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.text) {
				t.Errorf("error %q does not say %q", err, tc.text)
			}
			if strings.Contains(err.Error(), "SECRETVALUE") {
				t.Errorf("error %q quotes the secret", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"s3://b/p?endpoint=http://127.0.0.1:9000&region=us-east-1", "s3://b/p?endpoint=http://127.0.0.1:9000&region=us-east-1"},
		{"s3://id:secret@b/p", "s3://REDACTED@b/p"},
		{"azblob://c/p?sig=abc&sv=2020", "azblob://c/p?sig=REDACTED&sv=2020"},
		{"s3://b/p?X-Amz-Security-Token=t&X-Amz-Credential=c", "s3://b/p?X-Amz-Security-Token=REDACTED&X-Amz-Credential=REDACTED"},
		{"/plain/path", "/plain/path"},
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// A credential given to a local path is a mistake worth saying, not something to ignore.
func TestOpenLocalRefusesCredentials(t *testing.T) {
	creds := NewCredentials("Secret a/b", map[string][]byte{"accessKeyID": []byte("x")})
	for _, u := range []string{t.TempDir(), "file://" + t.TempDir()} {
		if _, err := Open(context.Background(), u, creds); err == nil || !strings.Contains(err.Error(), "credentials apply to object stores") {
			t.Errorf("Open(%s): %v", u, err)
		}
	}
}
