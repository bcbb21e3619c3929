"""Fixtures of the fuzz suite: one simulated dataset, copied (hard links) and mutated per case."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bids_harmonize.cli.run import main


@pytest.fixture
def bids(tmp_path, synth_bids) -> Path:
    """A private copy of the session's simulated dataset (2 subjects, PiB, both platforms).

    Files are hard links: mutate them only through :func:`replace` (unlink, then write).
    """
    out = tmp_path / "bids"
    shutil.copytree(synth_bids, out, copy_function=os.link,
                    ignore=shutil.ignore_patterns("derivatives"))
    return out


@pytest.fixture
def run_app(capsys, templateflow_home):
    """Run the app in this process: ``(exit status, stderr)``; asserts no traceback."""

    def run(*args) -> tuple[int, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            code = exc.code
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        return code, err

    return run
