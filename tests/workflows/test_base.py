"""Graph-building tests over option combinations (nothing is run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bids_harmonize.bids import PetSeries, SubjectPlan
from bids_harmonize.templates import get_template
from bids_harmonize.workflows.base import init_bids_harmonize_wf

META = {"FrameTimesStart": [3000, 3600], "FrameDuration": [600, 600], "Units": "Bq/mL",
        "ManufacturersModelName": "Biograph mMR"}


def _plan(root: Path) -> SubjectPlan:
    t1w = root / "sub-01/ses-petmr/anat/sub-01_ses-petmr_T1w.nii.gz"
    mr = PetSeries(root / "sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_pet.nii.gz", "01",
                   "petmr", "PiB", META, "PET-MR", "test")
    ct = PetSeries(root / "sub-01/ses-petct/pet/sub-01_ses-petct_trc-PiB_pet.nii.gz", "01",
                   "petct", "PiB", META, "PET-CT", "test",
                   ct=root / "sub-01/ses-petct/anat/sub-01_ses-petct_CT.nii.gz")
    return SubjectPlan("01", t1w, [mr, ct])


@pytest.mark.parametrize("with_model", [True, False])
@pytest.mark.parametrize("centiloid", [None, "vois"])
def test_graph_builds(tmp_path, templateflow_home, with_model, centiloid):
    template = get_template("MNI152NLin2009aSym")
    model = tmp_path / "model" if with_model else None
    if model:
        model.mkdir()
    wf = init_bids_harmonize_wf(
        [_plan(Path("/data"))], bids_dir=Path("/data"), output_dir=tmp_path / "out",
        template=template, model_dir=model, sloppy=True,
        centiloid_vois=tmp_path if centiloid else None,
        uptake_windows={"PiB": [40, 60]},
    )
    names = {n.fullname for n in wf._get_all_nodes()}
    assert any("harmonize_ses_petmr_trc_PiB_wf.harmonize" in n for n in names) is with_model
    assert not any("harmonize_ses_petct" in n for n in names)  # PET-CT is the reference
    assert any("ct2t1w" in n for n in names)
    assert any("centiloid" in n for n in names) is bool(centiloid)
    static = [n for n in wf._get_all_nodes() if n.name == "static"]
    assert {tuple(n.inputs.window_min) for n in static} == {(40.0, 60.0)}
    assert "N4" in wf.visit_desc() or "non-uniformity" in wf.visit_desc()
