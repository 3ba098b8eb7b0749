#!/usr/bin/env bash
# Installs the Debian packages a local node needs (internal/controlplane Options.Node): containerd
# and runc run the pods, containernetworking-plugins gives them a network, busybox-static is the
# binary of the busybox test image, iproute2 removes a node's bridge. Idempotent: packages already
# installed are left alone, and apt is not called at all when nothing is missing.
#
# Why Debian's containerd 1.6: it is what the package registry offers; kubelet 1.37 still accepts
# a runtime without the RuntimeConfig call (it falls back to its own cgroupDriver setting).
set -euo pipefail

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"
apt_install_missing install-node-deps containerd runc containernetworking-plugins busybox-static iproute2
# The containerd package starts a system-wide containerd where an init system runs; nodes start
# their own, each with its own socket and folders, and never use it.
