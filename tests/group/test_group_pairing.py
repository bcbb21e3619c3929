"""Before/after comparisons on the same subjects (issue 22 item 7): a subject whose
harmonized tables are missing is left out of both comparisons, and listed."""

import json

import pandas as pd
from test_group_run import CL, make_dataset

from bids_harmonize import runstatus
from bids_harmonize.group.run import run_group


def _drop_harmonized(out, sub):
    for path in (out / f"sub-{sub}").rglob("*desc-harmonized*"):
        path.unlink()


def test_failed_harmonization_leaves_the_subject_out_of_both_comparisons(tmp_path):
    make_dataset(tmp_path)
    _drop_harmonized(tmp_path, "02")
    record = runstatus.new_record("02", run_id="r1")
    runstatus.write_status(tmp_path, runstatus.finish_record(
        record, "failed", reasons=["node harmonize failed: RuntimeError"]))
    written = run_group(tmp_path, report=True)
    group = tmp_path / "group"

    agree = pd.read_csv(group / "agreement_measures.tsv", sep="\t").set_index(
        ["measure", "comparison"])
    # before the fix: raw n = 4, harmonized n = 3 (different subject sets)
    assert agree.loc[("centiloid", "petmr_raw"), "n"] == 3
    assert agree.loc[("centiloid", "petmr_harmonized"), "n"] == 3
    kept = [i for i in range(4) if i != 1]
    raw_bias = sum(CL["petmr_raw"][i] - CL["petct"][i] for i in kept) / 3
    assert abs(agree.loc[("centiloid", "petmr_raw"), "mean_diff"] - raw_bias) < 1e-6

    left = pd.read_csv(written["left_out"], sep="\t", dtype=str)
    assert left["subject"].tolist() == ["02"]
    (reason,) = left["reason"]
    assert "no harmonized PET-MR value" in reason and "failed" in reason

    pairs = pd.read_csv(written["pairs"], sep="\t", dtype={"subject": str})
    assert set(pairs.loc[pairs["paired_set"] == 0, "subject"]) == {"02"}
    summary = json.loads((group / "group_summary.json").read_text())
    assert summary["PairedSubjects"] == {"PiB": 3}
    assert [r["subject"] for r in summary["LeftOutOfComparisons"]] == ["02"]
    assert any("left out" in note and "sub-02" in note for note in summary["Notes"])
    html = (group / "group_report.html").read_text()
    assert "left_out.tsv" in html and "no harmonized PET-MR value" in html


def test_raw_only_runs_compare_every_subject(tmp_path):
    make_dataset(tmp_path, harmonized=False)
    written = run_group(tmp_path, report=False)
    agree = pd.read_csv(written["agreement_measures"], sep="\t").set_index(
        ["measure", "comparison"])
    assert agree.loc[("centiloid", "petmr_raw"), "n"] == 4
    assert pd.read_csv(written["left_out"], sep="\t").empty


def test_group_exits_0_and_warns_once_per_left_out_subject(tmp_path):
    """The group level succeeded on the paired subjects: exit 0, but one warning line per
    subject left out on stderr (the real command, in a subprocess), and the files that
    list them."""
    import subprocess
    import sys

    out = tmp_path / "out"
    make_dataset(out)
    _drop_harmonized(out, "02")
    (tmp_path / "bids").mkdir()
    proc = subprocess.run([sys.executable, "-m", "bids_harmonize.cli.run", str(tmp_path / "bids"),
                           str(out), "group"], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "leave out sub-" in line]
    assert len(lines) == 1 and "WARNING" in lines[0], proc.stderr
    assert "sub-02: PiB seg-synth: no harmonized PET-MR value" in lines[0]
    assert "Traceback" not in proc.stderr
    left = pd.read_csv(out / "group" / "left_out.tsv", sep="\t", dtype=str)
    assert left["subject"].tolist() == ["02"]
    assert "no harmonized PET-MR value" in (out / "group" / "group_report.html").read_text()
