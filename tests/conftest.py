"""Shared fixtures: an offline TemplateFlow home and small simulated BIDS datasets.

``TEMPLATEFLOW_HOME`` is pointed at a session folder before anything imports
templateflow, so no test can reach the network for a template.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# conftest may be imported more than once; keep one home per test session
_TF_HOME = Path(os.environ.get("BH_TEST_TEMPLATEFLOW_HOME")
                or tempfile.mkdtemp(prefix="bh-templateflow-"))
os.environ["BH_TEST_TEMPLATEFLOW_HOME"] = str(_TF_HOME)
os.environ["TEMPLATEFLOW_HOME"] = str(_TF_HOME)
os.environ["NIPYPE_NO_ET"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEST_TEMPLATE = "MNI152NLin2009aSym"


INTEGRATION_MARKERS = ("container", "slurm")


def pytest_addoption(parser):
    parser.addoption(
        "--integration", action="store_true",
        help="also run the container and SLURM tests (they install system packages and take "
        "minutes; .ci/integration runs them)",
    )
    parser.addoption(
        "--browser", action="store_true",
        help="also run the real-browser report tests (headless Chromium through Playwright; "
        "or set BH_BROWSER=1; .ci/browser installs them and runs them)",
    )


def pytest_collection_modifyitems(config, items):
    browser = config.getoption("--browser") or os.environ.get("BH_BROWSER") == "1"
    skip_browser = pytest.mark.skip(reason="browser test: run with --browser or BH_BROWSER=1 "
                                    "(see .ci/browser)")
    skip = pytest.mark.skip(reason="integration test: run with --integration (see .ci/integration)")
    for item in items:
        if not browser and item.get_closest_marker("browser"):
            item.add_marker(skip_browser)
        if not config.getoption("--integration") and any(
                item.get_closest_marker(m) for m in INTEGRATION_MARKERS):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def templateflow_home() -> Path:
    """A TemplateFlow home holding tpl-MNI152NLin2009aSym built from nilearn's files."""
    from bids_harmonize.templates import (
        TemplateNotFoundError,
        build_nilearn_template,
        get_template,
    )

    try:  # importing templateflow may have laid empty placeholder files here
        get_template(TEST_TEMPLATE)
    except TemplateNotFoundError:
        build_nilearn_template(_TF_HOME)
    return _TF_HOME


@pytest.fixture(scope="session")
def synth_bids(tmp_path_factory) -> Path:
    """Two simulated subjects, PiB, both platforms (generated once per session)."""
    from bids_harmonize.synth import write_dataset

    out = tmp_path_factory.mktemp("synth") / "bids"
    write_dataset(out, n_subjects=2, tracers=["PiB"], seed=0)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the checkout; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent (fresh clone without shared/)")
    return SHARED_DATA
