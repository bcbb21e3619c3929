"""run_group on hand-made participant tables with known values."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from bids_harmonize.group.collect import NoParticipantTablesError, collect_participant_tables
from bids_harmonize.group.run import run_group

CL = {"petct": [10.0, 30.0, 50.0, 20.0], "petmr_raw": [2.0, 20.0, 40.0, 15.0],
      "petmr_harmonized": [11.0, 29.0, 52.0, 26.0]}
# regional SUVR per subject (rows) and region (columns a..d), PET-CT; PET-MR = 0.9 * PET-CT
REGIONS = ["frontal_cortex", "parietal_cortex", "occipital_cortex", "thalamus"]
CT_SUVR = np.array([[1.2, 1.3, 1.1, 1.0], [1.5, 1.6, 1.2, 1.1], [2.0, 2.1, 1.4, 1.05],
                    [1.3, 1.2, 1.3, 1.2]])
SCALE = {"petct": 1.0, "petmr_raw": 0.9, "petmr_harmonized": 1.01}


def write_image(out, sub, ses, trc, platform, desc, measures, suvr, seg="synth"):
    pet = out / f"sub-{sub}" / f"ses-{ses}" / "pet"
    pet.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{sub}_ses-{ses}_trc-{trc}"
    side = pet / f"{stem}_space-T1w_desc-preproc_pet.json"
    if not side.exists():
        side.write_text(json.dumps({"Platform": platform, "TracerName": trc,
                                    "ManufacturersModelName": "Biograph mMR"
                                    if platform == "PET-MR" else "Biograph Vision"}))
    m = pd.DataFrame({"measure": list(measures), "value": list(measures.values()),
                      "units": ["CL" if k == "centiloid" else "unitless" for k in measures],
                      "reference": "whole_cerebellum", "description": "test"})
    m.to_csv(pet / f"{stem}_seg-{seg}_desc-{desc}_measures.tsv", sep="\t", index=False,
             na_rep="n/a")
    r = pd.DataFrame({"region": [*suvr, "whole_cerebellum", "cortical_composite"],
                      "kind": ["region"] * len(suvr) + ["region", "composite"],
                      "suvr": [*suvr.values(), 1.0, np.mean(list(suvr.values()))]})
    r.to_csv(pet / f"{stem}_seg-{seg}_desc-{desc}_suvr.tsv", sep="\t", index=False,
             na_rep="n/a")


def make_dataset(out, *, harmonized=True, petct=True):
    for i in range(4):
        sub = f"{i + 1:02d}"
        conds = [("petmr", "PET-MR", "preproc", "petmr_raw")]
        if harmonized:
            conds.append(("petmr", "PET-MR", "harmonized", "petmr_harmonized"))
        if petct:
            conds.append(("petct", "PET-CT", "preproc", "petct"))
        for ses, platform, desc, cond in conds:
            cl = CL[cond][i]
            write_image(out, sub, ses, "PiB", platform, desc,
                        {"suvr_cortical": cl / 93.7207 + 1.009, "centiloid": cl,
                         "positive": float(cl >= 24.1)},
                        dict(zip(REGIONS, CT_SUVR[i] * SCALE[cond], strict=True)))


def test_agreement_equals_hand_values(tmp_path):
    make_dataset(tmp_path)
    # the hand values below are worked out at 24.1 CL (a --cutoff, not the tracers.yaml value)
    written = run_group(tmp_path, report=True, cutoffs={"PiB": 24.1})
    group = tmp_path / "group"
    measures = pd.read_csv(written["measures"], sep="\t")
    assert len(measures) == 12
    assert set(measures["version"]) == {"raw", "harmonized"}
    assert {"centiloid", "suvr_cortical", "positive", "platform", "model"} <= set(measures)

    agree = pd.read_csv(group / "agreement_measures.tsv", sep="\t").set_index(
        ["measure", "comparison"])
    raw = agree.loc[("centiloid", "petmr_raw")]
    ct, mr = np.array(CL["petct"]), np.array(CL["petmr_raw"])
    assert raw["n"] == 4
    assert raw["mean_diff"] == pytest.approx(-8.25)
    assert raw["sd_diff"] == pytest.approx(np.sqrt(16.75 / 3))
    assert raw["mean_abs_diff"] == pytest.approx(8.25)
    assert raw["loa_upper"] == pytest.approx(-8.25 + 1.96 * np.sqrt(16.75 / 3))
    cov = np.cov(ct, mr)[0, 1]
    d = mr - ct
    assert raw["icc_2_1"] == pytest.approx(
        2 * cov / (ct.var(ddof=1) + mr.var(ddof=1) + d.mean() ** 2 - d.var(ddof=1) / 4))
    harm = agree.loc[("centiloid", "petmr_harmonized")]
    assert harm["mean_diff"] == pytest.approx(2.0)  # 1, -1, 2, 6
    assert harm["mean_abs_diff"] == pytest.approx(2.5)
    assert ("positive", "petmr_raw") not in agree.index  # flags are not quantities
    assert np.isnan(raw["percent_bias"])  # Centiloid is not on a ratio scale
    ct_suvr = np.array(CL["petct"]) / 93.7207 + 1.009
    mr_suvr = np.array(CL["petmr_raw"]) / 93.7207 + 1.009
    assert agree.loc[("suvr_cortical", "petmr_raw"), "percent_bias"] == pytest.approx(
        np.mean(100 * (mr_suvr - ct_suvr) / ct_suvr), rel=1e-6)

    regions = pd.read_csv(group / "agreement_regions.tsv", sep="\t").set_index(
        ["region", "comparison"])
    assert regions.loc[("frontal_cortex", "petmr_raw"), "percent_bias"] == pytest.approx(-10.0)
    assert regions.loc[("thalamus", "petmr_harmonized"), "percent_bias"] == pytest.approx(1.0)
    assert regions.loc[("frontal_cortex", "petmr_raw"), "mean_diff"] == pytest.approx(
        (-0.1 * CT_SUVR[:, 0]).mean())

    cut = pd.read_csv(group / "cutoff_agreement.tsv", sep="\t").set_index("comparison")
    assert cut.loc["petmr_raw", "cutoff"] == 24.1
    assert cut.loc["petmr_raw", "n_changed"] == 1
    assert cut.loc["petmr_raw", "percent_agreement"] == pytest.approx(75.0)
    changes = pd.read_csv(group / "cutoff_changes.tsv", sep="\t", dtype={"subject": str})
    assert sorted(zip(changes["comparison"], changes["subject"], strict=True)) == [
        ("petmr_harmonized", "04"), ("petmr_raw", "02")]

    sims = pd.read_csv(group / "correlation_similarity.tsv", sep="\t").set_index("comparison")
    # PET-MR is PET-CT times a constant: identical correlation structure
    assert sims.loc["petmr_raw", "similarity"] == pytest.approx(1.0)
    assert sims.loc["petmr_raw", "n_regions"] == 4  # whole_cerebellum (constant) left out

    wide = pd.read_csv(group / "regions_suvr.tsv", sep="\t")
    assert {"frontal_cortex", "cortical_composite"} <= set(wide.columns)
    assert json.loads((group / "measures.json").read_text())["centiloid"]["Units"] == "CL"
    summary = json.loads(written["summary"].read_text())
    assert summary["PairedSubjects"] == {"PiB": 4}
    assert summary["SkippedParticipants"] == [] and summary["Notes"] == []
    html = written["report"].read_text()
    assert "Bland-Altman" in html and "<svg" in html
    assert (group / "figures" / "trc-PiB_seg-synth_scatter.svg").is_file()


def test_cutoff_override(tmp_path):
    make_dataset(tmp_path)
    run_group(tmp_path, cutoffs={"pib": 15.0}, report=False)
    cut = pd.read_csv(tmp_path / "group" / "cutoff_agreement.tsv", sep="\t")
    assert set(cut["cutoff"]) == {15.0}
    # at 15: CT N P P P; raw N P P P -> no change
    assert cut.set_index("comparison").loc["petmr_raw", "n_changed"] == 0


def test_missing_and_malformed_participants_are_reported(tmp_path, caplog):
    make_dataset(tmp_path)
    pet = tmp_path / "sub-02" / "ses-petmr" / "pet"
    (pet / "sub-02_ses-petmr_trc-PiB_seg-synth_desc-harmonized_suvr.tsv").unlink()
    bad = (tmp_path / "sub-03" / "ses-petct" / "pet"
           / "sub-03_ses-petct_trc-PiB_seg-synth_desc-preproc_measures.tsv")
    bad.write_text("measure\tvalue\tunits\ncentiloid\tlots\tCL\n")
    (tmp_path / "sub-05" / "ses-petct").mkdir(parents=True)
    written = run_group(tmp_path, report=True)
    summary = json.loads(written["summary"].read_text())
    assert summary["SkippedParticipants"] == ["sub-02", "sub-03", "sub-05"]
    reasons = {p["participant"]: p["reason"] for p in summary["Problems"]}
    assert "no matching _suvr.tsv" in reasons["sub-02"]
    assert "non-numeric value 'lots'" in reasons["sub-03"]
    assert "no quantification tables" in reasons["sub-05"]
    assert "skipping participant sub-03" in caplog.text
    agree = pd.read_csv(tmp_path / "group" / "agreement_measures.tsv", sep="\t")
    assert set(agree["n"]) == {2}
    assert "skipped" in written["report"].read_text()


def test_missing_sidecar_is_reported(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "sub-01" / "ses-petct" / "pet"
     / "sub-01_ses-petct_trc-PiB_space-T1w_desc-preproc_pet.json").unlink()
    col = collect_participant_tables(tmp_path)
    assert [p["participant"] for p in col.problems] == ["sub-01"]
    assert "sidecar" in col.problems[0]["reason"]
    assert set(col.images["subject"]) == {"02", "03", "04"}


def test_no_results_is_a_clear_error(tmp_path):
    (tmp_path / "sub-01" / "anat").mkdir(parents=True)
    with pytest.raises(NoParticipantTablesError, match="run the participant level first"):
        run_group(tmp_path)
    with pytest.raises(NoParticipantTablesError, match="does not exist"):
        run_group(tmp_path / "nowhere")


def test_raw_only_and_no_pairs(tmp_path):
    raw_only = tmp_path / "raw"
    make_dataset(raw_only, harmonized=False)
    written = run_group(raw_only)
    summary = json.loads(written["summary"].read_text())
    assert any("raw images only" in n for n in summary["Notes"])
    agree = pd.read_csv(written["agreement_measures"], sep="\t")
    assert set(agree["comparison"]) == {"petmr_raw"}
    assert "Bland-Altman" in written["report"].read_text()

    mr_only = tmp_path / "mr"
    make_dataset(mr_only, petct=False)
    written = run_group(mr_only)
    summary = json.loads(written["summary"].read_text())
    assert any("No subject has both" in n for n in summary["Notes"])
    assert pd.read_csv(written["agreement_measures"], sep="\t").empty
    html = written["report"].read_text()
    assert "no agreement can be shown" in html

    # PET-CT and PET-MR, but never for the same subject
    apart = tmp_path / "apart"
    make_dataset(apart)
    for i in (1, 2):
        shutil.rmtree(apart / f"sub-0{i}" / "ses-petct")
    for i in (3, 4):
        shutil.rmtree(apart / f"sub-0{i}" / "ses-petmr")
    written = run_group(apart)
    summary = json.loads(written["summary"].read_text())
    assert any("No subject has both" in n for n in summary["Notes"])
    assert pd.read_csv(written["agreement_measures"], sep="\t").empty
    assert "no agreement can be shown" in written["report"].read_text()
    assert summary["PairedSubjects"] == {}


def test_atlas_selection(tmp_path):
    make_dataset(tmp_path)
    write_image(tmp_path, "01", "petct", "PiB", "PET-CT", "preproc",
                {"suvr_cortical": 1.1, "centiloid": 9.0}, {"voi_ctx": 1.1}, seg="centiloid")
    written = run_group(tmp_path, atlas="synth", report=False)
    assert set(pd.read_csv(written["measures"], sep="\t")["seg"]) == {"synth"}
    written = run_group(tmp_path, report=False)
    assert set(pd.read_csv(written["measures"], sep="\t")["seg"]) == {"synth", "centiloid"}
    with pytest.raises(ValueError, match="no participant tables with seg-foo"):
        run_group(tmp_path, atlas="foo")


def test_parallel_collection_equals_serial(tmp_path, monkeypatch):
    from bids_harmonize.group import collect

    make_dataset(tmp_path)
    serial = collect.collect_participant_tables(tmp_path, n_procs=1)
    monkeypatch.setattr(collect, "PARALLEL_ABOVE", 1)
    parallel = collect.collect_participant_tables(tmp_path, n_procs=2)
    pd.testing.assert_frame_equal(serial.images, parallel.images)
    pd.testing.assert_frame_equal(serial.measures, parallel.measures)
    pd.testing.assert_frame_equal(serial.regions, parallel.regions)


def test_runs_of_one_session_are_separate_series(tmp_path):
    """Two PET-MR runs of one session are two images (the 'series' column), not duplicates."""
    make_dataset(tmp_path)
    pet = tmp_path / "sub-01" / "ses-petmr" / "pet"
    for path in sorted(pet.glob("sub-01_ses-petmr_trc-PiB_*")):  # sub-01's PET-MR -> run-1
        path.rename(path.with_name(path.name.replace("_trc-PiB_", "_trc-PiB_run-1_")))
    for path in sorted(pet.glob("*_run-1_*")):  # and a run-2 copy
        shutil.copyfile(path, path.with_name(path.name.replace("_run-1_", "_run-2_")))
    col = collect_participant_tables(tmp_path, n_procs=1)
    assert not col.problems
    mr = col.images[(col.images["subject"] == "01") & (col.images["platform"] == "PET-MR")]
    assert sorted(set(mr["series"])) == ["ses-petmr_trc-PiB_run-1", "ses-petmr_trc-PiB_run-2"]
    assert len(mr) == 4  # two runs x raw/harmonized
    written = run_group(tmp_path, cutoffs={"PiB": 24.1})
    measures = pd.read_csv(written["measures"], sep="\t", dtype={"subject": str})
    assert set(measures.loc[measures["subject"] == "01", "series"]) == {
        "ses-petct_trc-PiB", "ses-petmr_trc-PiB_run-1", "ses-petmr_trc-PiB_run-2"}
    assert "series" in json.loads(written["measures"].with_suffix(".json").read_text())
