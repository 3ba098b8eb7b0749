#!/usr/bin/env bash
# hack/bench.sh [go test flags]: runs every benchmark against real local control planes and ends
# with a summary of the ratios the benchmarks measured in this same run (planrun against its
# baselines: client-go, kubectl, and its own figures at other sizes). Figures, never pass/fail
# on timing: these machines are shared and noisy.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BENCHTIME:=1s}"
KUBEBUILDER_ASSETS="$(hack/build-control-plane.sh kube-apiserver etcd kubectl etcdctl)"
export KUBEBUILDER_ASSETS
# make bench passes the S3 server it built; run by hand, the script builds (or finds) it itself.
PLANRUN_S3_SERVER="${PLANRUN_S3_SERVER:-$(hack/build-s3-server.sh)}"
export PLANRUN_S3_SERVER
# rclone and restic, the baselines of files.copy and of the volume mover (Debian packages; their
# benchmarks skip, saying so, without them).
hack/install-bench-deps.sh || echo "bench: rclone or restic could not be installed: the benchmarks against them will skip" >&2
out="$(mktemp -t planrun-bench.XXXXXX)"
trap 'rm -f "$out"' EXIT
# -p 1: one package at a time, so that benchmarks do not compete for the CPUs.
go test -p 1 -run='^$' -bench=. -benchmem -benchtime="$BENCHTIME" -timeout 60m "$@" ./... 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
echo
echo "== ratios measured in this run"
grep -E '^Benchmark[A-Za-z0-9]+: ' "$out" || echo "(none: were the control plane benchmarks skipped?)"
exit "$status"
