#!/usr/bin/env bash
# `make demo`: build what is needed, start a local control plane (kube-apiserver + etcd built from
# Go modules), dry-run then apply plans/hello-cluster.yaml against it, show `planrun status`, and
# stop the control plane. The run's checkpoint stays in .planrun/demo-runs for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

assets=$(hack/build-control-plane.sh kube-apiserver etcd kubectl)
mkdir -p bin
go build -o bin/planrun ./cmd/planrun
go build -o bin/localcp ./hack/localcp

work=$(mktemp -d)
cp_pid=
cleanup() {
  if [ -n "$cp_pid" ] && kill -0 "$cp_pid" 2>/dev/null; then
    kill -TERM "$cp_pid" 2>/dev/null || true
    wait "$cp_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting a local control plane"
KUBEBUILDER_ASSETS=$assets bin/localcp --kubeconfig-out "$work/kubeconfig" 2>"$work/controlplane.log" &
cp_pid=$!
for _ in $(seq 1 120); do
  [ -s "$work/kubeconfig" ] && break
  kill -0 "$cp_pid" 2>/dev/null || { cat "$work/controlplane.log" >&2; echo "demo: the control plane did not start" >&2; exit 1; }
  sleep 1
done
[ -s "$work/kubeconfig" ] || { cat "$work/controlplane.log" >&2; echo "demo: the control plane did not start in 120 s" >&2; exit 1; }
export KUBECONFIG=$work/kubeconfig
state=.planrun/demo-runs

echo
echo "== planrun apply --dry-run plans/hello-cluster.yaml"
bin/planrun apply plans/hello-cluster.yaml --dry-run --set kubectl="$assets/kubectl" --state-dir "$state"

echo
echo "== planrun apply plans/hello-cluster.yaml"
bin/planrun apply plans/hello-cluster.yaml --set kubectl="$assets/kubectl" --state-dir "$state"

echo
echo "== planrun status"
bin/planrun status --state-dir "$state"

echo
echo "== what the plan left in the cluster"
"$assets/kubectl" -n planrun-demo get configmap planrun-hello -o jsonpath='{.data}'
echo
