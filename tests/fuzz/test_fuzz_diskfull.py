"""A real full disk and a real kill (issue 22 item 6): the output folder on a small tmpfs.

The monkeypatched versions are in test_fuzz_faults.py; here the kernel says "No space left
on device" and the app is killed with SIGKILL while it writes its outputs. Mounting a
tmpfs needs root (or CAP_SYS_ADMIN): the tests skip, saying so, where it is refused.
Processing one participant takes ~40 s (``--sloppy``, no harmonization); the participant
tests share one work folder, so the later runs only write outputs.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest
from fuzz_helpers import error_line, fast_args
from test_fuzz_kill import _kill, _run, _start, _wait_for

from bids_harmonize import locks, runstatus


def _mount(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root: the real disk-full tests run as root only")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(folder)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or proc.returncode}): "
                    "a container without CAP_SYS_ADMIN")


def _resize(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True,
                   capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """``mount(size)`` puts a tmpfs of that size on ``tmp_path/disk``; unmounted after."""
    folder = tmp_path / "disk"
    mounted = []

    def mount(size: str) -> Path:
        _mount(folder, size)
        mounted.append(folder)
        return folder

    yield mount
    for path in mounted:
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture(scope="module")
def shared_work(tmp_path_factory) -> Path:
    """One work folder for the participant runs of this module (the cache survives)."""
    return tmp_path_factory.mktemp("work") / "work"


def _outputs_are_whole(out: Path) -> None:
    """No truncated file under a final name, no staging or temporary file left."""
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".bh-sink-")
                 or p.name.endswith(".tmp")]
    assert leftovers == [], leftovers
    for path in out.rglob("*"):
        if not path.is_file() or path.name.startswith(".sub-"):  # status reserves
            continue
        data = path.read_bytes()
        assert data, f"empty file {path}"
        if path.name.endswith(".gz"):
            gzip.decompress(data)  # a cut gzip raises
        elif path.suffix == ".json":
            json.loads(data)
        elif path.suffix == ".svg":
            assert data.rstrip().endswith(b"</svg>"), path
        elif path.suffix == ".html":
            assert b"</html>" in data[-500:], path


def _never_running(out: Path) -> None:
    for path in runstatus.status_dir(out).glob("sub-*.json"):
        assert json.loads(path.read_text())["status"] != "running", path.read_text()
    assert all(r["status"] != "running" for r in runstatus.read_status(out))
    assert not list((out / "logs" / "locks").glob("*.lock"))


def _summary_line(err: str) -> str:
    """The app's own closing line (not a log line): exactly one."""
    lines = [line for line in err.splitlines() if line.startswith("bids_harmonize:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def test_disk_full_before_the_run_is_one_line_and_leaves_no_lock(bids, tmp_path, small_disk,
                                                                 templateflow_home):
    disk = small_disk("256k")
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:  # fill the disk to the last block
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    out = disk / "out"
    proc = _run(*fast_args(bids, out, "--participant-label", "01", "-w", tmp_path / "work"))
    assert proc.returncode == 1
    line = error_line(proc.stderr)
    assert "No space left on device" in line and "lock" in line
    assert not list(out.rglob("*.lock")) and not list(out.rglob("sub-*.json"))
    filler.unlink()  # space freed: the lock can be taken
    locks.acquire(out, "01", run_id="after").release()


@pytest.mark.slow
def test_disk_filling_during_a_participant_run(bids, small_disk, shared_work, templateflow_home):
    """1 MB for ~50 MB of outputs: the sinks fail one after the other."""
    disk = small_disk("1m")
    out = disk / "out"
    args = fast_args(bids, out, "--participant-label", "01", "--sloppy", "--nprocs", "1",
                     "-w", shared_work)
    proc = _run(*args, timeout=600)
    assert proc.returncode == 1
    line = _summary_line(proc.stderr)
    # the closing line names the participant and says why (its first recorded reason)
    assert "sub-01" in line and "failed" in line and "no space left" in line.lower(), line
    _outputs_are_whole(out)
    _never_running(out)
    (record,) = runstatus.read_status(out)
    assert record["status"] == "failed"
    assert any("No space left on device" in r for r in record["reasons"]), record
    # space freed: the rerun takes the lock, writes everything from the cached work
    _resize(disk, "256m")
    again = _run(*args, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    _outputs_are_whole(out)
    (record,) = runstatus.read_status(out)
    assert record["status"] == "ok" and runstatus.is_complete(out, "01")
    assert not runstatus.reserve_path(out, "01").exists()


@pytest.mark.slow
def test_kill_while_outputs_are_written(bids, tmp_path, shared_work, templateflow_home):
    """SIGKILL once the first derivative is in place: whole files only under final names,
    the participant reads as incomplete (never running), the lock is taken over, and the
    rerun completes and removes the killed sinks' staging folders."""
    out = tmp_path / "out"
    args = fast_args(bids, out, "--participant-label", "01", "--sloppy", "--nprocs", "1",
                     "-w", shared_work)
    first = _start(*args)
    try:
        _wait_for(lambda: any((out / "sub-01").rglob("*.nii.gz")), first, 300)
    finally:
        _kill(first)
    for path in (out / "sub-01").rglob("*.gz"):  # final names: whole files only
        gzip.decompress(path.read_bytes())
    (record,) = runstatus.read_status(out)
    assert record["status"] == "incomplete" and not runstatus.is_complete(out, "01")
    again = _run(*args, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    _outputs_are_whole(out)  # no staging folder left either
    (record,) = runstatus.read_status(out)
    assert record["status"] == "ok" and runstatus.is_complete(out, "01")


# ------------------------------------------------------------------ the pieces, without root


def test_final_record_uses_the_space_set_aside(tmp_path, monkeypatch):
    """A participant's final record is written on a full disk from its reserve."""
    import errno

    from bids_harmonize import safeio

    record = runstatus.new_record("01", run_id="r1")
    runstatus.write_status(tmp_path, record)
    reserve = runstatus.reserve_path(tmp_path, "01")
    assert reserve.stat().st_size == runstatus.RESERVE_BYTES
    calls = []
    original = safeio.atomic_write_bytes

    def full_once(path, data, **kw):
        calls.append(path)
        if len(calls) == 1:  # the disk is full until the reserve is given back
            raise safeio.DiskFullError(errno.ENOSPC, "No space left on device", str(path))
        assert not reserve.exists()
        return original(path, data, **kw)

    monkeypatch.setattr(safeio, "atomic_write_bytes", full_once)
    runstatus.write_status(tmp_path, runstatus.finish_record(record, "failed", reasons=["x"]))
    assert len(calls) == 2
    assert json.loads(runstatus.status_path(tmp_path, "01").read_text())["status"] == "failed"
    assert not reserve.exists()


def test_disk_full_is_a_disk_full_error_naming_the_file(tmp_path, monkeypatch):
    import errno

    from bids_harmonize import safeio

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safeio.os, "fsync", no_space)
    with pytest.raises(safeio.DiskFullError) as info:
        safeio.atomic_write_text(tmp_path / "a.tsv", "x")
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert str(info.value).startswith(f"no space left on device writing {tmp_path / 'a.tsv'}")
    assert list(tmp_path.iterdir()) == []


def test_nipype_crash_file_is_written_whole(tmp_path):
    """A crash file that fails while written leaves nothing under its name (was: empty)."""
    from nipype.pipeline.plugins import tools

    from bids_harmonize.execution import atomic_crash_files

    original = tools.crash2txt
    with atomic_crash_files():
        tools.crash2txt(str(tmp_path / "crash-ok.txt"), {"traceback": ["Traceback\n", "E\n"]})
        with pytest.raises(TypeError):  # fails after the file was opened
            tools.crash2txt(str(tmp_path / "crash-bad.txt"), {"traceback": ["a", None]})
    assert tools.crash2txt is original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crash-ok.txt"]
    assert (tmp_path / "crash-ok.txt").read_text() == "Traceback\nE\n"


def test_stale_staging_folder_of_a_killed_sink_is_removed(tmp_path):
    from bids_harmonize.interfaces.bids import _remove_stale_staging, _staging_prefix

    dead = tmp_path / f"{_staging_prefix()}999999999-x"
    (dead / "sub-01").mkdir(parents=True)
    live = tmp_path / f"{_staging_prefix()}{os.getpid()}-x"
    other_host = tmp_path / ".bh-sink-otherhost-123-x"
    live.mkdir()
    other_host.mkdir()
    assert _remove_stale_staging(tmp_path) == [dead]
    assert live.exists() and other_host.exists()


def test_disk_full_is_one_line_not_called_a_bug(bids, tmp_path, run_app, monkeypatch):
    import errno

    import bids_harmonize.app.participant as participant
    from bids_harmonize.safeio import DiskFullError

    def full(config, run_id):
        raise DiskFullError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.html"))

    monkeypatch.setattr(participant, "run_participant", full)
    code, err = run_app(*fast_args(bids, tmp_path / "out"))
    line = error_line(err)
    assert code == 1 and "no space left on device writing" in line
    assert "this is a bug" not in line
