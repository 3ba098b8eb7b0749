#!/usr/bin/env bash
# Installs the Debian packages a local node needs (internal/controlplane Options.Node): containerd
# and runc run the pods, containernetworking-plugins gives them a network, busybox-static is the
# binary of the busybox test image, iproute2 removes a node's bridge. Idempotent: packages already
# installed are left alone, and apt is not called at all when nothing is missing.
#
# Why Debian's containerd 1.6: it is what the package registry offers; kubelet 1.37 still accepts
# a runtime without the RuntimeConfig call (it falls back to its own cgroupDriver setting).
set -euo pipefail

packages=(containerd runc containernetworking-plugins busybox-static iproute2)

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
  echo "install-node-deps: missing ${missing[*]}; run as root (apt-get install)" >&2
  exit 1
fi
echo "install-node-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
# The containerd package starts a system-wide containerd where an init system runs; nodes start
# their own, each with its own socket and folders, and never use it.
