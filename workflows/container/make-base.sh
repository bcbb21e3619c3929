#!/usr/bin/env bash
# Make a local base image without any container registry: a minimal Debian bookworm root
# file system with Python 3.11 (bookworm's python3, the same minor version as the wheels)
# from the Debian package mirror (mmdebstrap), imported into the container engine.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") [TAG]

Builds TAG (default: localhost/bh-base:bookworm) with mmdebstrap --variant=minbase from the
host's apt sources and imports it with \$CONTAINER_ENGINE (podman|docker, default podman).

environment:
  CONTAINER_ENGINE   podman (default) or docker
  APT_SOURCES        apt sources file for mmdebstrap (default /etc/apt/sources.list.d/debian.sources)
  SUITE              Debian suite (default bookworm)
USAGE
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  -*) echo "$(basename "$0"): unknown option '$1'" >&2; usage >&2; exit 2 ;;
esac
[[ $# -le 1 ]] || { usage >&2; exit 2; }
tag=${1:-localhost/bh-base:bookworm}
engine=${CONTAINER_ENGINE:-podman}
sources=${APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
suite=${SUITE:-bookworm}

for tool in mmdebstrap "$engine"; do
  command -v "$tool" >/dev/null || { echo "$(basename "$0"): $tool not found (see setup-podman.sh)" >&2; exit 1; }
done
[[ -r $sources ]] || { echo "$(basename "$0"): apt sources file $sources not readable" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bh-base.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

start=$(date +%s)
# python3-pip is for the build stage; the runtime only needs python3 + venv.
mmdebstrap --quiet --variant=minbase \
  --include=python3,python3-venv,python3-pip,ca-certificates \
  --aptopt='APT::Install-Recommends "false"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
  "$suite" "$tmp/rootfs.tar" "$sources"
"$engine" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debian $suite minbase + python3 (mmdebstrap, $(basename "$sources"))" \
  "$tmp/rootfs.tar" "$tag" >/dev/null
echo "== $tag: $("$engine" run --rm --network none "$tag" python3 --version) in $(( $(date +%s) - start )) s"
