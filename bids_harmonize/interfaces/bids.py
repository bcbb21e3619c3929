"""Derivatives writing: niworkflows' ``DerivativesDataSink`` at the output root.

Its path patterns come from the one derivatives specification
(:func:`bids_harmonize.derivatives.path_patterns`, ``data/io_spec.json``), which also
declares this project's files: a CT resampled into T1w space, the pseudo-CT, and
regional tables (``seg-<atlas>``). Workflows build sinks through
:func:`bids_harmonize.workflows.outputs.spec_sink`, never with ad-hoc entities.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

from nipype.interfaces.base import isdefined
from niworkflows.interfaces.bids import DerivativesDataSink as _DerivativesDataSink

from bids_harmonize.derivatives import path_patterns
from bids_harmonize.runstatus import pid_alive


class DerivativesDataSink(_DerivativesDataSink):
    """niworkflows' sink, writing at the output root with the specification's patterns.

    Writes are atomic: niworkflows writes into a hidden staging folder in the output folder
    (same file system), and each finished file is then renamed to its final name, so a
    full disk or a kill never leaves a truncated image or sidecar under a final name.
    """

    out_path_base = ""
    _config_entities = _DerivativesDataSink._config_entities | {"seg"}
    _config_entities_dict = [
        *_DerivativesDataSink._config_entities_dict,
        {"name": "seg", "pattern": "[_/\\\\]+seg-([a-zA-Z0-9]+)"},
    ]
    _file_patterns = path_patterns()

    def _run_interface(self, runtime):
        final = Path(self.inputs.base_directory if isdefined(self.inputs.base_directory)
                     else runtime.cwd).absolute()
        final.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(final)
        staging = Path(tempfile.mkdtemp(prefix=f"{_staging_prefix()}{os.getpid()}-", dir=final))
        original = self.inputs.base_directory
        self.inputs.base_directory = str(staging)
        try:
            runtime = super()._run_interface(runtime)
            for key in ("out_file", "out_meta"):
                value = self._results.get(key)
                if isinstance(value, list):
                    self._results[key] = [_into_place(v, staging, final) for v in value]
                elif value:
                    self._results[key] = _into_place(value, staging, final)
        finally:
            self.inputs.base_directory = original
            shutil.rmtree(staging, ignore_errors=True)
        return runtime


def _into_place(path: str, staging: Path, final: Path) -> str:
    """Rename a finished file from the staging folder to its place under ``final``."""
    rel = Path(path).relative_to(staging)
    dest = final / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return str(dest)


STAGING_PREFIX = ".bh-sink-"
#: A staging folder in the old name format (no host, no pid) is stale after this long.
STALE_UNNAMED_S = 6 * 3600


def _staging_prefix() -> str:
    """``.bh-sink-<host>-``: a staging folder names its host and process."""
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40] or "host"
    return f"{STAGING_PREFIX}{host}-"


def _remove_stale_staging(final: Path) -> list[Path]:
    """Remove staging folders of sinks whose process is gone (a killed run); return them.

    Only folders of this host whose process no longer exists (or unnamed ones older than
    :data:`STALE_UNNAMED_S`): another run writing into the same output folder keeps its own.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> dead = root / f"{_staging_prefix()}999999999-abc"
    >>> live = root / f"{_staging_prefix()}{os.getpid()}-abc"
    >>> dead.mkdir(), live.mkdir()
    (None, None)
    >>> [p.name == dead.name for p in _remove_stale_staging(root)], live.exists()
    ([True], True)
    """
    removed = []
    mine = _staging_prefix()
    for folder in final.glob(f"{STAGING_PREFIX}*"):
        name = folder.name
        if name.startswith(mine):
            pid = name[len(mine):].split("-", 1)[0]
            stale = pid.isdigit() and not pid_alive(int(pid))
        else:
            parts = name[len(STAGING_PREFIX):].split("-")
            named = len(parts) >= 3 and parts[-2].isdigit()  # another host's: not ours to judge
            try:
                stale = not named and time.time() - folder.stat().st_mtime > STALE_UNNAMED_S
            except OSError:
                stale = False
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
