"""What every analysis level shares: usage errors, run ids, path and device checks."""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

from bids_harmonize.config import RunConfig

LOGGER = logging.getLogger("bids_harmonize")


class UsageError(RuntimeError):
    """A problem the user can fix; reported in one line, exit status 1 (or ``status``)."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS_<8 hex>``: names the run's config, crash folders and status records."""
    return time.strftime("%Y%m%d-%H%M%S") + "_" + uuid.uuid4().hex[:8]


def check_paths(config: RunConfig) -> None:
    """Refuse outputs inside the input, and unwritable outputs, before anything is written."""
    bids, out = config.bids_dir.resolve(), config.output_dir.resolve()
    if out == bids or bids in out.parents:
        raise UsageError(f"output directory {out} must not be inside the BIDS dataset {bids}")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK):
        raise UsageError(f"output directory {out} is not writable")
    work = (config.work_dir or out / "work").resolve()
    existing = next((p for p in (work, *work.parents) if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK):
        raise UsageError(f"work directory {work} is not writable")


def check_device(device: str) -> str:
    """Refuse ``cuda`` without a GPU; note a CPU fallback for ``auto``."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA GPU is available")
    if device == "auto" and not torch.cuda.is_available():
        LOGGER.info("No CUDA GPU found: the harmonizer runs on the CPU")
    return device


def warn_incomplete(out: Path, level: str) -> list[str]:
    """Participants marked incomplete (a run started them and never finished), logged."""
    from bids_harmonize.runstatus import incomplete_participants

    incomplete = incomplete_participants(out)
    if incomplete:
        LOGGER.warning("%s: leaving out %d participant(s) whose outputs are marked incomplete "
                       "(a run did not finish them; rerun 'participant' for them): %s", level,
                       len(incomplete), ", ".join(f"sub-{s}" for s in incomplete))
    return incomplete


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (at most 500 characters), else its type."""
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__
