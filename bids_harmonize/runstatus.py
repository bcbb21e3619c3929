"""Per-participant run status records and the "incomplete" marker.

Every participant of a ``participant`` run gets one small JSON record under
``<out>/logs/status/sub-<label>.json`` (one file per participant, so SLURM array
tasks never write the same file), written atomically (temporary file, then
``os.replace``). Fields:

``participant``  the label without ``sub-``
``status``       ``ok`` | ``failed`` | ``excluded`` | ``incomplete`` | ``running``
``reasons``      one-line messages (why excluded or failed)
``crash_files``  crash files with tracebacks, as paths relative to ``<out>``
``run_id``, ``started``, ``finished`` (ISO 8601, UTC), ``runtime_s``, ``host``, ``pid``
                 (``runtime_s``: from ``started``; a participant run replaces it with the
                 participant's own time, :class:`bids_harmonize.app.record.Progress`)

A run marks each participant incomplete before it writes anything for it
(``<out>/logs/status/sub-<label>.incomplete``) and removes the marker only when it
finished the participant: without error, or with failed nodes whose crash files it
recorded (every file written is then whole). A killed run, or one whose engine
stopped with nodes unfinished, leaves the marker, so ``group`` and ``train`` can
skip (and list) participants whose derivatives may be partial.
:func:`read_status` reports a ``running`` record whose process is gone, or any
record with the marker left behind by a killed run, as ``incomplete``.

>>> import tempfile
>>> out = Path(tempfile.mkdtemp())
>>> rec = new_record("01", run_id="r1")
>>> _ = write_status(out, rec)
>>> mark_incomplete(out, "01", run_id="r1")
>>> is_complete(out, "01")
False
>>> _ = write_status(out, finish_record(rec, "ok"))
>>> clear_incomplete(out, "01")
>>> is_complete(out, "01"), [(r["participant"], r["status"]) for r in read_status(out)]
(True, [('01', 'ok')])
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from bids_harmonize import safeio

LOGGER = logging.getLogger("bids_harmonize.runstatus")

STATUSES = ("ok", "failed", "excluded", "incomplete", "running")
STATUS_DIR = Path("logs") / "status"
MARKER_SUFFIX = ".incomplete"


def status_dir(out_dir) -> Path:
    """``<out>/logs/status``."""
    return Path(out_dir) / STATUS_DIR


def _label(label: str) -> str:
    return str(label).removeprefix("sub-")


def status_path(out_dir, label: str) -> Path:
    """The record of one participant: ``<out>/logs/status/sub-<label>.json``."""
    return status_dir(out_dir) / f"sub-{_label(label)}.json"


def marker_path(out_dir, label: str) -> Path:
    """The incomplete marker of one participant: ``<out>/logs/status/sub-<label>.incomplete``."""
    return status_dir(out_dir) / f"sub-{_label(label)}{MARKER_SUFFIX}"


def now_iso() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename
    (:func:`bids_harmonize.safeio.atomic_write_text`, private to the user as before).

    A reader never sees a half-written file, even when the writer is killed.
    """
    return safeio.atomic_write_text(path, text, mode=0o600)


#: Space set aside per running participant, so that its final record can be written when
#: the disk has filled up meanwhile (a few records; a page or a block is the unit anyway).
RESERVE_BYTES = 64 << 10


def reserve_path(out_dir, label: str) -> Path:
    """The space reserve of a running participant: ``<out>/logs/status/.sub-<label>.reserve``."""
    return status_dir(out_dir) / f".sub-{_label(label)}.reserve"


def _reserve_space(out_dir, label: str) -> None:
    """Set :data:`RESERVE_BYTES` aside for this participant's final record (best effort)."""
    path = reserve_path(out_dir, label)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError:
        return
    try:
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        except (AttributeError, OSError):  # no fallocate here: write the bytes
            os.ftruncate(fd, 0)
            os.write(fd, b"\0" * RESERVE_BYTES)
    except OSError:
        path.unlink(missing_ok=True)  # no room even for the reserve: nothing kept
    finally:
        os.close(fd)


def new_record(label: str, *, run_id: str, status: str = "running",
               reasons: list[str] | None = None) -> dict:
    """A fresh record for a participant of this run (this host and process)."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    return {
        "participant": _label(label), "status": status, "reasons": list(reasons or []),
        "crash_files": [], "run_id": run_id, "started": now_iso(), "finished": None,
        "runtime_s": None, "host": socket.gethostname(), "pid": os.getpid(),
        "_t0": time.time(),
    }


def finish_record(record: dict, status: str, *, reasons: list[str] | None = None,
                  crash_files: list[str] | None = None) -> dict:
    """The record with its final status, end time and runtime filled in."""
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    done = dict(record)
    done["status"] = status
    done["reasons"] = list(reasons if reasons is not None else record.get("reasons", []))
    done["crash_files"] = list(crash_files if crash_files is not None
                               else record.get("crash_files", []))
    done["finished"] = now_iso()
    t0 = record.get("_t0")
    done["runtime_s"] = round(time.time() - t0, 1) if t0 else None
    return done


def write_status(out_dir, record: dict) -> Path:
    """Write (atomically) one participant's record; return its path.

    A ``running`` record sets a little space aside (:func:`reserve_path`); a final record
    written on a full disk gives that space back and tries once more, so a run that fills
    the disk still records how its participants ended instead of leaving them "running".
    The reserve is removed once the final record is written.
    """
    clean = {k: v for k, v in record.items() if not k.startswith("_")}
    label = clean["participant"]
    path, text = status_path(out_dir, label), json.dumps(clean, indent=2) + "\n"
    if clean.get("status") == "running":
        written = atomic_write_text(path, text)
        _reserve_space(out_dir, label)
        return written
    reserve = reserve_path(out_dir, label)
    try:
        written = atomic_write_text(path, text)
    except safeio.DiskFullError:
        if not reserve.exists():
            raise
        reserve.unlink()
        LOGGER.warning("disk full: the space set aside for sub-%s's status record is used for "
                       "it", label)
        written = atomic_write_text(path, text)
    reserve.unlink(missing_ok=True)
    return written


def fail_running(out_dir, labels, *, run_id: str, reason: str) -> list[str]:
    """Mark this run's records still ``running`` as ``failed`` with ``reason``; never raises.

    Called when a run ends abnormally (an exception, SIGTERM), so that no participant is
    left recorded as running; the incomplete markers stay (the outputs may be partial).
    Returns the participants marked.
    """
    marked = []
    for label in labels:
        path = status_path(out_dir, label)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if record.get("status") != "running" or record.get("run_id") != run_id:
                continue
            record.update(status="failed", reasons=[*record.get("reasons", []), reason],
                          finished=now_iso())
            write_status(out_dir, record)
            marked.append(_label(label))
        except (OSError, ValueError, AttributeError):
            continue  # nothing recorded (or nowhere to write): read_status reports it
    return marked


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (another user's counts as alive; a
    number no process id can take, as not).

    >>> pid_alive(os.getpid()), pid_alive(2**40)
    (True, False)
    """
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _process_alive(host: str | None, pid) -> bool | None:
    """Whether a process of this host is alive; None when it runs on another host."""
    if host != socket.gethostname() or not isinstance(pid, int):
        return None
    return pid_alive(pid)


def read_status(out_dir) -> list[dict]:
    """Every participant's record under ``<out>/logs/status``, sorted by participant.

    A ``running`` record whose process (on this host) is gone, a record left with
    its incomplete marker, or a marker with no record are reported as
    ``incomplete`` with a reason. Unreadable records are reported as
    ``incomplete`` too, never raised.
    """
    folder = status_dir(out_dir)
    if not folder.is_dir():
        return []
    records = {}
    for path in sorted(folder.glob("sub-*.json")):
        label = path.name[len("sub-"):-len(".json")]
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or record.get("status") not in STATUSES:
                raise ValueError("not a status record")
        except (OSError, ValueError) as exc:
            LOGGER.warning("Unreadable status record %s (%s)", path, exc)
            record = {"participant": label, "status": "incomplete",
                      "reasons": [f"unreadable status record {path.name}"], "crash_files": [],
                      "run_id": None, "started": None, "finished": None, "runtime_s": None}
        record.setdefault("reasons", [])
        record.setdefault("crash_files", [])
        record["participant"] = str(record.get("participant") or label)
        if record["status"] == "running" and _process_alive(record.get("host"),
                                                            record.get("pid")) is False:
            record["status"] = "incomplete"
            record["reasons"] = [*record["reasons"],
                                 f"run {record.get('run_id')} ended without finishing "
                                 "this participant (killed?)"]
        elif record["status"] != "running" and marker_path(out_dir, label).exists():
            if record["status"] == "ok":
                record["status"] = "incomplete"
            record["reasons"] = [*record["reasons"],
                                 "outputs may be partial: a run did not finish writing them"]
        records[label] = record
    for marker in sorted(folder.glob(f"sub-*{MARKER_SUFFIX}")):
        label = marker.name[len("sub-"):-len(MARKER_SUFFIX)]
        if label not in records:
            records[label] = {"participant": label, "status": "incomplete",
                              "reasons": ["outputs may be partial: a run did not finish"],
                              "crash_files": [], "run_id": None, "started": None,
                              "finished": None, "runtime_s": None}
    return [records[k] for k in sorted(records)]


def mark_incomplete(out_dir, label: str, *, run_id: str) -> None:
    """Mark a participant's derivatives as being written (before anything is written)."""
    info = {"participant": _label(label), "run_id": run_id, "host": socket.gethostname(),
            "pid": os.getpid(), "started": now_iso()}
    atomic_write_text(marker_path(out_dir, label), json.dumps(info) + "\n")


def clear_incomplete(out_dir, label: str) -> None:
    """Remove the marker: only a run that finished the participant calls this."""
    marker_path(out_dir, label).unlink(missing_ok=True)


def is_complete(out_dir, label: str) -> bool:
    """False while a participant carries the incomplete marker (a run started, never finished)."""
    return not marker_path(out_dir, label).exists()


def incomplete_participants(out_dir) -> list[str]:
    """Labels (without ``sub-``) of participants whose outputs are marked incomplete."""
    folder = status_dir(out_dir)
    if not folder.is_dir():
        return []
    return sorted(m.name[len("sub-"):-len(MARKER_SUFFIX)]
                  for m in folder.glob(f"sub-*{MARKER_SUFFIX}"))
