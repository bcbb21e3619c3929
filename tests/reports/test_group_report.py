"""Group report parts: intervals, breakdowns by scanner/setup, call changes, OOD, status."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from bids_harmonize.reports.group import (
    breakdown_table,
    ci_table,
    image_metadata,
    ood_summary,
    plot_class_changes,
    status_section,
)
from bids_harmonize.runstatus import finish_record, new_record, write_status


def _pairs(n=12, seed=0):
    rng = np.random.default_rng(seed)
    ct = rng.uniform(-10, 80, n)
    return pd.DataFrame({"tracer": "PiB", "seg": "synth", "measure": "centiloid",
                         "subject": [f"{k:02d}" for k in range(1, n + 1)], "petct": ct,
                         "petmr_raw": ct - 8 + rng.normal(0, 2, n),
                         "petmr_harmonized": ct + rng.normal(0, 2, n)})


def _meta(n=12):
    rows = []
    for k in range(1, n + 1):
        scanner = "Biograph mMR" if k % 2 else "SIGNA PET/MR"
        for desc in ("preproc", "harmonized"):
            rows.append({"subject": f"{k:02d}", "session": "petmr", "tracer": "PiB", "desc": desc,
                         "platform": "PET-MR", "site": None, "scanner": scanner,
                         "ac_setup": "dixon" if k % 2 else "zte", "ac_method": None,
                         "ood_decision": ("apply" if k % 3 else "warn") if desc == "harmonized"
                         else None, "ood_score": 0.1 * (k % 5) if desc == "harmonized" else None,
                         "uncertainty_map": desc == "harmonized"})
    return pd.DataFrame(rows)


def test_intervals_bracket_the_bias_and_shrink_it_after_harmonization():
    html = ci_table(_pairs(), "centiloid")
    raw = html.split("PET-MR raw")[1].split("</tr>")[0]
    bias, lo, hi = (float(v) for v in
                    raw.split("<td>")[2].split("</td>")[0].replace("[", "").replace("]", "")
                    .replace(",", "").split())
    assert lo < bias < hi < 0 and abs(bias + 8) < 2.5


def test_breakdown_by_scanner_and_setup():
    html = breakdown_table(_pairs(), _meta(), "centiloid", "PiB", "synth")
    for text in ("Biograph mMR", "SIGNA PET/MR", "dixon", "zte", "bias PET-MR harmonized"):
        assert text in html
    assert "site" not in html.split("<table>")[1]  # a field no sidecar has is not a group


def test_call_change_figure_marks_subjects_that_cross_the_cutoff(tmp_path):
    pairs = _pairs()
    pairs.loc[0, ["petct", "petmr_raw", "petmr_harmonized"]] = [22.0, 15.0, 21.0]
    svg = plot_class_changes(pairs, "centiloid", 20.1, "PiB", tmp_path / "c.svg")
    assert "call changes" in svg and "#c62828" in svg and "cut-off 20.1" in svg


def test_ood_summary_counts_decisions_per_scanner():
    html = ood_summary(_meta())
    assert "warn" in html and "apply" in html and "Biograph mMR" in html
    assert "with uncertainty map" in html
    none = ood_summary(_meta().assign(ood_decision=None))
    assert "carry no <code>OODDecision</code>" in none


def test_image_metadata_and_status_section_read_participant_outputs(tmp_path):
    pet = tmp_path / "sub-01" / "ses-petmr" / "pet"
    pet.mkdir(parents=True)
    (pet / "sub-01_ses-petmr_trc-PiB_space-T1w_desc-preproc_pet.json").write_text(
        json.dumps({"Platform": "PET-MR", "ManufacturersModelName": "uPMR 790"}))
    (pet / "sub-01_ses-petmr_trc-PiB_space-T1w_desc-harmonized_pet.json").write_text("{broken")
    meta = image_metadata(tmp_path)
    assert meta[["subject", "scanner"]].values.tolist() == [["01", "uPMR 790"]]
    write_status(tmp_path, finish_record(new_record("02", run_id="r"), "failed",
                                         reasons=["registration diverged"]))
    assert "registration diverged" in status_section(tmp_path)


def test_ood_and_breakdown_tables_name_their_columns_for_readers():
    """Column names a reader understands, not the sidecar-derived keys (issue 21)."""
    ood = ood_summary(_meta())
    head = ood.split("<table>")[1].split("</tr>")[0]
    for name in ("scanner model", "attenuation-correction setup", "OOD decision",
                 "mean OOD score", "with uncertainty map"):
        assert name in head, name
    assert "ac setup" not in head and "ac_setup" not in head
    breakdown = breakdown_table(_pairs(), _meta(), "centiloid", "PiB", "synth")
    assert "<td class='text'>attenuation-correction setup</td>" in breakdown
    assert "<td class='text'>ac setup</td>" not in breakdown


def test_cutoff_written_alike_in_table_and_figure(tmp_path):
    from bids_harmonize.reports.group import _table, cutoff_text

    cut = pd.DataFrame({"measure": ["centiloid"], "cutoff": [20.1], "comparison": ["petmr_raw"],
                        "percent_agreement": [100.0]})
    html = _table(cut)
    assert "<td>20.1</td>" in html and "20.100" not in html
    assert "<td>PET-MR raw</td>" in html and "<th>% agreement</th>" in html
    svg = plot_class_changes(_pairs(), "centiloid", 20.1, "PiB", tmp_path / "c.svg")
    assert f"cut-off {cutoff_text(20.1)}" in svg
