"""Platform inference and discovery, on hand-made tiny BIDS trees."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize.bids import InputError, discover, read_platform_map
from bids_harmonize.platforms import infer_platform

SIDECAR = {
    "TracerName": "PiB", "TracerRadionuclide": "C11", "Units": "Bq/mL",
    "FrameTimesStart": [3000, 3600], "FrameDuration": [600, 600],
    "ManufacturersModelName": "Biograph mMR", "AttenuationCorrection": "MR-based Dixon",
}


def _nifti(path, shape=(8, 8, 8), value=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full(shape, value, dtype=np.float32)
    data[(0,) * len(shape)] = 0  # some signal: a constant image is refused
    nb.save(nb.Nifti1Image(data, np.eye(4)), path)
    return path


def _dataset(root, *, subjects=("01",), t1w=True, sidecar=SIDECAR, pet_shape=(8, 8, 8, 2)):
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "t", "BIDSVersion": "1.10.0"}))
    for sub in subjects:
        ses = root / f"sub-{sub}" / "ses-petmr"
        if t1w:
            _nifti(ses / "anat" / f"sub-{sub}_ses-petmr_T1w.nii.gz")
        pet = _nifti(ses / "pet" / f"sub-{sub}_ses-petmr_trc-PiB_pet.nii.gz", pet_shape)
        if sidecar is not None:
            pet.with_name(pet.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return root


def test_model_outranks_text_and_conflict_is_logged(caplog):
    meta = {"ManufacturersModelName": "Biograph mMR", "AttenuationCorrection": "CT-based"}
    platform, how = infer_platform(meta, subject="01", session="a", has_ct=False)
    assert platform == "PET-MR" and "conflicting" in how
    assert "trusting the scanner model" in caplog.text


@pytest.mark.parametrize("meta, has_ct, expected", [
    ({"ManufacturersModelName": "Discovery MI"}, False, "PET-CT"),
    ({"ManufacturersModelName": "uPMR 790"}, True, "PET-MR"),
    ({"AttenuationCorrection": "Dixon-based MRAC"}, False, "PET-MR"),
    ({"AttenuationCorrection": "CT-based"}, False, "PET-CT"),
    ({}, True, "PET-CT"),
    ({}, False, None),
    # PET-only scanners with transmission (measured) attenuation correction
    ({"ManufacturersModelName": "High-Resolution Research Tomograph (HRRT, CTI/Siemens)"},
     False, "PET"),
    ({"ManufacturersModelName": "Siemens HR+"}, False, "PET"),
    ({"ManufacturersModelName": "GE Advance"}, False, "PET"),
    ({"AttenuationCorrection": "10-min transmission scan"}, False, "PET"),
])
def test_inference_order(meta, has_ct, expected):
    assert infer_platform(meta, subject="01", session="x", has_ct=has_ct)[0] == expected


def test_unknown_scanner_is_named_with_the_way_to_add_it(tmp_path):
    sidecar = {**SIDECAR, "ManufacturersModelName": "Quadra 9000"}
    del sidecar["AttenuationCorrection"]
    found = discover(_dataset(tmp_path / "d", sidecar=sidecar))
    (problem,) = found.excluded["01"]
    assert 'scanner model "Quadra 9000" is not in bids_harmonize/data/scanners.tsv' in problem
    assert "--platform-map" in problem and "'Quadra 9000<TAB>PET-MR'" in problem
    # the row it asks for works
    tsv = tmp_path / "map.tsv"
    tsv.write_text("key\tplatform\nQuadra 9000\tPET\n")
    (plan,) = discover(tmp_path / "d", platform_map=read_platform_map(tsv)).plans
    assert plan.pet[0].platform == "PET"


def test_platform_map_wins(tmp_path):
    tsv = tmp_path / "map.tsv"
    tsv.write_text("key\tplatform\nses-x\tPET-CT\n")
    mapping = read_platform_map(tsv)
    meta = {"ManufacturersModelName": "Biograph mMR"}
    assert infer_platform(meta, subject="01", session="x", has_ct=False,
                          platform_map=mapping) == ("PET-CT", "--platform-map entry 'ses-x'")
    tsv.write_text("key\tplatform\nses-x\tPET-XX\n")
    with pytest.raises(InputError, match="not PET-MR, PET-CT or PET"):
        read_platform_map(tsv)


def test_discovery_finds_series(tmp_path):
    found = discover(_dataset(tmp_path / "d"))
    assert not found.skipped and not found.excluded
    (plan,) = found.plans
    (series,) = plan.pet
    assert series.tracer == "PiB" and series.platform == "PET-MR" and series.session == "petmr"


def test_subject_without_t1w_is_excluded_others_run(tmp_path):
    root = _dataset(tmp_path / "d", subjects=("01",))
    _dataset(root, subjects=("02",), t1w=False)
    found = discover(root)
    assert [p.subject for p in found.plans] == ["01"]
    assert list(found.excluded) == ["02"] and "no T1w" in found.excluded["02"][0]


def test_unknown_participant(tmp_path):
    with pytest.raises(InputError, match="sub-07"):
        discover(_dataset(tmp_path / "d"), participant_label=["07"])


@pytest.mark.parametrize("kwargs, message", [
    ({"sidecar": None}, "without a JSON sidecar"),
    ({"sidecar": {**SIDECAR, "FrameDuration": []}}, "lacks FrameDuration"),
    ({"pet_shape": (8, 8, 8, 3)}, "3 frame(s) but FrameTimesStart has 2"),
    ({"sidecar": {**SIDECAR, "FrameTimesStart": [0, 600]}}, "frames cover 0.0 of 20.0 min"),
])
def test_bad_pet_inputs(tmp_path, kwargs, message):
    found = discover(_dataset(tmp_path / "d", **kwargs))
    assert not found.plans
    (problem,) = found.excluded["01"]
    assert message in problem


def _problem(root):
    found = discover(root)
    assert not found.plans
    (problem,) = found.excluded["01"]
    return problem


def test_corrupt_empty_and_nan_images(tmp_path):
    root = _dataset(tmp_path / "d")
    pet = root / "sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_pet.nii.gz"
    pet.write_bytes(b"")
    assert "empty file" in _problem(root)
    pet.write_bytes(b"not a nifti at all")
    assert "not a readable NIfTI" in _problem(root)
    data = np.ones((8, 8, 8, 2), dtype=np.float32)
    data[0, 0, 0, 0] = np.nan
    nb.save(nb.Nifti1Image(data, np.eye(4)), pet)
    assert "NaN" in _problem(root)
