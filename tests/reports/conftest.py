"""A tiny derivatives tree (16-voxel cubes) for report tests: fast, no pipeline run."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

SHAPE = (16, 18, 16)


def _img(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb.Nifti1Image(data.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])).to_filename(path)
    return path


def _suvr(path: Path, scale: dict[str, float]) -> None:
    regions = [("cortex", "region", 1.5), ("striatum", "region", 1.2),
               ("cerebellum", "region", 1.0), ("cortical_composite", "composite", 1.45)]
    lines = ["region\tkind\tindex\tvolume_mm3\tn_voxels\tmean\tsd\treference_region\t"
             "reference_mean\tsuvr"]
    for k, (name, kind, suvr) in enumerate(regions, 1):
        value = suvr * scale.get(name, 1.0)
        lines.append(f"{name}\t{kind}\t{k if kind == 'region' else 'n/a'}\t800\t100\t"
                     f"{value * 2:.6f}\t0.1\tcerebellum\t2.0\t{value:.6f}")
    path.write_text("\n".join(lines) + "\n")


def _pet(root: Path, sub: str, ses: str, desc: str, data: np.ndarray, meta: dict) -> Path:
    stem = f"sub-{sub}_ses-{ses}_trc-PiB"
    pet_dir = root / f"sub-{sub}" / f"ses-{ses}" / "pet"
    img = _img(pet_dir / f"{stem}_space-T1w_desc-{desc}_pet.nii.gz", data)
    (pet_dir / f"{stem}_space-T1w_desc-{desc}_pet.json").write_text(json.dumps(meta))
    return img


@pytest.fixture
def derivatives(tmp_path) -> Path:
    """sub-01: PET-CT + PET-MR (+ harmonized); sub-02: PET-MR only, with uncertainty and OOD."""
    out = tmp_path / "out"
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    brain = (xx ** 2 + yy ** 2 + zz ** 2) < 0.7
    activity = np.where(brain, 2.0 + (xx ** 2 + yy ** 2 + zz ** 2), 0.0)
    edge = np.clip(xx ** 2 + yy ** 2 + zz ** 2, 0, 1)
    for sub in ("01", "02"):
        _img(out / f"sub-{sub}" / "anat" / f"sub-{sub}_desc-brain_mask.nii.gz",
             brain.astype(np.float32))
    base = {"TracerName": "PiB", "Units": "g/mL", "TimeWindow": [50.0, 70.0]}
    ct_meta = {**base, "Platform": "PET-CT", "ManufacturersModelName": "Biograph Vision",
               "PlatformInference": "ManufacturersModelName", "AttenuationCorrection": "CT-based"}
    mr_meta = {**base, "Platform": "PET-MR", "ManufacturersModelName": "Biograph mMR",
               "PlatformInference": "ManufacturersModelName",
               "AttenuationCorrection": "MR-based Dixon 4-class segmentation"}
    harm_meta = {**mr_meta, "Harmonization": {"ModelName": "demo", "ModelVersion": "0.1.0",
                                              "Notes": ["inputs resampled from 2 x 2 x 2.2 mm"]}}
    noise = rng.normal(0, 0.02, SHAPE)
    _pet(out, "01", "petct", "preproc", activity + noise, ct_meta)
    _pet(out, "01", "petmr", "preproc", activity * (1 - 0.15 * edge) + noise, mr_meta)
    _pet(out, "01", "petmr", "harmonized", activity * (1 - 0.02 * edge) + noise, harm_meta)
    pet = out / "sub-01"
    _suvr(pet / "ses-petct/pet/sub-01_ses-petct_trc-PiB_seg-synth_desc-preproc_suvr.tsv", {})
    _suvr(pet / "ses-petmr/pet/sub-01_ses-petmr_trc-PiB_seg-synth_desc-preproc_suvr.tsv",
          {"cortex": 0.9, "cortical_composite": 0.9})
    _suvr(pet / "ses-petmr/pet/sub-01_ses-petmr_trc-PiB_seg-synth_desc-harmonized_suvr.tsv",
          {"cortex": 0.99, "cortical_composite": 0.98})
    ood = {"OODDecision": "warn", "OODScore": np.float64(0.734).item(),
           "OODComponents": {"metadata_support": 0.2, "feature_distance": 0.9,
                             "ensemble_disagreement": 0.4},
           "AttenuationCorrectionSetup": "dixon-4class"}
    _pet(out, "02", "petmr", "preproc", activity * (1 - 0.15 * edge), mr_meta)
    harm = _pet(out, "02", "petmr", "harmonized", activity, {**harm_meta, **ood})
    _img(Path(str(harm).replace("desc-harmonized", "desc-uncertainty")), 0.05 * edge * brain)
    return out
