package childproc

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	big := strings.Repeat("0123456789", TailSize/10+7)
	for _, tc := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"nothing", nil, ""},
		{"less than its size", []string{"hello ", "world\n"}, "hello world\n"},
		{"one write larger than its size", []string{big}, big[len(big)-TailSize:]},
		{"many writes past its size", []string{big[:TailSize-3], "abcdef"}, big[3:TailSize-3] + "abcdef"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var tail Tail
			for _, w := range tc.writes {
				if n, err := tail.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%d bytes) = %d, %v", len(w), n, err)
				}
			}
			if got := tail.String(); got != tc.want {
				t.Errorf("String() = %q (%d bytes), want %q (%d bytes)", got, len(got), tc.want, len(tc.want))
			}
		})
	}
}

func TestWithTail(t *testing.T) {
	boom := errors.New("boom")
	var empty Tail
	if err := WithTail(boom, "prog", &empty); err != boom {
		t.Errorf("WithTail with an empty tail = %v, want the error unchanged", err)
	}
	var tail Tail
	tail.Write([]byte("fatal: bad flag\n"))
	err := WithTail(boom, "prog", &tail)
	if want := "boom\n--- last output of prog ---\nfatal: bad flag\n"; err.Error() != want {
		t.Errorf("WithTail = %q, want %q", err, want)
	}
	if !errors.Is(err, boom) {
		t.Errorf("WithTail(%v) does not match it with errors.Is", boom)
	}
}

func TestFileTail(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat("abcdefghij", TailSize/10+7)
	for _, tc := range []struct {
		name    string
		content *string // nil: no file
		want    string
	}{
		{"small file", ptr("one line\n"), "one line\n"},
		{"empty file", ptr(""), ""},
		{"file larger than the tail", &big, big[len(big)-TailSize:]},
		{"missing file", nil, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if tc.content != nil {
				if err := os.WriteFile(path, []byte(*tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got := FileTail(path)
			if tc.content == nil {
				if !strings.Contains(got, path) || !strings.Contains(got, tc.want) {
					t.Errorf("FileTail(missing) = %q, want the path and %q", got, tc.want)
				}
				return
			}
			if got != tc.want {
				t.Errorf("FileTail = %q (%d bytes), want %q (%d bytes)", got, len(got), tc.want, len(tc.want))
			}
		})
	}
}

func ptr(s string) *string { return &s }
