package main

import "testing"

func TestSuggest(t *testing.T) {
	commands := []string{"apply", "resume", "rollback", "status", "runs", "fleet", "logs"}
	for _, tc := range []struct{ typed, want string }{
		{"aply", "apply"},
		{"statsu", "status"},
		{"rollbak", "rollback"},
		{"log", "logs"},
		{"frobnicate", ""},
		{"", ""},
	} {
		if got := suggest(tc.typed, commands); got != tc.want {
			t.Errorf("suggest(%q) = %q, want %q", tc.typed, got, tc.want)
		}
	}
}
