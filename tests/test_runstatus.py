"""Run status records, incomplete markers and participant locks."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bids_harmonize import locks, runstatus


def test_record_round_trip(tmp_path):
    rec = runstatus.new_record("sub-01", run_id="r1")
    runstatus.write_status(tmp_path, rec)
    assert runstatus.read_status(tmp_path)[0]["status"] == "running"
    done = runstatus.finish_record(rec, "failed", reasons=["boom"], crash_files=["x/crash.txt"])
    path = runstatus.write_status(tmp_path, done)
    assert path == tmp_path / "logs" / "status" / "sub-01.json"
    data = json.loads(path.read_text())
    assert set(data) >= {"participant", "status", "reasons", "crash_files", "run_id", "started",
                         "finished", "runtime_s"}
    assert "_t0" not in data and data["runtime_s"] >= 0
    assert runstatus.read_status(tmp_path)[0]["reasons"] == ["boom"]
    with pytest.raises(ValueError):
        runstatus.finish_record(rec, "great")


def test_dead_running_record_and_marker_read_as_incomplete(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    rec = runstatus.new_record("02", run_id="r1")
    rec["pid"] = int(dead.stdout)
    runstatus.write_status(tmp_path, rec)
    runstatus.write_status(tmp_path, runstatus.finish_record(runstatus.new_record("03", run_id="r"),
                                                             "ok"))
    runstatus.mark_incomplete(tmp_path, "03", run_id="r")
    runstatus.mark_incomplete(tmp_path, "04", run_id="r")
    (tmp_path / "logs" / "status" / "sub-05.json").write_text("{trunc")
    got = {r["participant"]: r for r in runstatus.read_status(tmp_path)}
    assert {k: v["status"] for k, v in got.items()} == {
        "02": "incomplete", "03": "incomplete", "04": "incomplete", "05": "incomplete"}
    assert all(r["reasons"] for r in got.values())
    assert runstatus.incomplete_participants(tmp_path) == ["03", "04"]
    # a failed participant keeps its status; the marker adds a reason
    runstatus.write_status(tmp_path, runstatus.finish_record(
        runstatus.new_record("06", run_id="r"), "failed", reasons=["node x failed"]))
    runstatus.mark_incomplete(tmp_path, "06", run_id="r")
    (six,) = [r for r in runstatus.read_status(tmp_path) if r["participant"] == "06"]
    assert six["status"] == "failed" and "partial" in six["reasons"][-1]
    assert not runstatus.is_complete(tmp_path, "sub-04")
    assert runstatus.is_complete(tmp_path, "02")


def test_lock_names_holder_and_breaks_stale(tmp_path):
    held = locks.acquire(tmp_path, "01", run_id="first")
    with pytest.raises(locks.LockHeldError, match=r"pid \d+.*run first"):
        locks.acquire(tmp_path, "01", run_id="second")
    held.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path = locks.lock_path(tmp_path, "01")
    info = dict(held.info, pid=int(dead.stdout), token="old")
    path.write_text(json.dumps(info))
    again = locks.acquire(tmp_path, "01", run_id="third")
    assert locks.read_holder(path)["run_id"] == "third"
    info = dict(info, host="elsewhere.example")
    again.release()
    path.write_text(json.dumps(info))
    with pytest.raises(locks.LockHeldError, match="elsewhere.example"):
        locks.acquire(tmp_path, "01", run_id="fourth")
