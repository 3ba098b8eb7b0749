package safepath

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestName(t *testing.T) {
	for _, tt := range []struct {
		name, want string
	}{
		{"run-1", ""},
		{".hidden", ""},
		{"a.b_c-d", ""},
		{"", "must not be empty"},
		{".", "must not be . or .."},
		{"..", "must not be . or .."},
		{"../x", `must not contain '/' or '\'`},
		{"a/b", `must not contain '/' or '\'`},
		{`a\b`, `must not contain '/' or '\'`},
		{"/abs", `must not contain '/' or '\'`},
		{"a\x00b", "must not contain control characters"},
		{"a\nb", "must not contain control characters"},
		{"\xff", "is not valid UTF-8"},
		{strings.Repeat("x", 256), "is longer than 255 bytes"},
	} {
		err := Name("run id", tt.name)
		if tt.want == "" {
			if err != nil {
				t.Errorf("Name(%q) = %v, want nil", tt.name, err)
			}
			continue
		}
		var e *Error
		if !errors.As(err, &e) || e.Reason != tt.want || !errors.Is(err, ErrUnsafe) {
			t.Errorf("Name(%q) = %v, want reason %q", tt.name, err, tt.want)
		}
	}
}

func TestRel(t *testing.T) {
	for _, tt := range []struct {
		path string
		ok   bool
	}{
		{"ns/configmaps/a.yaml", true},
		{"a", true},
		{"", false},
		{"/etc/passwd", false},
		{"../x", false},
		{"a/../../x", false},
		{"a/./b", false},
		{"a//b", false},
		{"a/", false},
		{`a\..\b`, false},
		{"a/\x00", false},
		{strings.Repeat("a/", 3000) + "a", false},
	} {
		err := Rel("backup entry", tt.path)
		if (err == nil) != tt.ok {
			t.Errorf("Rel(%q) = %v, want ok=%v", tt.path, err, tt.ok)
		}
	}
}

func TestJoinStaysInside(t *testing.T) {
	dir := t.TempDir()
	p, err := JoinRel(dir, "entry", "ns/a.yaml")
	if err != nil || p != filepath.Join(dir, "ns", "a.yaml") {
		t.Fatalf("JoinRel = %q, %v", p, err)
	}
	if _, err := Join(dir, "step id", "../x"); err == nil {
		t.Fatal("Join accepted ../x")
	}
	if _, err := JoinRel(dir, "entry", "ns/../../x"); err == nil {
		t.Fatal("JoinRel accepted ns/../../x")
	}
}
