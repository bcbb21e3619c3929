"""Group image table: attenuation setup and the harmonizer's OOD decision from the sidecars."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from bids_harmonize.group.collect import add_harmonization_columns


def test_harmonization_columns(tmp_path):
    pet = tmp_path / "sub-01" / "ses-petmr" / "pet"
    pet.mkdir(parents=True)
    stem = "sub-01_ses-petmr_trc-PiB_space-T1w_desc-{}_pet.json"
    (pet / stem.format("preproc")).write_text(json.dumps(
        {"Platform": "PET-MR", "AttenuationCorrectionSetup": "atlas"}))
    (pet / stem.format("harmonized")).write_text(json.dumps(
        {"Platform": "PET-MR", "AttenuationCorrectionSetup": "atlas", "OODDecision": "warn",
         "OODScore": 0.93}))
    images = pd.DataFrame({"subject": ["01", "01", "02"], "series": ["ses-petmr_trc-PiB"] * 3,
                           "version": ["raw", "harmonized", "harmonized"]})
    out = add_harmonization_columns(images, tmp_path)
    assert out["ac_setup"].tolist()[:2] == ["atlas", "atlas"]
    assert out["ood_decision"].tolist()[:2] == [None, "warn"]
    assert out["ood_score"].iloc[1] == 0.93 and np.isnan(out["ood_score"].iloc[0])
    assert out["ood_decision"].iloc[2] is None  # sub-02 has no outputs
