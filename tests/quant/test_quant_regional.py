"""Regional tables and summary measures on small hand-made label images."""

import json

import nibabel as nb
import numpy as np
import pandas as pd
import pytest

from bids_harmonize.atlas import composite_labels, synth_label_table
from bids_harmonize.quant.atlases import (
    Atlas,
    AtlasError,
    load_atlas,
    resample_atlas,
    synth_atlas,
    templateflow_atlas,
    user_atlas,
)
from bids_harmonize.quant.io import derivative_name, write_quantification
from bids_harmonize.quant.measures import summary_measures
from bids_harmonize.quant.regional import regional_table

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _toy_synth(seed=0):
    """24 slabs of unequal thickness (one per synth label) and a noisy PET on them."""
    thickness = [1 + i % 3 for i in range(24)]
    labels = np.concatenate([np.full((t, 3, 3), i + 1, "int16")
                             for i, t in enumerate(thickness)])
    labels = np.concatenate([np.zeros((2, 3, 3), "int16"), labels])  # background
    rng = np.random.default_rng(seed)
    base = np.r_[0.0, 1.0 + np.arange(24) * 0.1]
    pet = base[labels] + rng.normal(0, 0.05, labels.shape)
    return nb.Nifti1Image(labels, AFFINE), nb.Nifti1Image(pet.astype("float64"), AFFINE)


def _mask(labels_img, name):
    return np.isin(np.asarray(labels_img.dataobj), composite_labels(name))


def test_regional_table_matches_numpy():
    lab, pet = _toy_synth()
    atlas = synth_atlas(image=lab)
    table = regional_table(pet, atlas, "PiB").set_index("region")
    values = pet.get_fdata()
    ref = values[_mask(lab, "whole_cerebellum")].mean()
    for name in ["frontal_cortex", "pons", "cortical_composite", "braak_V_VI", "whole_brain"]:
        vals = values[_mask(lab, name)]
        row = table.loc[name]
        assert row["n_voxels"] == vals.size
        assert row["volume_mm3"] == pytest.approx(vals.size * 8.0)
        assert row["mean"] == pytest.approx(vals.mean(), rel=1e-12)
        assert row["sd"] == pytest.approx(vals.std(ddof=1), rel=1e-9)
        assert row["suvr"] == pytest.approx(vals.mean() / ref, rel=1e-12)
    assert table.loc["whole_cerebellum", "suvr"] == pytest.approx(1.0)
    assert (table["reference_region"] == "whole_cerebellum").all()
    assert table.loc["frontal_cortex", "kind"] == "region"
    assert table.loc["whole_brain", "kind"] == "composite"
    assert "ventricles_csf" in table.index  # a region row, left out of whole_brain


def test_regional_table_nan_voxels_and_reference_override():
    lab, pet = _toy_synth()
    data = pet.get_fdata()
    data[_mask(lab, "pons")] = np.nan
    data[_mask(lab, "pons") & (np.arange(3)[None, None, :] == 0)] = 2.0  # 1/3 finite
    pet = nb.Nifti1Image(data, AFFINE)
    table = regional_table(pet, synth_atlas(image=lab), "FDG").set_index("region")
    assert table.loc["pons", "mean"] == pytest.approx(2.0)
    assert table.loc["pons", "n_voxels"] == _mask(lab, "pons").sum()
    table = regional_table(pet, synth_atlas(image=lab), "FDG", reference="thalamus")
    assert (table["reference_region"] == "thalamus").all()


def test_measures_per_family_match_hand_values():
    lab, pet = _toy_synth()
    values = pet.get_fdata()
    mean = {n: values[_mask(lab, n)].mean() for n in
            ["cortical_composite", "whole_cerebellum", "inferior_cerebellar_grey",
             "braak_I_II", "braak_III_IV", "braak_V_VI", "occipital_cortex", "caudate_left",
             "caudate_right", "putamen_left", "putamen_right", "pons", "whole_brain",
             "posterior_cingulate_precuneus"]}
    atlas = synth_atlas(image=lab)

    amy = summary_measures(regional_table(pet, atlas, "PiB"), "PiB").set_index("measure")
    suvr = mean["cortical_composite"] / mean["whole_cerebellum"]
    assert amy.loc["suvr_cortical", "value"] == pytest.approx(suvr)
    assert amy.loc["centiloid", "value"] == pytest.approx(100 * (suvr - 1.009) / 1.067, abs=1e-3)
    assert amy.loc["centiloid_standard_vois", "value"] == 0.0
    assert "non-standard" in amy.loc["centiloid", "description"]

    tau = summary_measures(regional_table(pet, atlas, "MK6240"), "MK6240").set_index("measure")
    for stage in ("braak_I_II", "braak_III_IV", "braak_V_VI"):
        assert tau.loc[f"suvr_{stage}", "value"] == pytest.approx(
            mean[stage] / mean["inferior_cerebellar_grey"])
    # no published cut-off for this meta-ROI/reference: n/a, and the output says so
    assert np.isnan(tau.loc["positive", "value"])
    assert tau.loc["positive", "description"].startswith("no published cut-off")
    tau13 = summary_measures(regional_table(pet, atlas, "MK6240"), "MK6240",
                             cutoff=1.30).set_index("measure")
    assert tau13.loc["positive", "value"] == float(
        mean["braak_III_IV"] / mean["inferior_cerebellar_grey"] >= 1.30)

    dat = summary_measures(regional_table(pet, atlas, "FPCIT"), "FPCIT").set_index("measure")
    occ = mean["occipital_cortex"]
    sbr = {k: (mean[k] - occ) / occ for k in
           ("caudate_left", "caudate_right", "putamen_left", "putamen_right")}
    for k, v in sbr.items():
        assert dat.loc[f"sbr_{k}", "value"] == pytest.approx(v)
    pl, pr = sbr["putamen_left"], sbr["putamen_right"]
    asym = 100 * (pl - pr) / ((pl + pr) / 2)
    assert dat.loc["asymmetry_putamen", "value"] == pytest.approx(asym)
    assert dat.loc["sbr_putamen_min", "value"] == pytest.approx(min(pl, pr))
    assert dat.loc["putamen_caudate_ratio_left", "value"] == pytest.approx(
        pl / sbr["caudate_left"])
    assert np.isnan(dat.loc["positive", "value"])  # no published [18F]FP-CIT cut-off
    dat2 = summary_measures(regional_table(pet, atlas, "FPCIT"), "FPCIT",
                            cutoff=2.0).set_index("measure")
    assert dat2.loc["positive", "value"] == float(min(pl, pr) < 2.0)

    fdg = summary_measures(regional_table(pet, atlas, "FDG"), "FDG").set_index("measure")
    assert fdg.loc["suvr_pons_cortical_composite", "value"] == pytest.approx(
        mean["cortical_composite"] / mean["pons"])
    assert fdg.loc["suvr_global_posterior_cingulate_precuneus", "value"] == pytest.approx(
        mean["posterior_cingulate_precuneus"] / mean["whole_brain"])
    assert "positive" not in fdg.index  # FDG has no cut-off in tracers.yaml


def test_missing_reference_gives_na(caplog):
    lab = np.zeros((4, 3, 3), "int16")
    lab[:2], lab[2:] = 1, 2
    atlas = user_atlas(nb.Nifti1Image(lab, AFFINE),
                       pd.DataFrame({"index": [1, 2], "name": ["a", "b"]}), name="ab")
    pet = nb.Nifti1Image(np.ones(lab.shape), AFFINE)
    table = regional_table(pet, atlas, "PiB")
    assert table["suvr"].isna().all()
    assert "no reference region" in caplog.text
    measures = summary_measures(table, "PiB").set_index("measure")
    assert np.isnan(measures.loc["centiloid", "value"])
    assert np.isnan(measures.loc["positive", "value"])


def test_resample_atlas_to_finer_grid():
    lab, pet = _toy_synth()
    fine_aff = np.diag([1.0, 1.0, 1.0, 1.0])
    fine_aff[:3, 3] = -0.5  # 1 mm voxels nested in the 2 mm voxels
    shape = tuple(2 * s for s in lab.shape)
    fine_pet = nb.Nifti1Image(np.kron(pet.get_fdata(), np.ones((2, 2, 2))), fine_aff)
    out = resample_atlas(synth_atlas(image=lab), fine_pet)
    assert out.image.shape == shape
    assert np.array_equal(np.asarray(out.image.dataobj),
                          np.kron(np.asarray(lab.dataobj), np.ones((2, 2, 2), "int16")))
    coarse = regional_table(pet, synth_atlas(image=lab), "FDG").set_index("region")
    fine = regional_table(fine_pet, synth_atlas(image=lab), "FDG").set_index("region")
    assert fine["mean"].to_numpy() == pytest.approx(coarse["mean"].to_numpy())
    assert fine["volume_mm3"].to_numpy() == pytest.approx(coarse["volume_mm3"].to_numpy())


def test_user_atlas_from_files(tmp_path):
    lab, pet = _toy_synth()
    nb.save(lab, tmp_path / "myatlas.nii.gz")
    synth_label_table()[["index", "name"]].to_csv(tmp_path / "myatlas.tsv", sep="\t",
                                                  index=False)
    atlas = load_atlas(tmp_path / "myatlas.nii.gz")
    assert atlas.name == "myatlas"
    assert "cortical_composite" in atlas.composites  # names match the synth composites
    with pytest.raises(AtlasError, match="label TSV"):
        load_atlas(tmp_path / "other.nii.gz")
    with pytest.raises(AtlasError, match="must be alphanumeric"):
        Atlas("bad name", lab, synth_label_table()[["index", "name"]])


def test_templateflow_atlas_from_local_cache_only(tmp_path):
    from templateflow import TemplateFlowClient

    tpl = tmp_path / "tpl-Toy"
    tpl.mkdir()
    (tpl / "template_description.json").write_text(json.dumps({"Name": "Toy"}))
    lab, _ = _toy_synth()
    nb.save(lab, tpl / "tpl-Toy_res-02_atlas-Parc_desc-24_dseg.nii.gz")
    synth_label_table()[["index", "name"]].to_csv(tpl / "tpl-Toy_atlas-Parc_desc-24_dseg.tsv",
                                                  sep="\t", index=False)
    (tpl / "tpl-Toy_res-02_atlas-Other_dseg.nii.gz").write_bytes(b"")  # placeholder
    (tpl / "tpl-Toy_atlas-Other_dseg.tsv").write_text("index\tname\n1\ta\n")
    client = TemplateFlowClient(root=tmp_path, autoupdate=False)
    atlas = templateflow_atlas("tpl-Toy_atlas-Parc_desc-24", client=client)
    assert atlas.name == "Parc24"
    assert len(atlas.labels) == 24
    with pytest.raises(AtlasError, match="not downloaded"):
        templateflow_atlas("tpl-Toy_atlas-Other", client=client)
    with pytest.raises(AtlasError, match="not in the TemplateFlow cache"):
        templateflow_atlas("tpl-Toy_atlas-Missing", client=client)
    with pytest.raises(AtlasError, match="must name at least"):
        templateflow_atlas("Schaefer2018", client=client)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AtlasError, match="is empty"):
        templateflow_atlas("tpl-Toy_atlas-Parc", client=TemplateFlowClient(root=empty,
                                                                            autoupdate=False))


def test_writers_and_names(tmp_path):
    lab, pet = _toy_synth()
    in_file = "sub-01_ses-petmr_trc-PiB_space-MNI152NLin2009aSym_desc-harmonized_pet.nii.gz"
    regions = regional_table(pet, synth_atlas(image=lab), "PiB")
    measures = summary_measures(regions, "PiB")
    paths = write_quantification(regions, measures, tmp_path, in_file, seg="synth",
                                 desc="harmonized")
    assert paths["out_regions"].name == (
        "sub-01_ses-petmr_trc-PiB_seg-synth_desc-harmonized_suvr.tsv")
    assert paths["out_measures_json"].name == (
        "sub-01_ses-petmr_trc-PiB_seg-synth_desc-harmonized_measures.json")
    back = pd.read_csv(paths["out_regions"], sep="\t", na_values="n/a", keep_default_na=False)
    assert back["suvr"].to_numpy() == pytest.approx(regions["suvr"].to_numpy())
    assert back["index"].isna().sum() == (regions["kind"] == "composite").sum()
    meta = json.loads(paths["out_regions_json"].read_text())
    assert set(meta) == set(back.columns)
    assert meta["suvr"]["Units"] == "unitless"
    with pytest.raises(ValueError, match="alphanumeric"):
        derivative_name(in_file, seg="my-atlas", desc="preproc", suffix="suvr")


def test_interface_runs(tmp_path, monkeypatch):
    from bids_harmonize.interfaces.quant import RegionalQuantification

    lab, pet = _toy_synth()
    pet_file = tmp_path / "sub-02_ses-petct_trc-FDG_space-MNI152NLin2009aSym_desc-preproc_pet.nii"
    nb.save(pet, pet_file)
    nb.save(lab, tmp_path / "toy_dseg.nii.gz")
    synth_label_table()[["index", "name"]].to_csv(tmp_path / "toy.tsv", sep="\t", index=False)
    monkeypatch.chdir(tmp_path)
    node = RegionalQuantification(in_file=str(pet_file), tracer="FDG", atlas="file",
                                  atlas_file=str(tmp_path / "toy_dseg.nii.gz"),
                                  atlas_labels=str(tmp_path / "toy.tsv"), atlas_name="toy",
                                  desc="preproc")
    (tmp_path / "work").mkdir()
    result = node.run(cwd=str(tmp_path / "work"))
    out = result.outputs
    assert out.seg == "toy"
    assert out.out_measures.endswith("sub-02_ses-petct_trc-FDG_seg-toy_desc-preproc_measures.tsv")
    measures = pd.read_csv(out.out_measures, sep="\t")
    assert "suvr_pons_cortical_composite" in set(measures["measure"])


def test_real_synth_atlas_with_known_uptake():
    """The simulator's own template labels: every label present, SUVRs as constructed."""
    pytest.importorskip("bids_harmonize.synth.template")
    atlas = synth_atlas()
    labels = np.asarray(atlas.image.dataobj)
    assert set(np.unique(labels)) == set(range(25))
    uptake = np.r_[0.0, np.linspace(1.0, 3.3, 24)]  # label i -> uptake[i]
    pet = nb.Nifti1Image(uptake[labels].astype("float32"), atlas.image.affine)
    table = regional_table(pet, atlas, "PiB").set_index("region")
    counts = np.bincount(labels.ravel(), minlength=25)
    ref_idx = composite_labels("whole_cerebellum")
    ref = (uptake[ref_idx] * counts[ref_idx]).sum() / counts[ref_idx].sum()
    ctx = composite_labels("cortical_composite")
    expected = (uptake[ctx] * counts[ctx]).sum() / counts[ctx].sum() / ref
    assert table.loc["cortical_composite", "suvr"] == pytest.approx(expected, rel=1e-6)
    assert table.loc["pons", "n_voxels"] == counts[22]
    measures = summary_measures(table.reset_index(), "PiB").set_index("measure")
    assert measures.loc["suvr_cortical", "value"] == pytest.approx(expected, rel=1e-6)


def test_braak_meta_rois_follow_one_definition():
    """Schöll et al. 2016 stages, shared by quantification and the simulator's tau model."""
    from bids_harmonize.atlas import BRAAK_STAGE_REGIONS, COMPOSITES
    from bids_harmonize.synth.uptake import BRAAK_REGIONS

    assert BRAAK_REGIONS is BRAAK_STAGE_REGIONS
    for name, stages in (("braak_I_II", (1, 2)), ("braak_III_IV", (3, 4)),
                         ("braak_V_VI", (5, 6))):
        assert set(COMPOSITES[name]) == {r for s in stages for r in BRAAK_STAGE_REGIONS[s]}
    every = [r for regions in BRAAK_STAGE_REGIONS.values() for r in regions]
    assert len(every) == len(set(every))  # each label in one stage only
    assert COMPOSITES["braak_I_II"] == ("entorhinal_cortex",)
    assert "hippocampus_parahippocampal" in COMPOSITES["braak_III_IV"]  # parahippocampal: III
    assert "anterior_cingulate" in COMPOSITES["braak_V_VI"]  # anterior cingulate: V
    assert set(every) <= set(synth_label_table()["name"])


def test_unknown_tracer_gets_regional_means_only():
    """A tracer named nowhere: means (and SUVR with a user reference), no tracer measures."""
    from bids_harmonize.tracers import unknown_tracer

    lab, pet = _toy_synth()
    atlas = synth_atlas(image=lab)
    bare = unknown_tracer("DASB", "C11")
    table = regional_table(pet, atlas, bare).set_index("region")
    assert table["mean"].notna().all() and table["suvr"].isna().all()
    assert summary_measures(table.reset_index(), bare).empty
    with_ref = unknown_tracer("DASB", "C11", reference="cerebellar_grey")
    table = regional_table(pet, atlas, with_ref).set_index("region")
    assert table.loc["cerebellar_grey", "suvr"] == pytest.approx(1.0)
