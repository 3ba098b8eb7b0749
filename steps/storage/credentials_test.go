package storage

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

func TestS3CredentialsFromSecrets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    map[string]string
		profile string
		id      string // "" when an error is expected
		token   string
	}{
		{name: "gardener", data: map[string]string{"accessKeyID": "AK1", "secretAccessKey": "S1"}, id: "AK1"},
		{name: "aws file keys", data: map[string]string{"aws_access_key_id": "AK2", "aws_secret_access_key": "S2", "aws_session_token": "T2"}, id: "AK2", token: "T2"},
		{name: "environment names", data: map[string]string{"AWS_ACCESS_KEY_ID": "AK3", "AWS_SECRET_ACCESS_KEY": "S3"}, id: "AK3"},
		{name: "cam", data: map[string]string{"aws-access-key-id": "AK4\n", "aws-secret-access-key": "S4\n"}, id: "AK4"},
		{name: "velero cloud file", data: map[string]string{"cloud": "[default]\naws_access_key_id = AK5\naws_secret_access_key = S5\n"}, id: "AK5"},
		{name: "velero cloud file, profile", profile: "other", data: map[string]string{"cloud": "[default]\naws_access_key_id=AK6\naws_secret_access_key=S6\n[profile other]\naws_access_key_id=AK7\naws_secret_access_key=S7\n"}, id: "AK7"},
		{name: "no secret key", data: map[string]string{"accessKeyID": "AK8", "password": "TOPSECRET"}},
		{name: "empty", data: map[string]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := map[string][]byte{}
			for k, v := range tc.data {
				data[k] = []byte(v)
			}
			c := NewCredentials("Secret ns/s", data)
			p, err := s3Credentials(c, tc.profile)
			if tc.id == "" {
				if err == nil {
					t.Fatal("no error")
				}
				for _, v := range tc.data {
					if strings.Contains(err.Error(), v) {
						t.Fatalf("error %q quotes a value", err)
					}
				}
				if !strings.Contains(err.Error(), "Secret ns/s") {
					t.Fatalf("error %q does not name the Secret", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Retrieve(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got.AccessKeyID != tc.id || got.SessionToken != tc.token {
				t.Fatalf("got %q token %q", got.AccessKeyID, got.SessionToken)
			}
		})
	}
}

// Printing credentials by mistake (%v, %+v, %#v, %s) shows where they came from, never a value.
func TestCredentialsNeverPrintValues(t *testing.T) {
	c := NewCredentials("Secret ns/s", map[string][]byte{"secretAccessKey": []byte("TOPSECRET")})
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		if s := fmt.Sprintf(f, c); strings.Contains(s, "TOPSECRET") {
			t.Errorf("%s prints %q", f, s)
		}
	}
}
