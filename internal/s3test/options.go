package s3test

import (
	"crypto/rand"
	"fmt"
	"time"
)

// Region is the region every server answers for, and what clients must sign for.
const Region = "us-east-1"

// defaultStartTimeout bounds how long Start and Restart wait for the server to answer. versitygw
// answers within a fraction of a second; the margin is for shared, loaded machines.
const defaultStartTimeout = 30 * time.Second

// Options configures a server. The zero value is a server on a free port of 127.0.0.1, with
// fresh folders and random keys.
type Options struct {
	// Binary is the versitygw to run; default Binary() ($PLANRUN_S3_SERVER).
	Binary string
	// Dir is the folder served: each folder in it is a bucket, each file below a bucket an object
	// (key a/b/c is the file BUCKET/a/b/c). Default: a new temporary folder, removed by Stop.
	Dir string
	// MetaDir keeps object metadata (user metadata, ETags, checksums, multipart state) apart
	// from the objects; see Server.args for why. Default: a new temporary folder, removed by Stop.
	// A server given the Dir of an earlier one needs its MetaDir too to see the same metadata.
	MetaDir string
	// AccessKey and SecretKey are the root credentials; default random ones, so that a client of
	// one server cannot talk to another by mistake.
	AccessKey, SecretKey string
	// TLS serves HTTPS (Endpoint https://127.0.0.1:PORT) with a certificate signed by a
	// throwaway CA (Server.CAFile), as S3 does. The AWS SDK behaves differently over TLS: it
	// sends an unseekable body with a trailing checksum (aws-chunked), where over plain HTTP it
	// must read the body twice and refuses one it cannot rewind.
	TLS bool
	// StartTimeout bounds the wait for the server to answer; default 30s.
	StartTimeout time.Duration
}

// withDefaults fills in what opts leaves empty, except the folders (Start creates those so that
// it knows which ones to remove).
func (opts Options) withDefaults() (Options, error) {
	var err error
	if opts.Binary == "" {
		if opts.Binary, err = Binary(); err != nil {
			return opts, err
		}
	}
	if opts.AccessKey == "" {
		// 20 characters like an AWS access key id; the prefix tells whose it is in a log.
		opts.AccessKey = randomKey("PLANRUN", 13)
	}
	if opts.SecretKey == "" {
		opts.SecretKey = randomKey("", 40)
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = defaultStartTimeout
	}
	return opts, nil
}

// randomKey returns prefix followed by n random upper-case hex digits.
func randomKey(prefix string, n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b) // never fails (crypto/rand, Go 1.24+)
	return prefix + fmt.Sprintf("%X", b)[:n]
}
