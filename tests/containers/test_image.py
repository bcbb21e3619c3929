"""The OCI image, built and run for real with podman (integration: needs --integration).

Builds the image offline (--network none, from a wheelhouse) on a Debian base made
locally with mmdebstrap, by calling workflows/container/*.sh; then runs it the way a
shared cluster would: read-only root file system, no network, a non-root user, a
tmpfs /tmp, and the bind layout of workflows/apptainer/README.md (/data read-only,
/out, /work). The demo's output file list must equal that of a run outside the
container on the same dataset.

Reusable between runs (under $BH_CONTAINER_CACHE, default /tmp/bids_harmonize-containers):
the wheelhouse, the base image (made when missing) and the engine's layer cache.
Wall times of each step go to <cache>/timings.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

import bids_harmonize

pytestmark = [pytest.mark.slow, pytest.mark.container]

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "workflows" / "container"
ENGINE = os.environ.get("CONTAINER_ENGINE", "podman")
BASE = "localhost/bh-base:bookworm"
TAG = "localhost/bids_harmonize:integration"
CACHE = Path(os.environ.get("BH_CONTAINER_CACHE", Path(tempfile.gettempdir()) / "bids_harmonize-containers"))
DEMO_ARGS = ["--output-spaces", "MNI152NLin2009aSym", "T1w", "--sloppy"]
# what run-demo.sh and the Apptainer instructions use: no network, read-only image, tmpfs /tmp
LOCKED = ["run", "--rm", "--read-only", "--network", "none", "--tmpfs", "/tmp:rw,exec,mode=1777"]

TIMINGS: dict[str, float] = {}


def _run(cmd, *, timeout=900, check=True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout,
                            **kwargs)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {result.returncode}:\n"
                    f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def _timed(name: str, cmd, **kwargs) -> subprocess.CompletedProcess:
    start = time.monotonic()
    result = _run(cmd, **kwargs)
    TIMINGS[name] = round(time.monotonic() - start, 1)
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "timings.json").write_text(json.dumps(TIMINGS, indent=2))
    return result


def _manifest(out: Path) -> list[str]:
    return _run([SCRIPTS / "run-demo.sh", "--manifest", out]).stdout.splitlines()


def _readable_copy(src: Path, dst: Path) -> Path:
    """A copy any user can read: pytest's folders are 0700 and the container is not root."""
    shutil.copytree(src, dst)
    for path in [dst, *dst.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dst


@pytest.fixture(scope="module")
def image() -> str:
    _run([SCRIPTS / "setup-podman.sh"], timeout=600)
    if _run([ENGINE, "image", "exists", BASE], check=False).returncode != 0:
        _timed("make_base", [SCRIPTS / "make-base.sh", BASE])
    wheelhouse = CACHE / "wheelhouse"
    _timed("wheelhouse", [SCRIPTS / "wheelhouse.sh", wheelhouse])
    archive = CACHE / "bids_harmonize.oci.tar"
    build = _timed("build", [SCRIPTS / "build.sh", "--base", BASE, "--wheelhouse", wheelhouse,
                             "--tag", TAG, "--oci-archive", archive], timeout=1800)
    assert build.stdout.splitlines()[-1] == TAG
    return TAG


def test_version_is_the_package_version(image):
    result = _run([ENGINE, *LOCKED, "--user", "1000:1000", image, "--version"])
    assert result.stdout.strip() == f"bids_harmonize {bids_harmonize.__version__}"
    labels = json.loads(_run([ENGINE, "image", "inspect", "--format", "{{json .Config.Labels}}",
                              image]).stdout)
    assert labels["org.opencontainers.image.version"] == bids_harmonize.__version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert len(labels["org.opencontainers.image.revision"]) == 40


def test_image_config(image):
    config = json.loads(_run([ENGINE, "image", "inspect", "--format", "{{json .Config}}", image]).stdout)
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["bids_harmonize"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["NIPYPE_NO_ET"] == "1" and env["TEMPLATEFLOW_HOME"] == "/opt/templateflow"
    assert env["BIDS_HARMONIZE_IMAGE"] == TAG
    # the template the demo needs is in the image, readable by anyone, and nothing downloads it
    found = _run([ENGINE, *LOCKED, "--user", "4242:4242", "--entrypoint", "python", image, "-c",
                  "from bids_harmonize.templates import get_template; "
                  "print(get_template('MNI152NLin2009aSym').t1w)"])
    assert found.stdout.strip().startswith("/opt/templateflow/tpl-MNI152NLin2009aSym/")


def test_oci_archive_is_reimportable(image):
    archive = CACHE / "bids_harmonize.oci.tar"
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        assert {"index.json", "oci-layout"} <= names, sorted(names)[:10]
        index = json.load(tar.extractfile("index.json"))
    (manifest,) = index["manifests"]
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["annotations"]["org.opencontainers.image.ref.name"] == image
    image_id = _run([ENGINE, "image", "inspect", "--format", "{{.Id}}", image]).stdout.strip()
    # load it into a separate, empty image store (the main one keeps its layer cache) and run it
    store = Path(tempfile.mkdtemp(prefix="bh-store-"))  # podman: runroot under 50 characters
    other = [ENGINE, "--root", store / "root", "--runroot", store / "run"]
    try:
        loaded = _run([*other, "load", "--input", archive], timeout=600)
        assert image in loaded.stdout + loaded.stderr
        assert _run([*other, "image", "inspect", "--format", "{{.Id}}", image]).stdout.strip() == image_id
        version = _run([*other, *LOCKED, "--user", "1000:1000", image, "--version"]).stdout.strip()
        assert version == f"bids_harmonize {bids_harmonize.__version__}"
    finally:
        _run([*other, "rmi", "--all", "--force"], check=False)
        _run(["umount", "--recursive", "--quiet", store / "root" / "overlay"], check=False)
        shutil.rmtree(store, ignore_errors=True)


@pytest.fixture(scope="module")
def demo_dataset(synth_bids, tmp_path_factory) -> Path:
    return _readable_copy(synth_bids, tmp_path_factory.mktemp("demo") / "bids")


@pytest.fixture(scope="module")
def container_demo(image, demo_dataset, tmp_path_factory) -> Path:
    outdir = tmp_path_factory.mktemp("container-demo")
    _timed("demo_in_container", [SCRIPTS / "run-demo.sh", "--bids", demo_dataset, image, outdir],
           timeout=1800)
    times = dict(line.split() for line in (outdir / "times.txt").read_text().splitlines())
    TIMINGS.update({f"container_{k}": float(v) for k, v in times.items()})
    return outdir


@pytest.fixture(scope="module")
def host_demo(demo_dataset, templateflow_home, tmp_path_factory) -> Path:
    outdir = tmp_path_factory.mktemp("host-demo")
    env = {**os.environ, "TEMPLATEFLOW_HOME": str(templateflow_home)}
    program = shutil.which("bids_harmonize")
    assert program, "bids_harmonize is not installed in this environment"
    _timed("host_participant", [program, demo_dataset, outdir / "out", "participant", *DEMO_ARGS,
                                "-w", outdir / "work"], env=env, timeout=1800)
    _timed("host_group", [program, demo_dataset, outdir / "out", "group"], env=env)
    return outdir / "out"


def test_demo_in_locked_down_container_matches_a_host_run(container_demo, host_demo):
    inside = (container_demo / "manifest.txt").read_text().splitlines()
    assert inside == _manifest(container_demo / "out")
    assert "group/group_report.html" in inside and "sub-02.html" in inside
    assert inside == _manifest(host_demo)
    # and what CI's demo job diffs against is still what a run writes
    assert inside == (SCRIPTS / "demo-manifest.txt").read_text().splitlines()
    description = json.loads((container_demo / "out" / "dataset_description.json").read_text())
    assert description["GeneratedBy"][0]["Container"] == {"Type": "docker", "Tag": TAG}


@pytest.mark.parametrize("mount", ["root-owned", "read-only"])
def test_unwritable_output_is_a_one_line_error(image, demo_dataset, tmp_path, mount):
    out = tmp_path / "out"
    out.mkdir(mode=0o755)  # root's: the container's user 1000 cannot write it
    volume = f"{out}:/out:ro" if mount == "read-only" else f"{out}:/out"
    if mount == "read-only":
        os.chown(out, 1000, 1000)
    result = _run([ENGINE, *LOCKED, "--user", "1000:1000", "-v", f"{demo_dataset}:/data:ro", "-v", volume,
                   image, "/data", "/out", "participant", *DEMO_ARGS], check=False)
    assert result.returncode != 0
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and "/out" in lines[0] and "not writable" in lines[0], lines
    assert "Traceback" not in result.stderr


def test_any_uid_as_under_apptainer(image, container_demo, demo_dataset, tmp_path):
    """Apptainer runs the image as the calling user, with its own HOME: a uid that the image
    does not know, with HOME elsewhere, runs the group level on a copy of the outputs."""
    out = tmp_path / "out"
    shutil.copytree(container_demo / "out", out)
    shutil.rmtree(out / "group")
    for path in [out, *out.rglob("*")]:
        os.chown(path, 4242, 4242)
    _run([ENGINE, *LOCKED, "--user", "4242:4242", "--tmpfs", "/home/alice:rw,mode=1777",
          "-e", "HOME=/home/alice", "-v", f"{demo_dataset}:/data:ro", "-v", f"{out}:/out",
          image, "/data", "/out", "group"])
    assert (out / "group" / "group_report.html").is_file()
    assert _manifest(out) == (container_demo / "manifest.txt").read_text().splitlines()
