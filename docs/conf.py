"""Sphinx configuration of the bids_harmonize documentation (``sphinx-build -W docs out``).

Offline: no intersphinx, no remote images. The workflow graphs are drawn by
nipype's ``.. workflow::`` directive from the factories' own docstrings (needs
graphviz's ``dot``); the usage page comes from the real argument parsers.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))

from bids_harmonize.__about__ import __version__  # noqa: E402

project = "bids_harmonize"
author = "bids_harmonize developers"
copyright = "2026, bids_harmonize developers"  # noqa: A001
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxarg.ext",
    "nipype.sphinxext.plot_workflow",
    "myst_parser",
    "bh_errors",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "sphinx_rtd_theme"
html_title = f"bids_harmonize {__version__}"
html_static_path: list[str] = []
myst_heading_anchors = 3
# commands are copied from these pages: keep '--option' and "quotes" as typed (docutils'
# smart quotes turn '--' into an en dash that a shell does not read as two hyphens)
smartquotes = False
# the included READMEs link to repository files (scripts, Dockerfile) that are not pages
suppress_warnings = ["myst.xref_missing"]

autodoc_member_order = "bysource"
autodoc_typehints = "none"
napoleon_custom_sections = [("Inputs", "params_style"), ("Outputs", "params_style")]

# ``.. workflow::`` blocks run in a scratch folder holding the placeholder files that
# the docstring examples name (the factories check that template files exist)
_WF_DIR = Path(tempfile.mkdtemp(prefix="bh-docs-wf-"))
for _name in ("t1w.nii.gz", "mask.nii.gz", "GM.nii.gz", "WM.nii.gz", "CSF.nii.gz"):
    (_WF_DIR / _name).touch()
wf_working_directory = str(_WF_DIR)
wf_formats = ["svg", "png"]  # png: the directive always names one for texinfo
wf_html_show_formats = False
wf_html_show_source_link = False
graph2use = "colored"
simple_form = True


def _workflow_block_first(app, what, name, obj, options, lines):
    """Move a docstring's ``.. workflow::`` block right after its summary paragraph.

    The factories put the block after their ``Inputs``/``Outputs`` sections, where
    napoleon would read it as one more input; fMRIPrep's docstrings put it first.
    """
    start = next((i for i, line in enumerate(lines) if line.startswith(".. workflow::")), None)
    if start is None:
        return
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end].startswith((" ", "\t"))):
        end += 1
    block = lines[start:end]
    del lines[start:end]
    summary_end = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    lines[summary_end:summary_end] = ["", *block, ""]


def _template_home() -> None:
    """Docstring examples load the offline test template: build it once when it is absent."""
    from bids_harmonize.templates import TemplateNotFoundError, build_nilearn_template, get_template

    if not os.environ.get("TEMPLATEFLOW_HOME"):
        os.environ["TEMPLATEFLOW_HOME"] = str(Path(tempfile.gettempdir()) / "bh-docs-templateflow")
    try:
        get_template("MNI152NLin2009aSym")
    except TemplateNotFoundError:
        build_nilearn_template(Path(os.environ["TEMPLATEFLOW_HOME"]))


def setup(app):
    import logging

    logging.getLogger("nipype.workflow").setLevel(logging.WARNING)  # one line per graph otherwise
    _template_home()
    app.connect("autodoc-process-docstring", _workflow_block_first, priority=400)
