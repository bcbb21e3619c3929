"""Per-participant locks: two runs never write the same participant at once.

A lock is a file ``<out>/logs/locks/sub-<label>.lock`` created with
``O_CREAT | O_EXCL`` (atomic on local file systems and on NFSv3+), holding the
host, process id, start time and run id of its holder. A second run that finds
it says who holds it. A lock left by a dead process of this host (a killed
run) is stale: it is broken and taken over, with a warning; so is an empty or
unreadable lock older than :data:`EMPTY_LOCK_GRACE_S` (locks are created with their
content in one step, so only a failure of an older version or of the fallback leaves
one). A lock of another
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

import errno
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bids_harmonize.runstatus import now_iso, pid_alive

LOGGER = logging.getLogger("bids_harmonize.locks")
LOCK_DIR = Path("logs") / "locks"


class LockHeldError(RuntimeError):
    """Another run holds the participant's lock; the message says who."""


def lock_path(out_dir, label: str) -> Path:
    return Path(out_dir) / LOCK_DIR / f"sub-{str(label).removeprefix('sub-')}.lock"


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
            created = _create_whole(path, json.dumps(info) + "\n")
        except OSError as exc:  # disk full, read-only folder: nothing is left behind
            raise LockHeldError(f"{what}: cannot create the lock {path} "
                                f"({exc.strerror or exc})") from None
        if created:
            return ParticipantLock(path, info)
        holder = read_holder(path)
        pid = holder.get("pid")
        dead = (holder.get("host") == socket.gethostname() and isinstance(pid, int)
                and not pid_alive(pid))
        empty = not holder and _age_s(path) > EMPTY_LOCK_GRACE_S
        if dead or empty:
            LOGGER.warning("Removing the stale lock %s (%s)", path,
                           f"a run that is gone: {describe_holder(holder)}" if dead else
                           "empty or unreadable, left by a run that failed while taking it")
            _break(path)
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
    raise LockHeldError(f"could not take the lock {path} (contended)")


#: A lock file without a readable holder older than this (s) is a leftover (this module
#: creates locks whole; only the fallback for file systems without hard links writes the
#: content after creating the file, within milliseconds).
EMPTY_LOCK_GRACE_S = 10.0


def _age_s(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _break(path: Path) -> None:
    """Remove a stale lock; rename first: of two runs breaking it only one wins."""
    stale = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.replace(path, stale)
        stale.unlink(missing_ok=True)
    except FileNotFoundError:
        pass


def _create_whole(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` in one step; False when it already exists.

    The content is written to a temporary file first and hard-linked to the lock's name
    (atomic, and refused when the name exists), so a lock never exists empty or half
    written. File systems without hard links fall back to ``O_EXCL`` and remove the
    lock when its content cannot be written.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                                 errno.EMLINK):
                raise
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return True
    finally:
        tmp.unlink(missing_ok=True)
