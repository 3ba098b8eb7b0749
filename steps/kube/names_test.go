package kube

import (
	"reflect"
	"strings"
	"testing"
)

func TestObjectNameFor(t *testing.T) {
	long := strings.Repeat("x", 70)
	for _, tc := range []struct{ prefix, run, step, want string }{
		{"planrun-", "r1", "hook", "planrun-r1-hook"},
		{"planrun-freeze-", "r1", "freeze", "planrun-freeze-r1-freeze"},
		{"planrun-", "R1", "a_b", "planrun-r1-a-b-"}, // replaced characters: a hash follows
		{"planrun-", long, "s", "planrun-" + long[:46] + "-"},
	} {
		got := ObjectNameFor(tc.prefix, tc.run, tc.step)
		if !strings.HasPrefix(got, tc.want) || len(got) > 63 {
			t.Errorf("ObjectNameFor(%q, %q, %q) = %q, want %q...", tc.prefix, tc.run, tc.step, got, tc.want)
		}
		if strings.HasSuffix(tc.want, "-") && len(got) != len(tc.want)+8 {
			t.Errorf("ObjectNameFor(%q, %q, %q) = %q: want an 8-digit hash after %q", tc.prefix, tc.run, tc.step, got, tc.want)
		}
	}
	if ObjectNameFor("p-", "a_b", "c") == ObjectNameFor("p-", "a-b", "c") {
		t.Error("different ids give the same name")
	}
}

func TestPaths(t *testing.T) {
	obj := map[string]any{"spec": map[string]any{"replicas": 3, "x": "not a map"}}
	if v, ok := GetPath(obj, []string{"spec", "replicas"}); !ok || v != 3 {
		t.Fatalf("GetPath spec.replicas = %v %v", v, ok)
	}
	if _, ok := GetPath(obj, []string{"spec", "x", "y"}); ok {
		t.Fatal("GetPath through a string")
	}
	SetPath(obj, []string{"spec", "x", "y"}, 1)
	SetPath(obj, []string{"metadata", "labels", "a"}, "b")
	want := map[string]any{"spec": map[string]any{"replicas": 3, "x": map[string]any{"y": 1}}, "metadata": map[string]any{"labels": map[string]any{"a": "b"}}}
	if !reflect.DeepEqual(obj, want) {
		t.Fatalf("after SetPath: %v", obj)
	}
	if v, ok := TakePath(obj, []string{"spec", "replicas"}); !ok || v != 3 {
		t.Fatalf("TakePath = %v %v", v, ok)
	}
	if _, ok := GetPath(obj, []string{"spec", "replicas"}); ok {
		t.Fatal("TakePath left the field")
	}
	if _, ok := TakePath(obj, []string{"nope", "x"}); ok {
		t.Fatal("TakePath of a missing field")
	}
}
