package engine_test

import (
	"strings"
	"testing"
)

// TestInputPositions: errors about the YAML itself point at the fault, not at the start of the
// enclosing block, and errors yaml.v3 reports without a line get one. Bodies start on line 4.
func TestInputPositions(t *testing.T) {
	for _, tt := range []struct {
		name, body, want string
	}{
		{
			name: "bad indentation",
			body: "steps:\n  - id: a\n    type: test.op\n   with: {}\n",
			want: "plan.yaml:7:4: invalid YAML: ",
		},
		{
			name: "unterminated flow",
			body: "steps:\n  - id: a\n    type: test.op\n    with: {out: [1, 2}\n",
			want: "plan.yaml:7:21: invalid YAML: did not find expected ',' or ']'",
		},
		{
			name: "mapping value in a plain scalar",
			body: "steps:\n  - id: a\n    type: test.op\n    when: a: b\n",
			want: "plan.yaml:7:12: invalid YAML: mapping values are not allowed in this context",
		},
		{
			name: "undefined alias",
			body: "steps:\n  - id: a\n    type: test.op\n    with: *nope\n",
			want: "plan.yaml:7:11: invalid YAML: unknown anchor 'nope' referenced",
		},
		{
			name: "invalid UTF-8",
			body: "steps:\n  - id: a\n    type: test.op\n    description: caf\xe9\n",
			want: "plan.yaml:7:21: invalid UTF-8 (byte 0xE9)",
		},
		{
			name: "control character",
			body: "steps:\n  - id: a\n    type: test.op\n    description: \"x\x1b[31m\"\n",
			want: `plan.yaml:7:20: control character '\x1b' is not allowed in YAML`,
		},
		{
			name: "integer too large",
			body: "steps:\n  - {id: a, type: test.ints, with: {n: 99999999999999999999}}\n",
			want: "plan.yaml:5:40: step \"a\": with: integer 99999999999999999999 is too large for this field (at most 9223372036854775807)",
		},
		{
			name: "huge expression quoted short",
			body: "steps:\n  - {id: a, type: test.op, when: '" + strings.Repeat("x + ", 5000) + "'}\n",
			want: `... (20000 bytes)`,
		},
		{
			name: "retry attempts 0",
			body: "steps:\n  - {id: a, type: test.op, retry: {attempts: 0}}\n",
			want: `plan.yaml:5:46: step "a": retry.attempts must be at least 1 (it counts the first attempt; 1 means no retry), not 0`,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ltParse(tt.body)
			lines := ltErrors(t, err)
			if len(lines) != 1 || !strings.Contains(lines[0], tt.want) {
				t.Errorf("errors:\n  %.400s\nwant one with:\n  %s", strings.Join(lines, "\n  "), tt.want)
			}
			if len(lines[0]) > 400 {
				t.Errorf("error of %d bytes", len(lines[0]))
			}
		})
	}
}
