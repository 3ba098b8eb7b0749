package storage

import (
	"io/fs"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// KnownMode is implemented by readers that know the permission bits planrun recorded when it
// wrote the object (its "mode" metadata): a copy from a bucket to a local folder, or to another
// bucket, keeps a Secret's backup 0600 without asking each object for its metadata (a listing
// has none). Mode is 0 when the object has no such metadata.
type KnownMode interface{ Mode() fs.FileMode }

// Mode implements KnownMode from the metadata that came with the object's body (S3 returns it
// with GET; the other providers' readers do not carry it, and give 0).
func (r *objectReader) Mode() fs.FileMode {
	var out s3.GetObjectOutput
	if !r.Reader.As(&out) {
		return 0
	}
	m, err := strconv.ParseUint(out.Metadata[metaMode], 8, 32)
	if err != nil {
		return 0
	}
	return fs.FileMode(m).Perm()
}

func (r *readErrors) Mode() fs.FileMode { return r.ReadCloser.(*objectReader).Mode() }
