"""HDF5 file locking (issue 22 item 9): not switched off for the whole process.

The app's only HDF5 files are ANTs composite transforms (``*_xfm.h5``). ANTsPy's HDF5
(ITK's bundled copy) reads ``HDF5_USE_FILE_LOCKING`` once per process; each case runs a
fresh interpreter with the variable as the case needs it. A few seconds each (ANTs import).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

READ = textwrap.dedent("""
    import sys
    from bids_harmonize.registration import _ants
    try:
        _ants().read_transform(sys.argv[1])
    except Exception as exc:
        print("refused:", str(exc).splitlines()[0][:100])
    else:
        print("read")
    import os
    print(os.environ.get("HDF5_USE_FILE_LOCKING"))
""")


@pytest.fixture(scope="module")
def transform(tmp_path_factory) -> Path:
    """An ANTs transform in HDF5, as the registration node writes them."""
    path = tmp_path_factory.mktemp("h5") / "from-T1w_to-template_xfm.h5"
    code = ("import ants, sys\n"
            "ants.write_transform(ants.create_ants_transform(dimension=3), sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=120)
    return path


def _read(path: Path, locking: str | None = None, preload: Path | None = None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HDF5_USE_FILE_LOCKING", "LD_PRELOAD")}
    if locking is not None:
        env["HDF5_USE_FILE_LOCKING"] = locking
    if preload is not None:
        env["LD_PRELOAD"] = str(preload)
    proc = subprocess.run([sys.executable, "-c", READ, str(path)], env=env, capture_output=True,
                          text=True, timeout=120, check=True)
    return proc.stdout.split("\n")[:2]


def test_default_keeps_locking_and_a_users_choice_is_respected(transform):
    """A transform another process holds exclusively (being written) is not read half-way;
    ``HDF5_USE_FILE_LOCKING=FALSE`` set by the user still turns the check off."""
    fd = os.open(transform, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        status, value = _read(transform)
        assert status.startswith("refused") and value == "BEST_EFFORT"
        assert _read(transform, "FALSE") == ["read", "FALSE"]
    finally:
        os.close(fd)


def test_parallel_readers_share_the_lock(transform):
    """Several nodes reading one transform at once: shared locks, no conflict."""
    fd = os.open(transform, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # another reader holds the file
        assert _read(transform) == ["read", "BEST_EFFORT"]
    finally:
        os.close(fd)


def test_file_system_without_locks_is_read(transform, tmp_path):
    """A mount without flock (errno 38, some NFS/Lustre): read all the same by default.

    Simulated with an ``LD_PRELOAD`` flock that fails with ENOSYS; ``TRUE`` shows the
    simulation bites.
    """
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the flock-less LD_PRELOAD shim")
    source = tmp_path / "nolock.c"
    source.write_text("#include <errno.h>\nint flock(int fd, int op) { errno = ENOSYS; "
                      "return -1; }\n")
    shim = tmp_path / "nolock.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(shim), str(source)], check=True,
                   timeout=60)
    assert _read(transform, preload=shim) == ["read", "BEST_EFFORT"]
    assert _read(transform, "TRUE", preload=shim)[0].startswith("refused")


def test_importing_the_app_leaves_hdf5_locking_alone():
    code = ("import os, bids_harmonize.cli.run\n"
            "print(os.environ.get('HDF5_USE_FILE_LOCKING'))\n")
    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "None"
