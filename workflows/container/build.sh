#!/usr/bin/env bash
# Build the bids_harmonize image. With --wheelhouse the build runs with --network none and
# installs only from that folder (fill it with wheelhouse.sh); without it, from the indexes.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") [options] [-- ENGINE_BUILD_OPTIONS...]
       $(basename "$0") --print-version

  --base IMAGE          base image (default: the Dockerfile's pinned python:3.11 slim bookworm;
                        make-base.sh makes a local one: localhost/bh-base:bookworm)
  --torch-variant V     cpu or cuda (default: cpu)
  --tag TAG             image tag (default: bids_harmonize:VERSION-VARIANT, e.g. bids_harmonize:0.1.0-cpu)
  --target STAGE        runtime (default) or test (adds pytest and the tests, for CI)
  --wheelhouse DIR      build offline (--network none) from the wheels in DIR
  --templateflow-fetch "TPL ..."   also fetch these TemplateFlow templates (needs network)
  --oci-archive FILE    also write the image to FILE with 'save --format oci-archive'
  --print-version       print the package version (bids_harmonize/__about__.py) and exit
  -h, --help
  -- ...                the rest goes to '\$CONTAINER_ENGINE build' (e.g. --cache-from IMAGE)

environment: CONTAINER_ENGINE=podman|docker (default podman)
Prints the build time and the image size; the last line is the tag.
USAGE
}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
engine=${CONTAINER_ENGINE:-podman}
base=
variant=cpu
tag=
target=runtime
wheelhouse=
tf_fetch=
archive=
extra=()
print_version=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --print-version) print_version=1 ;;
    --) shift; extra=("$@"); break ;;
    --base) base=${2:?}; shift ;;
    --torch-variant) variant=${2:?}; shift ;;
    --tag) tag=${2:?}; shift ;;
    --target) target=${2:?}; shift ;;
    --wheelhouse) wheelhouse=${2:?}; shift ;;
    --templateflow-fetch) tf_fetch=${2:?}; shift ;;
    --oci-archive) archive=${2:?}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "$(basename "$0"): unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# The version comes from the package, never from here.
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/bids_harmonize/__about__.py")
[[ -n $version ]] || { echo "$(basename "$0"): no __version__ in bids_harmonize/__about__.py" >&2; exit 1; }
[[ $print_version -eq 0 ]] || { echo "$version"; exit 0; }

[[ $variant == cpu || $variant == cuda ]] || { echo "--torch-variant must be cpu or cuda" >&2; exit 2; }
[[ $target == runtime || $target == test ]] || { echo "--target must be runtime or test" >&2; exit 2; }
command -v "$engine" >/dev/null || { echo "$(basename "$0"): $engine not found" >&2; exit 1; }
tag=${tag:-bids_harmonize:$version-$variant}
revision=$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)

args=(build --file "$repo/Dockerfile" --target "$target" --tag "$tag"
      --build-arg "TORCH_VARIANT=$variant"
      --build-arg "VERSION=$version"
      --build-arg "REVISION=$revision"
      --build-arg "CREATED=$created"
      --build-arg "IMAGE_TAG=$tag")
[[ -z $base ]] || args+=(--build-arg "BASE_IMAGE=$base")
[[ -z $tf_fetch ]] || args+=(--build-arg "TEMPLATEFLOW_FETCH=$tf_fetch")
if [[ -n $wheelhouse ]]; then
  [[ -d $wheelhouse ]] && compgen -G "$wheelhouse/*.whl" >/dev/null \
    || { echo "$(basename "$0"): no wheels in $wheelhouse (run wheelhouse.sh)" >&2; exit 1; }
  [[ -z $tf_fetch ]] || { echo "--templateflow-fetch needs network: not with --wheelhouse" >&2; exit 2; }
  wheelhouse=$(cd "$wheelhouse" && pwd)
  # podman/buildah reuse a cached RUN --mount layer whatever the mount holds: name the content
  # (wheel names carry their versions; sizes catch a rebuilt wheel of the same name)
  wheelhouse_id=$(cd "$wheelhouse" && stat -c '%n %s' -- *.whl | sha256sum | cut -c1-16)
  args+=(--network none --build-context "wheels=$wheelhouse" --build-arg "WHEELHOUSE_ID=$wheelhouse_id")
fi
if [[ $engine == podman ]]; then
  # the base may be a local image (make-base.sh): never try a registry for it
  [[ -z $base ]] || ! "$engine" image exists "$base" || args+=(--pull=never)
  args+=(--layers)
fi

args+=("${extra[@]}")

start=$(date +%s)
"$engine" "${args[@]}" "$repo"
build_s=$(( $(date +%s) - start ))

label=$("$engine" image inspect --format '{{index .Config.Labels "org.opencontainers.image.version"}}' "$tag")
[[ $label == "$version" ]] || { echo "$(basename "$0"): image label version '$label' != $version" >&2; exit 1; }
size=$("$engine" image inspect --format '{{.Size}}' "$tag")
echo "== built $tag ($target, torch $variant) in ${build_s} s; image size $(( size / 1000000 )) MB"

if [[ -n $archive ]]; then
  rm -f "$archive"
  start=$(date +%s)
  if [[ $engine == podman ]]; then
    "$engine" save --quiet --format oci-archive --output "$archive" "$tag"
  else
    "$engine" save --output "$archive" "$tag"
  fi
  echo "== wrote $archive: $(( $(stat -c %s "$archive") / 1000000 )) MB in $(( $(date +%s) - start )) s"
fi
echo "$tag"
