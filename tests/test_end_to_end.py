"""``participant`` then ``group`` on a generated 2-subject dataset, validated as BIDS."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from bids_harmonize.cli.run import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def derivatives(synth_bids, templateflow_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "out"
    work = out.parent / "work"
    common = ["--output-spaces", "MNI152NLin2009aSym", "T1w", "--sloppy", "--nprocs", "2",
              "--omp-nthreads", "1", "-w", str(work)]
    assert main([str(synth_bids), str(out), "participant", *common]) == 0
    assert main([str(synth_bids), str(out), "group"]) == 0
    return out


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
