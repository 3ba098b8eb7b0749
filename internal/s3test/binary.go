// Package s3test runs real S3 servers for tests: versitygw, an S3 gateway over a local folder,
// on 127.0.0.1 with its own data folder and random root keys. Tests of object-storage
// locations (s3:// URLs) start one, or several at once, with StartForTest.
//
// The binary is built from Go modules by hack/build-s3-server.sh (make test passes its path in
// PLANRUN_S3_SERVER); nothing is downloaded at test time.
package s3test

import (
	"fmt"
	"os"
)

// BinaryEnv names the versitygw binary the servers run.
const BinaryEnv = "PLANRUN_S3_SERVER"

// buildScript builds versitygw and prints its path; relative to the module root.
const buildScript = "hack/build-s3-server.sh"

// Binary returns the path of the versitygw binary: $PLANRUN_S3_SERVER, which must name an
// executable file. Unlike the control plane's binaries it is never built on demand: a test
// binary that ran a two-minute build on its own would look hung.
func Binary() (string, error) {
	path := os.Getenv(BinaryEnv)
	if path == "" {
		return "", fmt.Errorf("no S3 server: $%s is unset; build versitygw with %s and set %s to the path it prints, or run `make test`",
			BinaryEnv, buildScript, BinaryEnv)
	}
	info, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("$%s=%s: %w (rebuild it with %s)", BinaryEnv, path, err, buildScript)
	}
	if info.IsDir() || info.Mode().Perm()&0o111 == 0 {
		return "", fmt.Errorf("$%s=%s is not an executable file", BinaryEnv, path)
	}
	return path, nil
}
