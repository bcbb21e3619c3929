"""The subject report on a tiny derivatives tree: comparison with PET-CT, OOD, missing parts."""

from __future__ import annotations

import re

from bids_harmonize.reports.boilerplate import boilerplate_from
from bids_harmonize.reports.subject import build_subject_report

REPRS = ("np.float64(", "np.int64(", "array(", "np.True_")
METHODS = ["Results were produced with *bids_harmonize* 0.1.0, a Nipype [@nipype] workflow.",
           "The T1w was registered with SyN [@ants].",
           "PET-MR was harmonized [@wang2026harmonization; @ants]."]


def _images(html: str) -> list[str]:
    return re.findall(r"<img[^>]* src='([^']+)'", html)


def test_paired_subject_shows_petct_difference_maps_and_region_bias(derivatives):
    out = build_subject_report(derivatives, "01", boilerplate=boilerplate_from(METHODS))
    html = out.read_text()
    srcs = _images(html)
    assert any("desc-vspetct" in s for s in srcs) and any("desc-regionbias" in s for s in srcs)
    for src in srcs:
        assert (derivatives / src).is_file(), src
    svg = (derivatives / next(s for s in srcs if "vspetct" in s)).read_text()
    for row in ("PET-CT (reference)", "PET-MR before harmonization", "PET-MR after harmonization",
                "difference before", "difference after"):
        assert row in svg
    # composite table: cortex -10 % before, -2 % after
    assert "cortical_composite" in html and "-10" in html
    assert not any(r in html for r in REPRS)
    assert "50-70" in html and "2 x 2 x 2.2" in html
    assert not any("desc-correction" in s for s in srcs)  # no uncertainty map: no extra figure


def test_paired_subject_with_an_uncertainty_map_shows_it_too(derivatives):
    harm = next((derivatives / "sub-01").rglob("*desc-harmonized_pet.nii.gz"))
    unc = next((derivatives / "sub-02").rglob("*desc-uncertainty_pet.nii.gz"))
    (harm.parent / harm.name.replace("desc-harmonized", "desc-uncertainty")).write_bytes(
        unc.read_bytes())
    html = build_subject_report(derivatives, "01").read_text()
    srcs = _images(html)
    assert any("desc-vspetct" in s for s in srcs) and any("desc-correction" in s for s in srcs)
    assert "no PET-CT of this tracer" not in html


def test_methods_rendered_with_numbered_references_and_copyable_text(derivatives):
    html = build_subject_report(derivatives, "01", boilerplate=boilerplate_from(METHODS)).read_text()
    methods = html[html.index("id='methods'"):]
    assert "*bids_harmonize*" not in methods and "[@" not in methods.split("<textarea")[0]
    assert "<em>bids_harmonize</em>" in methods
    assert methods.count("<p>") >= 3  # one paragraph per workflow, not run together
    assert '[<a href="#ref-wang2026harmonization">3</a>, <a href="#ref-ants">2</a>]' in methods
    assert "<li id='ref-nipype'>Gorgolewski" in methods
    assert "@article{ants," in methods  # BibTeX to copy
    assert "Results were produced with bids_harmonize 0.1.0, a Nipype [1] workflow." in methods


def test_unpaired_petmr_shows_correction_uncertainty_and_ood_parts(derivatives):
    html = build_subject_report(derivatives, "02").read_text()
    assert any("desc-correction" in s for s in _images(html))
    svg = next((derivatives / "sub-02" / "figures").glob("*desc-correction*.svg")).read_text()
    assert "uncertainty" in svg
    for text in ("Out-of-distribution check", "warn", "0.734", "feature distance",
                 "dixon-4class"):
        assert text in html, text
    assert "no PET-CT of this tracer" in html


def test_missing_inputs_are_named_and_the_report_is_still_written(derivatives):
    (derivatives / "sub-01" / "anat" / "sub-01_desc-brain_mask.nii.gz").unlink()
    for tsv in (derivatives / "sub-02").rglob("*.tsv"):
        tsv.unlink()
    html = build_subject_report(derivatives, "01", errors=["crashed: crash-x.txt"]).read_text()
    assert "brain mask sub-01_desc-brain_mask.nii.gz is missing" in html
    assert "crashed: crash-x.txt" in html and "No figures under sub-01/figures/" in html
    assert "No methods description was recorded" in html
    empty = build_subject_report(derivatives, "03").read_text()
    assert "No PET outputs were written for this subject." in empty


def test_broken_regional_table_gives_a_note_not_a_crash(derivatives):
    tsv = next((derivatives / "sub-01").rglob("*petct*_suvr.tsv"))
    tsv.write_text("garbage\n")
    html = build_subject_report(derivatives, "01").read_text()
    assert "Regional SUVR table missing or unreadable for PET-CT" in html
    assert any("desc-vspetct" in s for s in _images(html))  # the image figure still drawn
