"""Scanner mu-map checks: units, the PET it belongs to, field of view; fallback to the setup."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize import mumap


def _write(path, data, affine=None):
    nb.Nifti1Image(np.asarray(data, np.float32), np.eye(4) * 2 if affine is None else affine
                   ).to_filename(path)
    return path


@pytest.fixture
def series(tmp_path):
    """A PET-MR series with a usable mu-map, both 2 mm, 12^3 voxels."""
    pet_dir = tmp_path / "sub-01" / "ses-mr" / "pet"
    pet_dir.mkdir(parents=True)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    pet = np.zeros((12, 12, 12))
    pet[3:9, 3:9, 3:9] = 5.0
    pet_path = _write(pet_dir / "sub-01_ses-mr_trc-PiB_pet.nii.gz", pet, aff)
    mu = np.full((12, 12, 12), 0.096)
    mu_path = _write(pet_dir / "sub-01_ses-mr_trc-PiB_mumap.nii.gz", mu, aff)
    side = {"Units": "cm^-1", "IntendedFor": ["bids::sub-01/ses-mr/pet/" + pet_path.name]}
    (pet_dir / "sub-01_ses-mr_trc-PiB_mumap.json").write_text(json.dumps(side))
    meta = {"ManufacturersModelName": "Biograph mMR", "SoftwareVersions": "syngo MR B20P",
            "AttenuationCorrection": "MR-based Dixon"}
    return pet_path, mu_path, meta


def test_usable_mumap_is_found(series):
    pet, mu, meta = series
    assert mumap.mumap_problems(mu, pet) == []
    att = mumap.series_attenuation(pet, meta)
    assert att.mumap == mu and att.setup == "dixon-nobone" and not att.notes
    assert att.sidecar()["ScannerMuMap"] == "used"


def test_hu_mumap_falls_back_to_the_setup(series):
    pet, mu, meta = series
    _write(mu, np.full((12, 12, 12), 40.0) - 1040.0 * (np.arange(12) < 2)[:, None, None],
           np.diag([2.0, 2.0, 2.0, 1.0]))
    att = mumap.series_attenuation(pet, meta)
    assert att.mumap is None and att.setup == "dixon-nobone"
    assert "HU of a CT" in att.notes[0] and "fell back to setup 'dixon-nobone'" in att.notes[0]


def test_mumap_of_another_session_without_setup_is_an_error(series):
    pet, mu, _ = series
    side = mu.with_name(mu.name.replace(".nii.gz", ".json"))
    side.write_text(json.dumps({"Units": "cm^-1",
                                "IntendedFor": "bids::sub-01/ses-ct/pet/sub-01_ses-ct_trc-PiB_pet.nii.gz"}))
    with pytest.raises(mumap.MuMapError, match=r"_mumap.nii.gz: IntendedFor names another PET") as err:
        mumap.series_attenuation(pet, {"ManufacturersModelName": "Unknown 3000"})
    assert "\n" not in str(err.value)


def test_mumap_that_misses_the_pet_field_of_view(series):
    pet, mu, meta = series
    shifted = np.diag([2.0, 2.0, 2.0, 1.0])
    shifted[:3, 3] = [10.0, 0.0, 0.0]  # 5 voxels off along x: the uptake leaves the mu-map
    _write(mu, np.full((6, 12, 12), 0.096), shifted)
    problems = mumap.mumap_problems(mu, pet)
    assert len(problems) == 1 and problems[0].startswith("does not cover the PET field of view")


def test_no_mumap(series):
    pet, mu, meta = series
    mu.unlink()
    att = mumap.series_attenuation(pet, meta)
    assert att.mumap is None and att.setup == "dixon-nobone" and att.notes == []
