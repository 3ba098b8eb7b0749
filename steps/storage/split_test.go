package storage

import "testing"

func TestSplitFileAndJoinFile(t *testing.T) {
	for _, tc := range []struct {
		raw, dir, name string
		joined         string // JoinFile(dir, name), when not raw itself
	}{
		{raw: "/backups/etcd.db", dir: "/backups", name: "etcd.db"},
		{raw: "/backups//x/../etcd.db", dir: "/backups", name: "etcd.db", joined: "/backups/etcd.db"},
		{raw: "etcd.db", dir: ".", name: "etcd.db"},
		{raw: "file:///backups/etcd.db", dir: "/backups", name: "etcd.db", joined: "/backups/etcd.db"},
		{raw: "s3://bucket/a/b/final.db?endpoint=http://127.0.0.1:9000&region=r", dir: "s3://bucket/a/b?endpoint=http://127.0.0.1:9000&region=r", name: "final.db"},
		{raw: "s3://bucket/final.db?region=r", dir: "s3://bucket?region=r", name: "final.db"},
		{raw: "gs://bucket/p/final.db", dir: "gs://bucket/p", name: "final.db"},
		{raw: "azblob://container/p/final.db", dir: "azblob://container/p", name: "final.db"},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			dir, name, err := SplitFile(tc.raw)
			if err != nil || dir != tc.dir || name != tc.name {
				t.Fatalf("SplitFile = %q, %q, %v; want %q, %q", dir, name, err, tc.dir, tc.name)
			}
			want := tc.joined
			if want == "" {
				want = tc.raw
			}
			if got := JoinFile(dir, name); got != want {
				t.Fatalf("JoinFile(%q, %q) = %q, want %q", dir, name, got, want)
			}
		})
	}
	for _, raw := range []string{"/backups/", "/", ".", "..", "s3://bucket", "s3://bucket/", "s3://bucket/p/?region=r", "nope://b/x", "s3://user:pw@bucket/x"} {
		if dir, name, err := SplitFile(raw); err == nil {
			t.Errorf("SplitFile(%q) = %q, %q; want an error", raw, dir, name)
		}
	}
}
