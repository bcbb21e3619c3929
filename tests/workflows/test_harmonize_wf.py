"""Graph building of the harmonizer's v2 wiring: scanner mu-map, ensemble, OOD policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bids_harmonize.app.participant import build_workflow
from bids_harmonize.app.plan import Settings
from bids_harmonize.bids import PetSeries, SubjectPlan
from bids_harmonize.mumap import Attenuation
from bids_harmonize.templates import get_template

META = {"FrameTimesStart": [3000, 3600], "FrameDuration": [600, 600], "Units": "Bq/mL",
        "ManufacturersModelName": "Biograph mMR"}


def _model(tmp_path, members: int) -> Path:
    model = tmp_path / f"model{members}"
    model.mkdir()
    card = {"uncertainty": {"members": [{"file": f"ensemble/m{k}.safetensors", "sha256": "0"}
                                        for k in range(members)]}}
    (model / "model.json").write_text(json.dumps(card))
    return model


@pytest.mark.parametrize("members", [0, 2])
@pytest.mark.parametrize("mumap", [None, "/data/sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_mumap.nii.gz"])
def test_harmonize_branch(tmp_path, templateflow_home, members, mumap):
    root = Path("/data")
    att = Attenuation("dixon-nobone", "software version", Path(mumap) if mumap else None,
                      [] if mumap else ["scanner mu-map not used (test)"])
    series = PetSeries(root / "sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_pet.nii.gz", "01",
                       "petmr", "PiB", META, "PET-MR", "test", attenuation=att)
    plan = SubjectPlan("01", root / "sub-01/ses-petmr/anat/sub-01_ses-petmr_T1w.nii.gz", [series])
    wf = build_workflow([plan], Settings(bids_dir=root, output_dir=tmp_path / "out",
                                template=get_template("MNI152NLin2009aSym"),
                                model_dir=_model(tmp_path, members), sloppy=True,
                                ood_policy="passthrough"))
    nodes = {n.fullname: n for n in wf._get_all_nodes()}
    harm = next(n for k, n in nodes.items() if k.endswith("harmonize_ses_petmr_trc_PiB_wf.harmonize"))
    assert harm.inputs.ood_policy == "passthrough"
    assert harm.inputs.ac_setup == "dixon-nobone" and harm.inputs.tracer_family == "amyloid"
    assert harm.inputs.mumap_notes == att.notes
    assert any(k.endswith("mumap_to_t1w") for k in nodes) is bool(mumap)
    assert any(k.endswith("ds_uncertainty") for k in nodes) is bool(members)
    assert any(k.endswith("members_to_template") for k in nodes) is bool(members)
    sidecars = [n for k, n in nodes.items() if "ds_pet_" in k and k.endswith("meta_T1w")]
    assert all(n.inputs.base["AttenuationCorrectionSetup"] == "dixon-nobone" for n in sidecars)
    flat = wf._create_flat_graph()
    into_quant = {dest for _, v, d in flat.edges(data=True)
                  if v.name == "quant_atlas" and "harmonized" in v.fullname
                  for _, dest in d["connect"]}
    assert {"members", "sd_scale"} <= into_quant if members else not into_quant & {"members"}
