#!/usr/bin/env bash
# `make demo`: build what is needed, start a local cluster (kube-apiserver, etcd, controllers,
# scheduler and a node, built from Go modules; containerd, runc and the CNI plugins from Debian),
# apply plans/hello-cluster.yaml to it (its Job runs a real pod), then run the shipped Service Catalog
# migration (plans/service-catalog-to-crds.yaml) on a small catalog installed there: dry run,
# apply, and the objects before and after. The control plane is stopped at the end; the runs'
# checkpoints stay in .planrun/demo-runs for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

assets=$(hack/build-control-plane.sh kube-apiserver etcd kubectl kube-controller-manager kube-scheduler kubelet)
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

echo "== starting a local cluster with a node"
KUBEBUILDER_ASSETS=$assets bin/localcp --node --kubeconfig-out "$work/kubeconfig" 2>"$work/controlplane.log" &
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
hello_args=(--set image=planrun.local/busybox:1.35 --state-dir "$state")
bin/planrun apply plans/hello-cluster.yaml --dry-run "${hello_args[@]}"

echo
echo "== planrun apply plans/hello-cluster.yaml"
bin/planrun apply plans/hello-cluster.yaml "${hello_args[@]}"

echo
echo "== planrun status"
bin/planrun status --state-dir "$state"

echo
echo "== planrun logs RUN hello-job: the log of the Job's pod, as planrun kept it with the run"
hello_run=$(basename "$(ls -td "$state"/hello-cluster-* | head -1)")
bin/planrun logs "$hello_run" hello-job --state-dir "$state"

echo
echo "== what the plan left in the cluster"
"$assets/kubectl" -n planrun-demo get configmap planrun-hello -o jsonpath='{.data}'
echo

# The shipped Service Catalog migration, on a small catalog: the old aggregated API stood in by
# CRDs (testdata/servicecatalog/old-api.yaml), the 0.3 CRDs in testdata/servicecatalog/new-crds.yaml.
k() { "$assets/kubectl" "$@"; }
echo
echo "== installing a small Service Catalog 0.2 (stand-in API, 1 broker, 1 class, 2 plans, 2 instances, 2 bindings)"
k apply --server-side -f testdata/servicecatalog/old-api.yaml >/dev/null
k wait --for=condition=Established crd -l planrun.dev/stand-in=old-service-catalog-apiserver --timeout=60s >/dev/null
k apply --server-side -f testdata/servicecatalog/demo.yaml >/dev/null
for b in orders-db cart-db; do
  uid=$(k -n shop get servicebinding "$b" -o jsonpath='{.metadata.uid}')
  k apply --server-side -f - >/dev/null <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: $b-creds
  namespace: shop
  ownerReferences: [{apiVersion: servicecatalog.k8s.io/v1beta1, kind: ServiceBinding, name: $b, uid: "$uid", controller: true, blockOwnerDeletion: true}]
stringData: {username: $b, password: s3cret-$b}
EOF
done
show() {
  k -n shop get serviceinstances,servicebindings -o custom-columns='KIND:.kind,NAME:.metadata.name,UID:.metadata.uid,CLASS:.spec.clusterServiceClassRef.name,INSTANCE:.spec.instanceRef.name'
  k -n shop get secrets -o custom-columns='SECRET:.metadata.name,OWNER:.metadata.ownerReferences[0].name,OWNER-UID:.metadata.ownerReferences[0].uid'
}
show
sc_args=(--set newCRDs=testdata/servicecatalog/new-crds.yaml --set oldCRDSelector=planrun.dev/stand-in=old-service-catalog-apiserver
  --set apiService= --set backupDir="$work/service-catalog-backup" --state-dir "$state")

echo
echo "== planrun apply --dry-run plans/service-catalog-to-crds.yaml"
bin/planrun apply plans/service-catalog-to-crds.yaml --dry-run "${sc_args[@]}"

echo
echo "== planrun apply plans/service-catalog-to-crds.yaml"
bin/planrun apply plans/service-catalog-to-crds.yaml "${sc_args[@]}"

echo
echo "== the same objects on the 0.3 CRDs: new UIDs, references kept, Secrets owned by the new bindings"
show
k get crd -l svcat=true -o custom-columns='NEW CRD:.metadata.name'

sc_run=$(basename "$(ls -td "$state"/service-catalog-to-crds-* | head -1)")
echo
echo "== the operator console on these runs (the cluster stops now; the runs' journals, events and files stay)"
echo "   bin/planrun ui --state-dir $state --run $sc_run"
echo "   then open the URL it prints (http://127.0.0.1:8470/runs/$sc_run?token=…); Ctrl-C stops it"
