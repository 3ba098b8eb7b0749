package kubevolumes_test

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"

	"planrun.dev/planrun/steps/kubevolumes"
)

func TestObjectName(t *testing.T) {
	long := strings.Repeat("a", 200) + ".b"
	for _, claim := range []string{"data", "data-db-0", "www.example.com", long} {
		name := kubevolumes.ObjectName("planrun-restore-", claim, "run", "s", "shop", claim)
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Errorf("%q for claim %q: %v", name, claim, errs)
		}
		if again := kubevolumes.ObjectName("planrun-restore-", claim, "run", "s", "shop", claim); again != name {
			t.Errorf("not deterministic: %q, %q", name, again)
		}
		for _, other := range []string{
			kubevolumes.ObjectName("planrun-restore-", claim, "run2", "s", "shop", claim),
			kubevolumes.ObjectName("planrun-restore-", claim, "run", "s2", "shop", claim),
			kubevolumes.ObjectName("planrun-restore-", claim, "run", "s", "shop2", claim),
		} {
			if other == name {
				t.Errorf("%q for another run, step or namespace", other)
			}
		}
	}
	if got := kubevolumes.ObjectName("planrun-backup-", "data", "run", "s", "shop", "data"); !strings.HasPrefix(got, "planrun-backup-data-") || len(got) != len("planrun-backup-data-")+8 {
		t.Errorf("name %q", got)
	}
}

func TestFormats(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 12 << 20: "12 MiB", 1 << 30: "1.0 GiB", 3 << 29: "1.5 GiB", 10 << 40: "10 TiB"} {
		if got := kubevolumes.FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 10421: "10,421", 1000000: "1,000,000", -1234: "-1,234"} {
		if got := kubevolumes.FormatCount(n); got != want {
			t.Errorf("FormatCount(%d) = %q, want %q", n, got, want)
		}
	}
}
