"""Faults that must not lose state (issue 22 item 6): outputs written atomically, locks
created whole and recovered when empty or stale, work folders locked, and a participant
whose run ended abnormally never left recorded as running."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from fuzz_helpers import error_line, fast_args

from bids_harmonize.interfaces.bids import DerivativesDataSink


def _sink(tmp_path, **inputs):
    src = tmp_path / "in" / "sub-01_ses-petmr_trc-PiB_pet.nii.gz"
    src.parent.mkdir(parents=True, exist_ok=True)
    nb.save(nb.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), src)
    out = tmp_path / "out"
    sink = DerivativesDataSink(base_directory=str(out), source_file=str(src), in_file=str(src),
                               desc="preproc", space="T1w", suffix="pet", datatype="pet",
                               **inputs)
    return sink, out


def test_sink_writes_final_files_and_no_staging_folder(tmp_path):
    sink, out = _sink(tmp_path, TracerName="PiB")
    result = sink.run(cwd=str(tmp_path))
    written = Path(result.outputs.out_file)
    assert written.is_file() and out in written.parents
    assert Path(result.outputs.out_meta).is_file()
    assert json.loads(Path(result.outputs.out_meta).read_text())["TracerName"] == "PiB"
    assert not list(out.glob(".bh-sink-*"))


def test_disk_full_during_a_sink_leaves_no_truncated_file(tmp_path, monkeypatch):
    """Fault injection: the write fails half-way (ENOSPC); nothing is left under a final name."""
    from niworkflows.interfaces import bids as nw_bids

    def half_write(self, runtime):
        target = Path(self.inputs.base_directory) / "sub-01" / "pet" / "half.nii.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"\x1f\x8b" + b"\0" * 100)  # a truncated gzip
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nw_bids.DerivativesDataSink, "_run_interface", half_write)
    sink, out = _sink(tmp_path)
    with pytest.raises(OSError, match="No space left"):
        sink.run(cwd=str(tmp_path))
    assert [p for p in out.rglob("*") if p.is_file()] == []
    assert not list(out.glob(".bh-sink-*"))


# ------------------------------------------------------------------ locks


def test_empty_lock_left_by_a_failed_run_is_recovered(tmp_path, caplog):
    from bids_harmonize.locks import acquire, lock_path

    path = lock_path(tmp_path, "01")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # what disk full at lock time used to leave
    old = time.time() - 3600
    os.utime(path, (old, old))
    with caplog.at_level("WARNING", logger="bids_harmonize.locks"):
        lock = acquire(tmp_path, "01", run_id="r2")
    assert json.loads(path.read_text())["run_id"] == "r2"
    assert any("empty or unreadable" in r.getMessage() for r in caplog.records)
    lock.release()


def test_fresh_empty_lock_is_respected(tmp_path):
    from bids_harmonize.locks import LockHeldError, acquire, lock_path

    path = lock_path(tmp_path, "01")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    with pytest.raises(LockHeldError, match="holder unreadable"):
        acquire(tmp_path, "01", run_id="r2")


def test_disk_full_at_lock_time_leaves_no_lock(tmp_path, monkeypatch):
    """Fault injection: writing the lock's content fails (ENOSPC); no lock file remains,
    and the next run takes the lock (before: a 0-byte lock refused it forever)."""
    import bids_harmonize.locks as locks

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(locks.os, "fsync", full)
    with pytest.raises(locks.LockHeldError, match="No space left"):
        locks.acquire(tmp_path, "01", run_id="r1")
    assert [p.name for p in (tmp_path / "logs" / "locks").iterdir()] == []
    monkeypatch.undo()
    locks.acquire(tmp_path, "01", run_id="r2").release()


def test_lock_is_never_seen_half_written(tmp_path):
    """The content is in place the moment the lock's name exists (hard link of a full file)."""
    from bids_harmonize.locks import acquire, lock_path, read_holder

    lock = acquire(tmp_path, "01", run_id="r1")
    assert read_holder(lock_path(tmp_path, "01"))["run_id"] == "r1"
    assert not list(lock_path(tmp_path, "01").parent.glob(".*.tmp"))
    lock.release()


def test_shared_work_folder_is_locked(bids, tmp_path, run_app):
    """A second run with another output folder but the same work folder is refused."""
    import socket

    from bids_harmonize.app.participant import WORK_LOCK_DIR

    work = tmp_path / "work"
    lock = work / WORK_LOCK_DIR / "sub-01.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                "started": "now", "run_id": "other-run"}))
    out = tmp_path / "out-b"
    code, err = run_app(*fast_args(bids, out, "--participant-label", "01", "-w", work))
    line = error_line(err)
    assert code == 1 and "in work folder" in line and "other-run" in line
    assert not out.exists()  # its own output lock was released and removed
    assert lock.exists()


# ------------------------------------------------------------------ abnormal end of a run


def test_fail_running_marks_only_this_runs_running_records(tmp_path):
    from bids_harmonize import runstatus

    for label, run_id, status in (("01", "r1", "running"), ("02", "r1", "ok"),
                                  ("03", "r0", "running")):
        record = runstatus.new_record(label, run_id=run_id)
        record["status"] = status
        runstatus.write_status(tmp_path, record)
    marked = runstatus.fail_running(tmp_path, ["01", "02", "03", "04"], run_id="r1",
                                    reason="the run ended abnormally (OSError: disk full)")
    assert marked == ["01"]
    record = json.loads(runstatus.status_path(tmp_path, "01").read_text())
    assert record["status"] == "failed" and "disk full" in record["reasons"][-1]
    assert json.loads(runstatus.status_path(tmp_path, "03").read_text())["status"] == "running"


def test_run_ending_abnormally_never_stays_running(bids, tmp_path, run_app, monkeypatch):
    """Fault injection: the run dies after recording its participants (disk full)."""
    import bids_harmonize.app.participant as cli_run
    from bids_harmonize import runstatus

    def dies(config, plans, *args, run_id, **kwargs):
        for plan in plans:
            runstatus.mark_incomplete(config.output_dir, plan.subject, run_id=run_id)
            runstatus.write_status(config.output_dir,
                                   runstatus.new_record(plan.subject, run_id=run_id))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli_run, "run_plans", dies)
    out = tmp_path / "out"
    code, err = run_app(*fast_args(bids, out, "--participant-label", "01"))
    assert code == 1 and "OSError" in error_line(err)
    record = json.loads(runstatus.status_path(out, "01").read_text())
    assert record["status"] == "failed"
    assert "ended abnormally" in record["reasons"][-1]
    assert runstatus.marker_path(out, "01").exists()  # outputs may be partial
    assert not (out / "logs" / "locks" / "sub-01.lock").exists()
