#!/usr/bin/env bash
# Builds the binaries of a local cluster (kube-apiserver, etcd, and on request kubectl, etcdctl,
# kube-controller-manager, kube-scheduler and kubelet) from Go modules into a cache folder outside
# the repository, and prints that folder on stdout.
# (kubectl is what the demo plan and the benchmarks drive; envtest ignores it. The controllers,
# scheduler and kubelet make a complete cluster: internal/controlplane Options{Controllers, Node}.)
#
# Why from Go modules: the only network here is the module proxy, so nothing prebuilt can be
# downloaded. kube-apiserver lives in k8s.io/kubernetes, whose go.mod points every k8s.io staging
# module at ./staging; a throwaway module requires k8s.io/kubernetes and replaces each staging
# module with its published v0.Y.Z tag. etcd builds from a three-line main around etcdmain.Main.
#
# A second run finds the binaries in the cache and returns at once; a missing or broken cache is
# rebuilt, never relied on.
#
# Usage: hack/build-control-plane.sh [binary...]   (default: kube-apiserver etcd)
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.37.0}
ETCD_VERSION=${ETCD_VERSION:-3.7.0} # the etcd that k8s.io/kubernetes v$K8S_VERSION requires
STAGING_VERSION=0.${K8S_VERSION#1.}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/planrun
bin=$cache/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION
work=$cache/build
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(kube-apiserver etcd)

log() { echo "build-control-plane: $*" >&2; }

# works BINARY: true when the cached binary exists and runs.
works() {
  [ -x "$bin/$1" ] || return 1
  case $1 in
  kubectl) "$bin/$1" version --client >/dev/null 2>&1 ;;
  etcdctl) "$bin/$1" version >/dev/null 2>&1 ;;
  *) "$bin/$1" --version >/dev/null 2>&1 ;;
  esac
}

build_kube() { # build_kube NAME PACKAGE
  local name=$1 pkg=$2 dir=$work/kubernetes-$K8S_VERSION
  mkdir -p "$dir"
  # Every command the cache may build is listed, so that one `go mod tidy` covers them all; a
  # folder prepared for an older list is prepared again.
  local tools
  tools=$(printf '//go:build tools\n\npackage tools\n\nimport (\n')
  for c in kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet; do
    tools+=$(printf '\n\t_ "k8s.io/kubernetes/cmd/%s"' "$c")
  done
  tools+=$(printf '\n)\n')
  if [ ! -f "$dir/.prepared" ] || [ "$(cat "$dir/tools.go" 2>/dev/null)" != "$tools" ]; then
    log "preparing a module for k8s.io/kubernetes v$K8S_VERSION"
    local gomod
    gomod=$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
      sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    {
      echo "module planrun.dev/build/kubernetes"
      echo
      sed -n 's/^go \(.*\)$/go \1/p' "$gomod"
      echo
      echo "require k8s.io/kubernetes v$K8S_VERSION"
      echo
      echo "replace ("
      sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 v'"$STAGING_VERSION"'#p' "$gomod"
      echo ")"
    } >"$dir/go.mod.new"
    mv "$dir/go.mod.new" "$dir/go.mod"
    printf '%s\n' "$tools" >"$dir/tools.go"
    (cd "$dir" && go mod tidy >&2)
    touch "$dir/.prepared"
  fi
  log "building $name v$K8S_VERSION (several minutes the first time)"
  local ldflags="-s -w"
  ldflags+=" -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=${K8S_VERSION%%.*}"
  ldflags+=" -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$bin/.$name.tmp" "$pkg")
  mv "$bin/.$name.tmp" "$bin/$name"
}

build_etcd() { # build_etcd NAME
  local name=$1 dir=$work/etcd-$ETCD_VERSION-$1 mod pkgimport body
  case $name in
  etcd) mod=go.etcd.io/etcd/server/v3 pkgimport=go.etcd.io/etcd/server/v3/etcdmain body='etcdmain.Main(os.Args)' ;;
  etcdctl) mod=go.etcd.io/etcd/etcdctl/v3 pkgimport=go.etcd.io/etcd/etcdctl/v3/ctlv3 body='ctlv3.MustStart(); os.Exit(0)' ;;
  esac
  mkdir -p "$dir"
  # main.go is written every time: a cached module folder must not keep an older main.
  printf 'package main\n\nimport (\n\t"os"\n\n\t"%s"\n)\n\nfunc main() { %s }\n' "$pkgimport" "$body" >"$dir/main.go"
  if [ ! -f "$dir/go.sum" ]; then
    log "preparing a module for $mod v$ETCD_VERSION"
    printf 'module planrun.dev/build/%s\n\ngo 1.25\n\nrequire %s v%s\n' "$name" "$mod" "$ETCD_VERSION" >"$dir/go.mod"
    (cd "$dir" && go mod tidy >&2)
  fi
  log "building $name v$ETCD_VERSION"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/.$name.tmp" .)
  mv "$bin/.$name.tmp" "$bin/$name"
}

mkdir -p "$bin" "$work"
for name in "${wanted[@]}"; do
  if works "$name"; then continue; fi
  case $name in
  kube-apiserver) build_kube kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver ;;
  kubectl | kube-controller-manager | kube-scheduler | kubelet) build_kube "$name" "k8s.io/kubernetes/cmd/$name" ;;
  etcd | etcdctl) build_etcd "$name" ;;
  *) log "unknown binary $name (known: kube-apiserver etcd kubectl etcdctl kube-controller-manager kube-scheduler kubelet)"; exit 2 ;;
  esac
  works "$name" || { log "$bin/$name was built but does not run"; exit 1; }
done
echo "$bin"
