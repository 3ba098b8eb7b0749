#!/usr/bin/env bash
# Installs the Debian packages the benchmarks compare planrun against: rclone (files.copy's
# baseline, steps/files/bench_test.go) and restic (the volume mover's, steps/mover). Idempotent: packages already installed are left alone,
# and apt is not called at all when nothing is missing. hack/bench.sh calls it.
set -euo pipefail

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"
apt_install_missing install-bench-deps rclone restic || {
  echo "install-bench-deps: the benchmarks that need them skip" >&2
  exit 1
}
