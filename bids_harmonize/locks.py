"""Per-participant locks: two runs never write the same participant at once.

A lock is a file ``<out>/logs/locks/sub-<label>.lock`` created with
``O_CREAT | O_EXCL`` (atomic on local file systems and on NFSv3+), holding the
host, process id, start time and run id of its holder. A second run that finds
it says who holds it. A lock left by a dead process of this host (a killed
run) is stale: it is broken and taken over, with a warning. A lock of another
host cannot be checked from here; the message names the file to remove when
that host's run is known to be gone.

>>> import tempfile
>>> out = Path(tempfile.mkdtemp())
>>> lock = acquire(out, "01", run_id="r1")
>>> try:
...     acquire(out, "01", run_id="r2")
... except LockHeldError as exc:
...     print("held" in str(exc))
True
>>> lock.release()
>>> acquire(out, "01", run_id="r2").release()
"""

from __future__ import annotations

import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from bids_harmonize.runstatus import now_iso

LOGGER = logging.getLogger("bids_harmonize.locks")
LOCK_DIR = Path("logs") / "locks"


class LockHeldError(RuntimeError):
    """Another run holds the participant's lock; the message says who."""


def lock_path(out_dir, label: str) -> Path:
    return Path(out_dir) / LOCK_DIR / f"sub-{str(label).removeprefix('sub-')}.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(path: Path) -> dict:
    """What a lock file says about its holder (empty when unreadable)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def describe_holder(info: dict) -> str:
    return (f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, "
            f"since {info.get('started', '?')}, run {info.get('run_id', '?')}")


@dataclass
class ParticipantLock:
    """A held lock; :meth:`release` removes it (only when it is still ours)."""

    path: Path
    info: dict

    def release(self) -> None:
        if read_holder(self.path).get("token") == self.info["token"]:
            self.path.unlink(missing_ok=True)


def acquire(out_dir, label: str, *, run_id: str) -> ParticipantLock:
    """Take the lock of one participant or raise :class:`LockHeldError` naming the holder."""
    label = str(label).removeprefix("sub-")
    return acquire_path(lock_path(out_dir, label), f"sub-{label}", run_id=run_id)


def acquire_path(path: Path, what: str, *, run_id: str) -> ParticipantLock:
    """Take the lock file ``path`` guarding ``what`` (e.g. a model folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"what": what, "host": socket.gethostname(),
            "pid": os.getpid(), "started": now_iso(), "run_id": run_id,
            "token": f"{socket.gethostname()}-{os.getpid()}-{run_id}"}
    for _attempt in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_holder(path)
            pid = holder.get("pid")
            if (holder.get("host") == socket.gethostname() and isinstance(pid, int)
                    and not _alive(pid)):
                LOGGER.warning("Removing the stale lock %s of a run that is gone (%s)", path,
                               describe_holder(holder))
                # rename first: of two runs breaking the same stale lock only one wins
                stale = path.with_name(f"{path.name}.stale-{os.getpid()}")
                try:
                    os.replace(path, stale)
                    stale.unlink(missing_ok=True)
                except FileNotFoundError:
                    pass
                continue
            if not holder:
                raise LockHeldError(
                    f"{what} is locked by {path} (holder unreadable); "
                    "remove that file if no other run is writing this participant"
                ) from None
            raise LockHeldError(
                f"{what} is held by another run ({describe_holder(holder)}); "
                f"wait for it, or remove {path} if that run is gone"
            ) from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(info) + "\n")
        return ParticipantLock(path, info)
    raise LockHeldError(f"could not take the lock {path} (contended)")
