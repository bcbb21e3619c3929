"""Regional uncertainty columns: SUVR and Centiloid SD over the harmonizer's ensemble."""

from __future__ import annotations

import nibabel as nb
import numpy as np
import pandas as pd

from bids_harmonize.interfaces.quant import RegionalQuantification
from bids_harmonize.synth.template import template_labels


def test_tables_get_member_spread(tmp_path, monkeypatch):
    labels = template_labels()
    lab = np.asanyarray(labels.dataobj)
    rng = np.random.default_rng(0)
    uptake = np.where(lab > 0, 1.0 + rng.uniform(0.5, 1.5, lab.max() + 1)[lab], 0.0)
    name = "sub-01_ses-petmr_trc-PiB_space-MNI152NLin2009aSym_desc-harmonized_pet.nii.gz"
    paths = []
    for k, gain in enumerate((1.0, 1.04, 0.97)):  # member k scales the cortex differently
        data = uptake * np.where((lab > 0) & (lab < 10), gain, 1.0)
        path = tmp_path / f"m{k}" / name
        path.parent.mkdir()
        nb.Nifti1Image(data.astype(np.float32), labels.affine).to_filename(path)
        paths.append(str(path))
    monkeypatch.chdir(tmp_path)
    node = RegionalQuantification(in_file=paths[0], tracer="PiB", desc="harmonized",
                                  members=paths, sd_scale=2.0)
    out = node.run().outputs
    regions = pd.read_csv(out.out_regions, sep="\t")
    measures = pd.read_csv(out.out_measures, sep="\t").set_index("measure")
    assert "suvr_sd" in regions and regions["suvr_sd"].max() > 0
    ref = regions.loc[regions["region"] == regions["reference_region"].iloc[0], "suvr_sd"]
    assert float(ref.iloc[0]) == 0.0  # the reference region's SUVR is 1 in every member
    assert measures.loc["centiloid", "value_sd"] > 0
    assert np.isnan(measures.loc["positive", "value_sd"])
    sd_1 = RegionalQuantification(in_file=paths[0], tracer="PiB", desc="harmonized",
                                  members=paths, sd_scale=1.0)
    monkeypatch.chdir(tmp_path / "m1")
    cl_1 = pd.read_csv(sd_1.run().outputs.out_measures, sep="\t").set_index("measure")
    assert measures.loc["centiloid", "value_sd"] == 2 * cl_1.loc["centiloid", "value_sd"]
    assert "suvr_sd" in open(out.out_regions_json).read()
