"""The documentation covers the command line: every option of every parser is documented.

Fast (reads text files, builds the parsers): the Sphinx build itself runs in .ci/browser.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
PARSERS = {  # module -> (page that renders it with sphinx-argparse, options it must describe)
    "bids_harmonize.cli.parser": "usage.rst",
    "bids_harmonize.slurm.cli": "usage.rst",
    "bids_harmonize.synth.cli": "usage.rst",
}


def _options(module: str) -> list[str]:
    import importlib

    parser = importlib.import_module(module).build_parser()
    return sorted({s for a in parser._actions for s in a.option_strings if s.startswith("--")}
                  - {"--help"})


def _docs_text() -> str:
    return "\n".join(p.read_text() for p in sorted(DOCS.rglob("*")) if p.suffix in (".rst", ".md"))


@pytest.mark.parametrize("module", sorted(PARSERS))
def test_usage_page_renders_the_real_parser(module):
    page = (DOCS / PARSERS[module]).read_text()
    block = re.search(rf"\.\. argparse::\n   :module: {re.escape(module)}\n   :func: (\w+)", page)
    assert block, f"docs/{PARSERS[module]} has no '.. argparse::' block for {module}"
    import importlib

    assert callable(getattr(importlib.import_module(module), block[1]))


def test_every_app_option_is_described_in_the_prose():
    """The generated reference lists them all; the task-by-task text must name each too."""
    text = _docs_text()
    missing = [o for o in _options("bids_harmonize.cli.parser") if f"``{o}" not in text]
    assert not missing, f"bids_harmonize options not described in docs/: {missing}"


def test_docs_pages_are_all_in_the_toctree():
    index = (DOCS / "index.rst").read_text()
    pages = {p.stem for p in DOCS.glob("*.rst")} | {p.stem for p in DOCS.glob("*.md")}
    assert pages - {"index"} <= set(re.findall(r"^   (\w+)$", index, flags=re.M))
