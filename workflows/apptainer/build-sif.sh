#!/usr/bin/env bash
# Convert the bids_harmonize OCI image into an Apptainer/Singularity .sif file.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") SOURCE OUT.sif

SOURCE is one of
  oci-archive://FILE.tar     an archive from 'build.sh --oci-archive' or 'podman save --format oci-archive'
  FILE.tar                   the same (oci-archive:// is added)
  docker-daemon://IMAGE:TAG  an image in the local Docker daemon
  podman://IMAGE:TAG         an image in local podman storage (saved to a temporary OCI archive)
  docker://REPO/IMAGE:TAG    an image in a registry (needs network)

Uses 'apptainer build' (or 'singularity build' when only that exists), then checks the .sif
with 'run --containall --cleanenv OUT.sif --version'.
environment: APPTAINER_TMPDIR / APPTAINER_CACHEDIR as for apptainer (large: several GB)
USAGE
}

case "${1:-}" in -h|--help) usage; exit 0 ;; -*) echo "$(basename "$0"): unknown option '$1'" >&2; usage >&2; exit 2 ;; esac
[[ $# -eq 2 ]] || { usage >&2; exit 2; }
source_ref=$1
sif=$2
[[ $sif == *.sif ]] || { echo "$(basename "$0"): OUT must end in .sif" >&2; exit 2; }

tool=
for candidate in apptainer singularity; do
  if command -v "$candidate" >/dev/null; then tool=$candidate; break; fi
done
if [[ -z $tool ]]; then
  echo "$(basename "$0"): neither apptainer nor singularity is installed (see workflows/apptainer/README.md)" >&2
  exit 1
fi

tmp=
trap '[[ -z $tmp ]] || rm -rf "$tmp"' EXIT
case "$source_ref" in
  oci-archive://*|docker-daemon://*|docker://*) ;;
  podman://*)
    command -v podman >/dev/null || { echo "$(basename "$0"): podman not found" >&2; exit 1; }
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/bh-sif.XXXXXX")
    podman save --quiet --format oci-archive --output "$tmp/image.tar" "${source_ref#podman://}"
    source_ref=oci-archive://$tmp/image.tar ;;
  *.tar)
    [[ -f $source_ref ]] || { echo "$(basename "$0"): $source_ref does not exist" >&2; exit 1; }
    source_ref=oci-archive://$(cd "$(dirname "$source_ref")" && pwd)/$(basename "$source_ref") ;;
  *) echo "$(basename "$0"): unknown SOURCE '$source_ref'" >&2; usage >&2; exit 2 ;;
esac

start=$(date +%s)
"$tool" build --force "$sif" "$source_ref"
echo "== $sif: $(( $(stat -c %s "$sif") / 1000000 )) MB in $(( $(date +%s) - start )) s"
"$tool" run --containall --cleanenv "$sif" --version
