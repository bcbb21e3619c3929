"""A demo output (the README's demo, made here) and a headless Chromium to open its pages.

``BH_DEMO_OUT=/path/to/out`` reuses an existing demo output instead of running
``participant`` and ``group`` (about two minutes on two cores). Screenshots go
to ``$BH_ARTEFACTS`` when set, else to a folder under pytest's temporary root.

Chromium is Debian's (``apt-get install chromium``), driven by Playwright's
Python package through ``executable_path``: no browser is ever downloaded
(never ``playwright install``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def _chromium() -> str | None:
    env = os.environ.get("BH_CHROMIUM")
    if env:
        return env
    return next((c for c in CHROMIUM_CANDIDATES if Path(c).exists()), shutil.which("chromium"))


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory) -> Path:
    """Where screenshots are saved (kept after the run)."""
    folder = (Path(os.environ["BH_ARTEFACTS"]) if os.environ.get("BH_ARTEFACTS")
              else tmp_path_factory.mktemp("browser-artefacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory, templateflow_home) -> Path:
    """The README demo's output: 2 simulated PiB subjects, participant (--sloppy) and group."""
    if os.environ.get("BH_DEMO_OUT"):
        out = Path(os.environ["BH_DEMO_OUT"])
        if not (out / "index.html").is_file():
            pytest.fail(f"BH_DEMO_OUT={out} has no index.html: not a finished demo output")
        return out
    root = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "TEMPLATEFLOW_HOME": str(templateflow_home)}
    bindir = Path(sys.executable).parent
    steps = [
        [bindir / "bids_harmonize-synth", root / "bids", "--subjects", "2", "--tracers", "PiB",
         "--seed", "0", "--overwrite"],
        [bindir / "bids_harmonize", root / "bids", root / "out", "participant", "--output-spaces",
         "MNI152NLin2009aSym", "T1w", "--sloppy", "-w", root / "work", "--nprocs", "2"],
        [bindir / "bids_harmonize", root / "bids", root / "out", "group"],
    ]
    for cmd in steps:
        done = subprocess.run([str(c) for c in cmd], env=env, capture_output=True, text=True,
                              timeout=1200)
        assert done.returncode == 0, f"{cmd[0].name} failed:\n{done.stderr[-3000:]}"
    return root / "out"


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's), or a skip that says what to install."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright "
                                   "(the 'browser' extra)")
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium: apt-get install chromium (or set BH_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()
