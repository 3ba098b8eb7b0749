#!/usr/bin/env bash
# Installs the Debian packages the benchmarks compare planrun against: rclone (files.copy's
# baseline, steps/files/bench_test.go). Idempotent: packages already installed are left alone,
# and apt is not called at all when nothing is missing. hack/bench.sh calls it.
set -euo pipefail

packages=(rclone)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-bench-deps: missing ${missing[*]}; run as root (apt-get install), or the benchmarks that need them skip" >&2
  exit 1
fi
echo "install-bench-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
