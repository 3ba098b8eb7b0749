package kube

import (
	"reflect"
	"testing"
)

func TestRules(t *testing.T) {
	r := func(cluster, group, resource string, verbs ...string) Rule {
		return Rule{Cluster: cluster, Groups: []string{group}, Resources: []string{resource}, Verbs: verbs}
	}
	tests := []struct {
		name      string
		got, want []Rule
	}{
		{"kind of the core group", []Rule{KindRule("v1", "ConfigMap", "get")}, []Rule{r("", "", "configmaps", "get")}},
		{"kind of a group", []Rule{KindRule("apps/v1", "Deployment", "list")}, []Rule{r("", "apps", "deployments", "list")}},
		{"kind plurals", []Rule{KindRule("networking.k8s.io/v1", "NetworkPolicy"), KindRule("v1", "Endpoints"), KindRule("networking.k8s.io/v1", "Ingress")},
			[]Rule{r("", "networking.k8s.io", "networkpolicies"), r("", "", "endpoints"), r("", "networking.k8s.io", "ingresses")}},
		{"kind without apiVersion", []Rule{KindRule("", "Deployment", "get")}, []Rule{r("", "*", "deployments", "get")}},
		{"apiVersion that holds ${{ }}", []Rule{KindRule("${{ params.v }}", "Widget", "get")}, []Rule{r("", "*", "widgets", "get")}},
		{"kind that holds ${{ }}", []Rule{KindRule("apps/v1", "", "get")}, []Rule{r("", "apps", "*", "get")}},
		{"resource of the core group", []Rule{ResourceRule("ConfigMaps", "get")}, []Rule{r("", "", "configmaps", "get")}},
		{"resource.group", []Rule{ResourceRule("serviceinstances.servicecatalog.k8s.io", "list")}, []Rule{r("", "servicecatalog.k8s.io", "serviceinstances", "list")}},
		{"resource without its group", []Rule{ResourceRule("deployments", "list")}, []Rule{r("", "*", "deployments", "list")}},
		{"subresource", []Rule{ResourceRule("pods/log", "get"), ResourceRule("deployments.apps/scale", "update")},
			[]Rule{r("", "", "pods/log", "get"), r("", "apps", "deployments/scale", "update")}},
		{"empty resource", []Rule{ResourceRule("", "get")}, []Rule{r("", "*", "*", "get")}},
		{"Subresource", []Rule{KindRule("apps/v1", "Deployment", "get", "update").Subresource("scale")}, []Rule{r("", "apps", "deployments/scale", "get", "update")}},
		{"OnCluster", OnCluster("garden", ResourceRule("secrets", "get"), ResourceRule("pods", "list")),
			[]Rule{r("garden", "", "secrets", "get"), r("garden", "", "pods", "list")}},
		{"merge: same group and verbs", MergeRules([]Rule{ResourceRule("secrets", "get"), ResourceRule("configmaps", "get"), ResourceRule("secrets", "get")}),
			[]Rule{{Groups: []string{""}, Resources: []string{"configmaps", "secrets"}, Verbs: []string{"get"}}}},
		{"merge: verbs sorted, sets kept apart", MergeRules([]Rule{ResourceRule("pods", "list", "get"), ResourceRule("jobs.batch", "watch"), ResourceRule("pods/log", "get")}),
			[]Rule{r("", "", "pods/log", "get"), r("", "", "pods", "get", "list"), r("", "batch", "jobs", "watch")}},
		{"merge: any resource absorbs its verbs", MergeRules([]Rule{ResourceRule("secrets", "get", "list"), AnyResource("get"), ResourceRule("pods", "get")}),
			[]Rule{r("", "*", "*", "get"), r("", "", "secrets", "list")}},
		{"merge: clusters kept apart", MergeRules([]Rule{ResourceRule("secrets", "get"), AnyResource("list"), r("b", "", "secrets", "get"), r("b", "", "secrets", "list"), r("a", "", "pods", "list")}),
			[]Rule{r("", "*", "*", "list"), r("", "", "secrets", "get"), r("a", "", "pods", "list"), r("b", "", "secrets", "get", "list")}},
		{"merge: no verbs", MergeRules([]Rule{ResourceRule("secrets")}), nil},
		{"ByCluster", ByCluster("main", []Rule{ResourceRule("pods", "list"), r("garden", "", "secrets", "get"), r("main", "", "secrets", "get")})["main"],
			[]Rule{r("", "", "pods", "list"), r("", "", "secrets", "get")}},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s: got %+v, want %+v", tt.name, tt.got, tt.want)
		}
	}
}
