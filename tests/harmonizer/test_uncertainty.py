"""Deep-ensemble uncertainty: members trained by the stage engine, calibration, OOD wiring."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from bids_harmonize.harmonizer import uncertainty as unc
from bids_harmonize.harmonizer.phantom import phantom_pair
from bids_harmonize.harmonizer.weights import ModelError, load_model


def test_card_lists_verified_members(ensemble_dir):
    card = json.loads((ensemble_dir / "model.json").read_text())
    block = card["uncertainty"]
    assert [m["file"] for m in block["members"]] == [unc.member_file(1), unc.member_file(2)]
    assert len({m["seed"] for m in block["members"]}) == 2
    assert block["calibrated"] and block["scale"] > 0
    cal = block["calibration"]
    assert cal["n_regions"] == 8
    # the scale is fitted to give the target coverage on the held-out regions: it is the
    # 'higher' LEVEL quantile of |error| / (z * sd), so one region sits exactly on the limit
    # of its interval, inside or out by one rounding (0.875 = 7 of 8 was seen); every other
    # region of the target count is inside (test_calibration_scale_is_the_smallest_covering)
    needed = math.ceil(unc.LEVEL * cal["n_regions"] - 1e-9)
    assert round(cal["coverage_scaled"] * cal["n_regions"]) >= needed - 1
    assert block["training_disagreement"] > 0
    stats = card["ood"]["feature_statistics"]
    assert stats["n"] == 3 and len(stats["mean"]) == 6
    model = load_model(ensemble_dir)
    assert len(unc.load_members(model)) == 2


@pytest.mark.parametrize("n", [8, 50])
def test_calibration_scale_is_the_smallest_covering(n):
    """The fitted scale reaches the target coverage, with the boundary region on its limit:
    a hair more covers it for sure, a hair less loses it (no floating-point boundary here)."""
    rng = np.random.default_rng(n)
    errors, sds = rng.normal(0, 0.05, n), rng.uniform(0.01, 0.03, n)
    scale = unc.calibration_scale(errors, sds)
    assert unc.interval_coverage(errors, scale * (1 + 1e-9) * sds) >= unc.LEVEL
    assert unc.interval_coverage(errors, scale * (1 - 1e-6) * sds) < \
        unc.interval_coverage(errors, scale * (1 + 1e-9) * sds)


def test_members_differ_and_give_uncertainty(ensemble_dir, phantom_pairs):
    model = load_model(ensemble_dir)
    a = phantom_pairs[0].load()
    result, sd, members, assessment = unc.harmonize_with_assessment(
        a["pet_mr"], a["t1w"], a["brain_mask"], model, tracer="PiB", tracer_family="amyloid",
        device="cpu")
    brain = a["brain_mask"] > 0.5
    assert result.member_log_ratios.shape == (3, *a["pet_mr"].shape)
    assert sd.shape == a["pet_mr"].shape and float(np.median(sd[brain])) > 0
    assert len(members) == 3
    np.testing.assert_allclose(members[0], result.harmonized, rtol=1e-5)
    assert assessment.decision in ("apply", "warn")
    assert set(assessment.components) == {"metadata", "feature", "disagreement"}


def test_unknown_setup_passthrough_writes_the_input(ensemble_dir, phantom_pairs):
    model = load_model(ensemble_dir)
    model.card["training_data"]["ac_setups"] = ["dixon-nobone"]
    a = phantom_pairs[0].load()
    result, _, members, assessment = unc.harmonize_with_assessment(
        a["pet_mr"], a["t1w"], a["brain_mask"], model, ac_setup="atlas", policy="passthrough",
        device="cpu")
    assert assessment.decision == "passthrough" and assessment.components["metadata"] == 1.0
    np.testing.assert_array_equal(result.harmonized, a["pet_mr"].astype(np.float32))
    assert not result.log_ratio.any()
    assert "passthrough" in result.notes[-1]


def test_tampered_member_is_refused(ensemble_dir, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(ensemble_dir, copy)
    path = copy / unc.member_file(1)
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelError, match="sha256"):  # refused when the model is loaded
        unc.load_members(load_model(copy))


def test_coverage_of_a_calibrated_gaussian():
    rng = np.random.default_rng(0)
    sd = rng.uniform(0.01, 0.05, 4000)
    errors = rng.normal(0.0, 2.0 * sd)  # the ensemble is over-confident by a factor 2
    assert unc.interval_coverage(errors, sd) < 0.6
    scale = unc.calibration_scale(errors[:2000], sd[:2000])
    assert scale == pytest.approx(2.0, rel=0.1)
    assert unc.interval_coverage(errors[2000:], scale * sd[2000:]) == pytest.approx(0.9, abs=0.03)


def _write(path, data):
    import nibabel as nb

    nb.Nifti1Image(np.asarray(data, dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0])).to_filename(path)
    return str(path)


@pytest.mark.parametrize("policy", ["warn", "fail"])
def test_interface_writes_uncertainty_and_ood_fields(ensemble_dir, tmp_path, monkeypatch, policy):
    import nibabel as nb

    from bids_harmonize.harmonizer.ood import OODFailure
    from bids_harmonize.interfaces.harmonize import Harmonize

    s = phantom_pair(7, shape=(24, 28, 24), tracer="PiB")
    files = {k: _write(tmp_path / f"{k}.nii.gz", getattr(s, v))
             for k, v in (("in_pet", "pet_mr"), ("in_t1w", "t1w"), ("in_mask", "brain_mask"))}
    monkeypatch.chdir(tmp_path)
    # the tiny model's card lists no setup: an inferred setup is unknown to it, so OOD
    node = Harmonize(**files, model_dir=str(ensemble_dir), tracer="PiB", ac_setup="zte",
                     ac_setup_inference="AttenuationCorrection 'ZTE'", ood_policy=policy,
                     mumap_notes=["scanner mu-map not used (test)"], device="cpu")
    if policy == "fail":
        with pytest.raises(OODFailure, match="out of distribution.*--ood-policy fail"):
            node.run()
        return
    out = node.run().outputs
    info = out.model_info
    assert info["OODDecision"] == "warn" and info["OODScore"] >= info["OODThreshold"]
    assert info["AttenuationCorrectionSetup"] == "zte"
    assert info["Uncertainty"]["Members"] == 3 and info["Uncertainty"]["Calibrated"]
    assert info["notes"][0] == "scanner mu-map not used (test)"
    sd = np.asarray(nb.load(out.out_uncertainty).dataobj)
    assert sd.shape == s.pet_mr.shape and sd[s.brain_mask > 0.5].mean() > 0
    assert len(out.out_members) == 3 and out.uncertainty_scale == info["Uncertainty"]["CalibrationScale"]
    # the guard fitted on the held-out phantoms (pooled: they have no setup of zte)
    assert info["CorrectionGuard"]["Source"] == "pooled" and info["CorrectionGuard"]["HeldOutPairs"] == 2
