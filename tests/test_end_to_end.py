"""``participant`` then ``group`` on a generated 2-subject dataset, validated as BIDS.

A third subject, a copy of sub-02 whose PET-MR frames in the uptake window are
empty, passes the input checks but fails at run time: the run goes on for the
others, exits 1 and names it (one run serves both checks, to keep CI short).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_harmonize.cli.run import main

pytestmark = pytest.mark.slow


def _add_broken_subject(bids):
    """sub-03: sub-02's files, with the PET-MR frames of the PiB window (50-70 min) zeroed."""
    for src in sorted((bids / "sub-02").rglob("*")):
        if src.is_file():
            dst = bids / str(src.relative_to(bids)).replace("sub-02", "sub-03")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    pet = bids / "sub-03/ses-petmr/pet/sub-03_ses-petmr_trc-PiB_pet.nii.gz"
    img = nb.load(pet)
    data = np.asarray(img.dataobj, dtype=np.float32)
    starts = json.loads(pet.with_name(pet.name.replace(".nii.gz", ".json")).read_text())[
        "FrameTimesStart"]
    data[..., [i for i, t in enumerate(starts) if t >= 50 * 60]] = 0
    nb.save(nb.Nifti1Image(data, img.affine, img.header), pet)
    participants = bids / "participants.tsv"
    lines = participants.read_text().splitlines()
    lines.append("\t".join(["sub-03", *lines[-1].split("\t")[1:]]))
    participants.write_text("\n".join(lines) + "\n")


def _add_excluded_subject(bids):
    """sub-04: sub-02's files, with one frame fewer in the sidecar than in the PET-MR image.

    Valid BIDS (the validator does not read NIfTI headers here), refused by the
    pre-flight checks: excluded with its reason while the others run.
    """
    for src in sorted((bids / "sub-02").rglob("*")):
        if src.is_file():
            dst = bids / str(src.relative_to(bids)).replace("sub-02", "sub-04")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    sidecar = bids / "sub-04/ses-petmr/pet/sub-04_ses-petmr_trc-PiB_pet.json"
    meta = json.loads(sidecar.read_text())
    meta["FrameTimesStart"], meta["FrameDuration"] = (meta["FrameTimesStart"][:-1],
                                                      meta["FrameDuration"][:-1])
    sidecar.write_text(json.dumps(meta))
    participants = bids / "participants.tsv"
    lines = participants.read_text().splitlines()
    lines.append("\t".join(["sub-04", *lines[-1].split("\t")[1:]]))
    participants.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def run(synth_bids, templateflow_home, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    bids = root / "bids"
    shutil.copytree(synth_bids, bids)
    _add_broken_subject(bids)
    _add_excluded_subject(bids)
    out = root / "out"
    common = ["--output-spaces", "MNI152NLin2009aSym", "T1w", "--sloppy", "--nprocs", "2",
              "--omp-nthreads", "1", "-w", str(root / "work")]
    participant_code = main([str(bids), str(out), "participant", *common])
    group_code = main([str(bids), str(out), "group"])
    return out, participant_code, group_code


@pytest.fixture(scope="module")
def derivatives(run):
    return run[0]


def test_failed_subject_is_reported_and_others_finish(run, capsys):
    out, participant_code, group_code = run
    assert participant_code == 1 and group_code == 0
    assert list((out / "sub-03" / "log").rglob("crash-*"))
    assert not (out / "sub-01" / "log").exists()
    crash = next((out / "sub-03" / "log").rglob("crash-*")).read_text()
    assert "hold no signal" in crash
    assert "Errors" in (out / "sub-03.html").read_text()
    # sub-03's PET-CT branch still finished
    assert list((out / "sub-03/ses-petct/pet").glob("*_space-T1w_desc-preproc_pet.nii.gz"))
    # the group level keeps sub-03's PET-CT row; it has no PET-MR value to pair
    measures = pd.read_csv(out / "group" / "measures.tsv", sep="\t", dtype={"subject": str})
    assert set(measures.loc[measures.subject == "03", "platform"]) == {"PET-CT"}
    pairs = pd.read_csv(out / "group" / "pairs.tsv", sep="\t", dtype={"subject": str},
                        na_values="n/a")
    assert pairs.loc[pairs.subject == "03", "petmr_raw"].isna().all()
    assert pairs.loc[pairs.subject != "03", "petmr_raw"].notna().all()


def test_status_records(run):
    """One record per participant: ok, failed (with its crash file), excluded (with why)."""
    from bids_harmonize.runstatus import is_complete, read_status

    out = run[0]
    records = {r["participant"]: r for r in read_status(out)}
    assert {k: r["status"] for k, r in records.items()} == {
        "01": "ok", "02": "ok", "03": "failed", "04": "excluded"}
    assert records["03"]["crash_files"] and (out / records["03"]["crash_files"][0]).is_file()
    assert "FrameTimesStart has 5" in records["04"]["reasons"][0]
    assert not (out / "sub-04").exists()
    assert all(is_complete(out, s) for s in ("01", "02", "03"))
    assert all(r["runtime_s"] is not None and r["finished"] for r in records.values())
    assert not list((out / "logs" / "locks").glob("*.lock"))


def _pet(out, sub, ses, rest):
    return out / f"sub-{sub}" / f"ses-{ses}" / "pet" / f"sub-{sub}_ses-{ses}_trc-PiB_{rest}"


@pytest.mark.parametrize("sub", ["01", "02"])
def test_participant_outputs(derivatives, sub):
    out = derivatives
    anat = out / f"sub-{sub}" / "anat"
    for name in ("desc-preproc_T1w.nii.gz", "desc-brain_mask.nii.gz", "label-GM_probseg.nii.gz",
                 "from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.h5"):
        assert (anat / f"sub-{sub}_{name}").is_file(), name
    for ses in ("petct", "petmr"):
        for space in ("T1w", "MNI152NLin2009aSym"):
            assert _pet(out, sub, ses, f"space-{space}_desc-preproc_pet.nii.gz").is_file()
        assert _pet(out, sub, ses, "seg-synth_desc-preproc_suvr.tsv").is_file()
        assert _pet(out, sub, ses, "seg-synth_desc-preproc_measures.tsv").is_file()
    assert (out / f"sub-{sub}" / "ses-petct" / "anat" /
            f"sub-{sub}_ses-petct_space-T1w_desc-preproc_CT.nii.gz").is_file()
    assert _pet(out, sub, "petmr", "space-T1w_desc-harmonized_pet.nii.gz").is_file()
    assert _pet(out, sub, "petmr", "seg-synth_desc-harmonized_suvr.tsv").is_file()
    assert _pet(out, sub, "petmr", "space-T1w_desc-pseudo_CT.nii.gz").is_file()
    assert not list((out / f"sub-{sub}" / "ses-petct" / "pet").glob("*harmonized*"))
    assert (out / f"sub-{sub}.html").is_file()
    figures = {p.name.split("_desc-")[-1] for p in (out / f"sub-{sub}" / "figures").glob("*.svg")}
    assert {"template_T1w.svg", "pet2t1w_pet.svg", "window_pet.svg", "harmonization_pet.svg",
            "ct2t1w_CT.svg"} <= figures


def test_sidecar_provenance(derivatives):
    meta = json.loads(_pet(derivatives, "01", "petmr",
                           "space-T1w_desc-harmonized_pet.json").read_text())
    assert meta["Platform"] == "PET-MR"
    assert "ManufacturersModelName" in meta["PlatformInference"]
    assert all(s.startswith("bids:raw:sub-01/") for s in meta["Sources"])
    assert meta["SkullStripped"] is False and meta["SpatialReference"]
    assert meta["TimeWindowRequested"] == [50.0, 70.0]
    assert meta["Harmonization"]["ModelSha256"]
    assert meta["SoftwareVersions"]["torch"]
    ct_meta = json.loads(_pet(derivatives, "01", "petct",
                              "space-T1w_desc-preproc_pet.json").read_text())
    assert ct_meta["Platform"] == "PET-CT" and "Harmonization" not in ct_meta
    description = json.loads((derivatives / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert list((derivatives / "logs").glob("config-*.toml"))


def test_derivatives_are_valid_bids(derivatives):
    exe = shutil.which("bids-validator-deno")
    if exe is None:
        pytest.skip("bids-validator-deno is not installed")
    proc = subprocess.run([exe, str(derivatives), "--json"], capture_output=True, text=True,
                          timeout=300, check=False)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    errors = [i for i in issues if i.get("severity") == "error"]
    assert not errors, json.dumps(errors[:5], indent=1)


def test_group_outputs(derivatives):
    group = derivatives / "group"
    assert group.is_dir()
    assert list(group.glob("*.tsv"))
    assert list(group.rglob("*.html"))


def _mean_abs_suvr_diff(regions, subject, version):
    """Mean absolute regional SUVR difference (%) of one PET-MR version to PET-CT, over the
    synth atlas' regions outside the reference region (whole cerebellum, for PiB)."""
    from bids_harmonize.atlas import COMPOSITES, synth_label_table

    reference = set(COMPOSITES["whole_cerebellum"])
    base = [n for n in synth_label_table()["name"] if n not in reference]
    assert len(base) == 21
    rows = regions[regions["subject"] == subject].set_index(["platform", "version"])
    ct = rows.loc[("PET-CT", "raw"), base].astype(float)
    mr = rows.loc[("PET-MR", version), base].astype(float)
    return float((100 * (mr / ct - 1)).abs().mean())


def test_harmonization_moves_towards_petct(derivatives):
    """The promise, on the README demo's subjects with the shipped model, one thread per
    registration (repeatable): the Dixon-without-bone subject's regional SUVR comes closer to
    its PET-CT (by a clear margin, not a rounding one), and the bone-aware subject's gets no
    more than 0.3 points worse (issue 19)."""
    regions = pd.read_csv(derivatives / "group" / "regions_suvr.tsv", sep="\t",
                          dtype={"subject": str})
    setups = regions[regions["platform"] == "PET-MR"].groupby("subject")["ac_setup"].first()
    nobone = _mean_abs_suvr_diff(regions, "01", "raw"), _mean_abs_suvr_diff(regions, "01",
                                                                            "harmonized")
    bone = _mean_abs_suvr_diff(regions, "02", "raw"), _mean_abs_suvr_diff(regions, "02",
                                                                         "harmonized")
    assert setups["01"] == "dixon-nobone" and setups["02"] == "dixon-bone"
    assert nobone[1] < nobone[0] - 0.5, f"dixon-nobone raw -> harmonized: {nobone}"
    assert bone[1] < bone[0] + 0.3, f"dixon-bone raw -> harmonized: {bone}"


def test_calibrate_model_on_a_sites_pairs(derivatives, tmp_path, capsys):
    """``train --calibrate-model demo``: the shipped model calibrated on this dataset's two
    paired subjects (neither is among its training subjects, seed 0 vs 100): a verified
    copy with a new scale and a guard chosen on them, the weights untouched."""
    from bids_harmonize.harmonizer.weights import default_model_dir, load_model, read_card

    bids = tmp_path / "bids"
    bids.mkdir()  # train reads only the participant outputs
    target = tmp_path / "calibrated"
    code = main([str(bids), str(derivatives), "train", "--calibrate-model", "demo",
                 "--model-dir", str(target), "--participant-label", "01", "02",
                 "--device", "cpu", "--omp-nthreads", "2"])
    assert code == 0 and "calibrated model written" in capsys.readouterr().out
    card, _ = read_card(target)
    shipped, _ = read_card(default_model_dir())
    assert card["files"] == shipped["files"]  # same weights, every file verified on load
    load_model(target)
    assert card["calibrated_from"]["subjects"] == ["01", "02"]
    assert card["uncertainty"]["calibration"]["subjects"] == ["01", "02"]
    pooled = card["guard"]["pooled"]
    assert pooled["n_pairs"] == 2 and pooled["subjects"] == ["01", "02"]
    # one PiB pair per setup: too few for a setup's own strength, so only the pooled one
    assert card["guard"]["by_setup"] == {} and card["guard"]["by_setup_family"] == {}
    # never worse than as acquired on the pairs it was chosen on, in the regional error and
    # in the Centiloid cortex (which may rule out the full correction even where it has the
    # smaller regional error)
    assert pooled["error_guarded"] <= pooled["error_as_acquired"]
    assert pooled["summary_error_guarded"] <= pooled["summary_error_as_acquired"]
    assert pooled["error_guarded"] == pooled["error_by_k"][str(pooled["k"])]
    # a second run into the same folder needs --overwrite-model
    again = main([str(bids), str(derivatives), "train", "--calibrate-model", "demo",
                  "--model-dir", str(target), "--participant-label", "01", "02"])
    assert again == 2
