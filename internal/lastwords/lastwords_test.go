package lastwords

import "testing"

func TestLine(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		max       int
		want      string
	}{
		{"empty", "", 10, ""},
		{"last of several, blank lines after it", "starting\nboom-detail\n\n  \n", 100, "boom-detail"},
		{"one line without newline", "  done  ", 100, "done"},
		{"control bytes escaped", "\x1b[31mred\x1b[0m\r", 100, `\x1b[31mred\x1b[0m`},
		{"invalid UTF-8 escaped", "a\xffb", 100, `a\xffb`},
		{"cut to its end", "0123456789abcdef", 6, "...abcdef"},
		{"cut inside a rune: the partial rune dropped", "xx€yz", 4, "...yz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Line(tc.out, tc.max); got != tc.want {
				t.Errorf("Line(%q, %d) = %q, want %q", tc.out, tc.max, got, tc.want)
			}
		})
	}
}
