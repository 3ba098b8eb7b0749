# shellcheck shell=bash
# apt_install_missing TAG PACKAGE...: installs the Debian packages not installed yet. Idempotent:
# apt is not called at all when nothing is missing. Without root it says what is missing and
# returns 1. Sourced by the hack/install-*.sh scripts.
apt_install_missing() {
  local tag=$1
  shift
  local missing=() p
  for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "$tag: missing ${missing[*]}; run as root (apt-get install)" >&2
    return 1
  fi
  echo "$tag: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
