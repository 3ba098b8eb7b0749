package mover

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/kopia/kopia/repo/blob"

	"planrun.dev/planrun/internal/s3test"
)

// BenchmarkBlobAdapter puts then gets a 20 MiB blob (kopia's largest pack) through the
// adapter, and the same bytes through a bare S3 client (one PutObject, one GetObject), on the
// same server, one after the other in each iteration. ratio is the adapter's time over the
// bare client's.
func BenchmarkBlobAdapter(b *testing.B) {
	ctx := context.Background()
	s := s3test.StartForTest(b)
	st := NewBlobStorage(openS3(b, s, "bench", "repo"))
	client := s.Client()
	data := randomBytes(7, 20<<20)
	var adapter, raw, adapterPut, rawPut time.Duration
	var out outputBuffer
	out.Grow(len(data))
	b.SetBytes(int64(2 * len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := blob.ID(fmt.Sprintf("p%032x", i))
		t0 := time.Now()
		if err := st.PutBlob(ctx, id, sliceBytes(data), blob.PutOptions{}); err != nil {
			b.Fatal(err)
		}
		adapterPut += time.Since(t0)
		if err := st.GetBlob(ctx, id, 0, -1, &out); err != nil || out.Len() != len(data) {
			b.Fatal(err)
		}
		t1 := time.Now()
		key := aws.String(fmt.Sprintf("raw/p%032x", i))
		if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bench"), Key: key, Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))}); err != nil {
			b.Fatal(err)
		}
		rawPut += time.Since(t1)
		resp, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bench"), Key: key})
		if err != nil {
			b.Fatal(err)
		}
		out.Reset()
		n, err := io.Copy(&out, resp.Body)
		resp.Body.Close()
		if err != nil || n != int64(len(data)) {
			b.Fatal(err)
		}
		t2 := time.Now()
		adapter += t1.Sub(t0)
		raw += t2.Sub(t1)
	}
	mib := float64(2*len(data)*b.N) / (1 << 20)
	b.ReportMetric(mib/adapter.Seconds(), "adapter-MiB/s")
	b.ReportMetric(mib/raw.Seconds(), "raw-MiB/s")
	b.ReportMetric(adapter.Seconds()/raw.Seconds(), "ratio")
	b.ReportMetric(adapterPut.Seconds()/rawPut.Seconds(), "put-ratio")
	b.ReportMetric((adapter-adapterPut).Seconds()/(raw-rawPut).Seconds(), "get-ratio")
}
