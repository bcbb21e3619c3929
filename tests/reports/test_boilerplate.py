"""Methods boilerplate from the real workflow factories, and the citation files."""

from __future__ import annotations

from pathlib import Path

from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmonize.reports.boilerplate import (
    boilerplate_from,
    collect_descriptions,
    default_references,
    write_citation_files,
)


def test_descriptions_stay_separate_paragraphs_in_graph_order():
    top, a, b = Workflow("top"), Workflow("a"), Workflow("b")
    top.__desc__, a.__desc__, b.__desc__ = "First [@nipype].", "Second [@ants].", "First [@nipype]."
    top.add_nodes([a, b])
    assert collect_descriptions(top) == ["First [@nipype].", "Second [@ants]."]
    # niworkflows' own join runs them together; this is what the report used to show
    assert "First [@nipype].Second" in top.visit_desc()


def test_every_key_the_package_cites_has_a_reference():
    import re

    import bids_harmonize

    root = Path(bids_harmonize.__file__).parent
    cited = {key for path in root.rglob("*.py") if "reports" not in path.parts
             for group in re.findall(r"\[(@[^\]]+)\]", path.read_text())
             for key in re.findall(r"@([\w:.-]+)", group)}
    assert {"nipype", "ants", "n4", "monai", "wang2026harmonization"} <= cited
    assert cited <= set(default_references()), cited - set(default_references())
    bp = boilerplate_from([f"Text [@{key}]." for key in sorted(cited)])
    assert bp.missing == [] and "[@" not in bp.plain()


def test_citation_files(tmp_path):
    bp = boilerplate_from("Made with *bids_harmonize* [@nipype].\n\nRegistered [@ants; @n4].")
    md, txt, bib = write_citation_files(tmp_path / "logs", bp)
    assert "## References" in md.read_text() and "1. Gorgolewski" in md.read_text()
    assert txt.read_text().startswith("Made with bids_harmonize [1].\n\nRegistered [2, 3].")
    assert bib.read_text().count("@article{") == 3
    # CITATION.md numbers its citations like its reference list (no bare [@key])
    assert md.read_text().startswith("Made with *bids_harmonize* [1].\n\nRegistered [2, 3].")
    assert "[@" not in md.read_text()


def test_every_reference_names_its_venue():
    """Journal, proceedings or preprint server: no reference ends at its title or volume."""
    from bids_harmonize.reports.boilerplate import format_reference

    for key, ref in default_references().items():
        text = format_reference(ref, key)
        venue = ref.fields.get("journal") or ref.fields.get("booktitle") \
            or ref.fields.get("eprint") or ref.fields.get("publisher")
        assert venue and venue in text, (key, text)
