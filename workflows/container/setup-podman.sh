#!/usr/bin/env bash
# Install podman/buildah/runc/mmdebstrap (Debian) when missing and write the containers.conf
# this kind of VM needs: fixed ulimits (the VM cannot raise rlimits, so podman's default
# nofile/nproc requests fail) and runc as the OCI runtime (cgroups are hybrid; crun refuses them).
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") [--user] [--no-install]

  --user        write \$XDG_CONFIG_HOME/containers/containers.conf (default: /etc/containers/containers.conf)
  --no-install  do not apt-get install missing tools; fail if one is missing
USAGE
}

scope=system
install=1
while [[ $# -gt 0 ]]; do
  case "$1" in
    --user) scope=user ;;
    --no-install) install=0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "$(basename "$0"): unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

missing=()
for tool in podman buildah runc mmdebstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $install -eq 0 ]]; then
    echo "$(basename "$0"): missing: ${missing[*]}" >&2
    exit 1
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "$(basename "$0"): installing ${missing[*]} needs root (apt-get)" >&2
    exit 1
  fi
  echo "== apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends podman buildah runc mmdebstrap uidmap slirp4netns fuse-overlayfs
fi

if [[ $scope == user ]]; then
  conf="${XDG_CONFIG_HOME:-$HOME/.config}/containers/containers.conf"
else
  conf=/etc/containers/containers.conf
fi
mkdir -p "$(dirname "$conf")"
if [[ -f $conf ]] && grep -q 'bids_harmonize: setup-podman.sh' "$conf"; then
  echo "== $conf already written by this script"
else
  if [[ -f $conf ]]; then
    cp "$conf" "$conf.bak.$(date +%s)"
    echo "== kept the previous $conf as $conf.bak.*"
  fi
  cat > "$conf" <<CONF
# bids_harmonize: setup-podman.sh
# The VM cannot raise rlimits: ask for limits it already allows.
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

# Hybrid cgroups: crun refuses them, runc works.
[engine]
runtime = "runc"
CONF
  echo "== wrote $conf"
fi

podman --version
podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupsVersion}} {{.Store.GraphDriverName}}'
