#!/usr/bin/env bash
# The README's demo inside the image, locked down as on a shared cluster: read-only root file
# system, no network, a non-root user, a tmpfs /tmp, and only the output and work folders
# writable (the bind layout of the Apptainer instructions: /data read-only, /out, /work).
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") [--bids DIR] [--synth-with image|host] IMAGE OUTDIR
       $(basename "$0") --manifest DERIVATIVES_DIR

Runs, inside IMAGE: bids_harmonize-synth (2 subjects, PiB, seed 0) unless --bids is given,
then 'participant' (--output-spaces MNI152NLin2009aSym T1w --sloppy) and 'group'. Writes
  OUTDIR/bids            the simulated dataset (unless --bids)
  OUTDIR/out             the derivatives
  OUTDIR/work            Nipype's work folder
  OUTDIR/manifest.txt    the derivatives' file list (see --manifest)
  OUTDIR/times.txt       wall time of each step in seconds

  --bids DIR             use this BIDS dataset (mounted read-only) instead of simulating one
  --synth-with WHERE     simulate with the image (default) or with the host's bids_harmonize-synth
  --manifest DIR         print the normalised file list of a derivatives folder and exit:
                         sorted relative paths; the only normalisation is that the run-stamped
                         logs/config-<date>-<time>_<id>.toml becomes logs/config-RUN.toml

environment: CONTAINER_ENGINE=podman|docker (default podman); RUN_AS=UID:GID (default 1000:1000,
             the image's user; a rootless engine maps the caller instead)
USAGE
}

manifest() {
  (cd "$1" && find . -type f -printf '%P\n') \
    | sed -E 's#^logs/config-[0-9]{8}-[0-9]{6}_[0-9a-f]+\.toml$#logs/config-RUN.toml#' \
    | LC_ALL=C sort
}

bids=
synth_with=image
positional=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --manifest) [[ -d ${2:-} ]] || { echo "--manifest needs a folder" >&2; exit 2; }; manifest "$2"; exit 0 ;;
    --bids) bids=${2:?--bids needs a folder}; shift ;;
    --synth-with) synth_with=${2:?}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "$(basename "$0"): unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) positional+=("$1") ;;
  esac
  shift
done
[[ ${#positional[@]} -eq 2 ]] || { usage >&2; exit 2; }
image=${positional[0]}
outdir=${positional[1]}
[[ $synth_with == image || $synth_with == host ]] || { echo "--synth-with: image or host" >&2; exit 2; }
engine=${CONTAINER_ENGINE:-podman}
command -v "$engine" >/dev/null || { echo "$(basename "$0"): $engine not found" >&2; exit 1; }

mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
mkdir -p "$outdir/out" "$outdir/work"

# Who runs inside: the image's user (rootful engine: make the writable folders theirs), or,
# with a rootless podman, the caller mapped to the same uid inside (--userns keep-id).
run_as=${RUN_AS:-1000:1000}
userns=()
if [[ $(id -u) -eq 0 ]]; then
  chown "$run_as" "$outdir/out" "$outdir/work"
elif [[ $engine == podman ]]; then
  run_as="$(id -u):$(id -g)"
  userns=(--userns keep-id)
else
  run_as="$(id -u):$(id -g)"
fi
locked=(run --rm --read-only --network none --user "$run_as" "${userns[@]}" --tmpfs /tmp:rw,exec,mode=1777)

: > "$outdir/times.txt"
timed() {  # timed NAME COMMAND...: run, append "NAME SECONDS" to times.txt
  local name=$1 start
  shift
  start=$EPOCHREALTIME
  "$@"
  awk -v n="$name" -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%s %.1f\n", n, b - a }' \
    >> "$outdir/times.txt"
}

if [[ -z $bids ]]; then
  bids=$outdir/bids
  mkdir -p "$bids"
  if [[ $synth_with == host ]]; then
    timed synth bids_harmonize-synth "$bids" --subjects 2 --tracers PiB --seed 0 --overwrite
  else
    # the simulator writes next to its output folder, then renames: mount OUTDIR itself
    [[ $(id -u) -ne 0 ]] || chown "$run_as" "$outdir" "$bids"
    timed synth "$engine" "${locked[@]}" -v "$outdir:/synth" --entrypoint bids_harmonize-synth \
      "$image" /synth/bids --subjects 2 --tracers PiB --seed 0 --overwrite
  fi
fi
[[ -f $bids/dataset_description.json ]] || { echo "$(basename "$0"): $bids is not a BIDS dataset" >&2; exit 1; }
bids=$(cd "$bids" && pwd)

mounts=(-v "$bids:/data:ro" -v "$outdir/out:/out" -v "$outdir/work:/work")
timed participant "$engine" "${locked[@]}" "${mounts[@]}" "$image" /data /out participant \
  --output-spaces MNI152NLin2009aSym T1w --sloppy -w /work
timed group "$engine" "${locked[@]}" "${mounts[@]}" "$image" /data /out group

manifest "$outdir/out" > "$outdir/manifest.txt"
echo "== $(wc -l < "$outdir/manifest.txt") files listed in $outdir/manifest.txt; seconds: $(tr '\n' ' ' < "$outdir/times.txt")"
