"""Thin wrappers around SLURM's client commands (sbatch, squeue, scontrol, scancel).

Everything here shells out; nothing needs accounting (``sacct``), which small and
test clusters often do not run. Jobs are found again by the ``--comment`` tag
they were submitted with, or by their ids.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from collections.abc import Iterable

CLIENT_COMMANDS = ("sbatch", "squeue", "scontrol", "scancel")


class SlurmError(RuntimeError):
    """SLURM is missing, or one of its commands failed; the message is one line."""


def require_slurm(commands: Iterable[str] = CLIENT_COMMANDS) -> None:
    """Raise :class:`SlurmError` unless every SLURM client command is on ``PATH``."""
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        raise SlurmError(
            f"SLURM is not available on this machine ({', '.join(missing)} not found on PATH)"
        )


def slurm_environ() -> dict[str, str]:
    """This process's environment with ``LOGNAME`` set (Nipype's SLURM plugins need it)."""
    env = dict(os.environ)
    if not env.get("LOGNAME"):
        env["LOGNAME"] = env.get("USER") or getpass.getuser()
    return env


def _run(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, env=slurm_environ(), check=False)
    except FileNotFoundError:
        raise SlurmError(f"SLURM is not available on this machine ({args[0]} not found)") from None
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise SlurmError(f"{' '.join(args[:2])} failed: {message}")
    return done.stdout


def submit(script, *sbatch_args: str) -> str:
    """``sbatch --parsable [ARGS] SCRIPT``; return the job id."""
    out = _run(["sbatch", "--parsable", *sbatch_args, str(script)])
    return out.strip().split(";")[0]


def queued(comment: str | None = None, job_ids: Iterable[str] = ()) -> dict[str, str]:
    """Jobs (and array tasks) still in the queue: ``{job id: state}``.

    Filtered by ``--comment`` tag and/or by job ids (an array's id matches its tasks).
    """
    ids = {str(j) for j in job_ids}
    out = _run(["squeue", "--noheader", "--array", "--format=%i|%T|%k|%F"])
    jobs = {}
    for line in out.splitlines():
        job_id, state, job_comment, array_id = (line.split("|") + ["", "", ""])[:4]
        if comment is not None and job_comment.strip() != comment:
            continue
        if ids and not ({job_id, array_id, job_id.split("_")[0]} & ids):
            continue
        jobs[job_id.strip()] = state.strip()
    return jobs


def job_state(job_id: str) -> str | None:
    """A job's state from ``scontrol show job`` (no accounting needed); None once purged."""
    try:
        out = _run(["scontrol", "show", "job", "--oneliner", str(job_id)])
    except SlurmError:
        return None
    for token in out.split():
        if token.startswith("JobState="):
            return token.split("=", 1)[1]
    return None


def array_states(array_id: str) -> dict[str, str]:
    """``{task index: state}`` for every task of an array still known to ``scontrol``."""
    try:
        out = _run(["scontrol", "show", "job", "--oneliner", str(array_id)])
    except SlurmError:
        return {}
    states = {}
    for line in out.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if "ArrayTaskId" in fields and "JobState" in fields:
            states[fields["ArrayTaskId"]] = fields["JobState"]
    return states


def cancel(job_ids: Iterable[str]) -> list[str]:
    """``scancel`` the given jobs; return the ids it was asked to cancel."""
    ids = sorted({str(j) for j in job_ids})
    if ids:
        _run(["scancel", *ids])
    return ids


def wait(comment: str | None = None, job_ids: Iterable[str] = (), poll: float = 2.0,
         timeout: float | None = None, on_poll=None) -> None:
    """Block until no matching job is left in the queue (``squeue``, not ``sacct``)."""
    started = time.monotonic()
    while True:
        left = queued(comment=comment, job_ids=job_ids)
        if not left:
            return
        if on_poll is not None:
            on_poll(left)
        if timeout is not None and time.monotonic() - started > timeout:
            raise SlurmError(f"{len(left)} job(s) still queued after {timeout:.0f} s")
        time.sleep(poll)
