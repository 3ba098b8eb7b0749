package controlplane

import (
	"context"
	"io"
)

// StartEtcdOnDataDir starts etcd on an existing data folder, such as one etcd.restore made, so
// that a test can check what a restored member serves. binaryDir holds the etcd binary; empty
// means FindBinaries. The folder belongs to the caller: Stop leaves it in place.
func StartEtcdOnDataDir(ctx context.Context, binaryDir, dataDir string, output io.Writer) (*Etcd, error) {
	if binaryDir == "" {
		var err error
		if binaryDir, err = FindBinaries(ctx); err != nil {
			return nil, err
		}
	}
	return startEtcd(binaryDir, dataDir, output)
}
