"""--common-resolution (issue 20 part 4): opt-in smoothing to one effective resolution."""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize.app.plan import Settings, plan
from bids_harmonize.bids import PetSeries, SubjectPlan
from bids_harmonize.resolution import (
    FWHM_PER_SIGMA,
    ResolutionError,
    resolution_record,
    smooth_to_resolution,
    smoothing_fwhm,
)
from bids_harmonize.templates import get_template
from bids_harmonize.workflows.base import init_single_subject_wf

ROOT = Path("/data")


def _plan(ct_model="Biograph mCT", mr_model="Biograph mMR") -> SubjectPlan:
    meta = {"FrameTimesStart": [3000, 3600], "FrameDuration": [600, 600], "Units": "Bq/mL"}
    t1w = ROOT / "sub-01/ses-petmr/anat/sub-01_ses-petmr_T1w.nii.gz"
    mr = PetSeries(ROOT / "sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_pet.nii.gz", "01",
                   "petmr", "PiB", {**meta, "ManufacturersModelName": mr_model}, "PET-MR",
                   "test")
    ct = PetSeries(ROOT / "sub-01/ses-petct/pet/sub-01_ses-petct_trc-PiB_pet.nii.gz", "01",
                   "petct", "PiB", {**meta, "ManufacturersModelName": ct_model}, "PET-CT",
                   "test", ct=ROOT / "sub-01/ses-petct/anat/sub-01_ses-petct_CT.nii.gz")
    return SubjectPlan("01", t1w, [mr, ct])


def _build(tmp_path, **kwargs):
    settings = Settings(bids_dir=ROOT, output_dir=tmp_path / "out",
                        template=get_template("MNI152NLin2009aSym"), sloppy=True, **kwargs)
    (subject,) = plan([_plan()], settings).participants
    return init_single_subject_wf(subject, settings)


def _graph(wf) -> tuple[dict, set]:
    # ds_tables_*: its source_file list comes from a set (order varies between builds)
    nodes = {n.fullname: n.inputs.get_hashval()[1] for n in wf._get_all_nodes()
             if not n.fullname.startswith("ds_tables_")}
    flat = wf._create_flat_graph()
    edges = {(u.fullname, v.fullname, str(sorted(d["connect"])))
             for u, v, d in flat.edges(data=True)}
    return nodes, edges


def test_smoothing_maths_adds_in_quadrature():
    """A Gaussian of FWHM f smoothed by k has FWHM sqrt(f^2 + k^2): measured on an image."""
    assert smoothing_fwhm(6.0, 8.0) == pytest.approx(np.sqrt(28.0))
    zooms = (2.0, 2.0, 2.5)
    shape = (41, 41, 41)
    grid = np.stack(np.meshgrid(*[(np.arange(n) - n // 2) * z for n, z in
                                  zip(shape, zooms, strict=True)], indexing="ij"))
    sigma = 6.0 / FWHM_PER_SIGMA
    img = np.exp(-(grid**2).sum(0) / (2 * sigma**2)).astype(np.float32)
    out, kernel = smooth_to_resolution(img, np.diag([*zooms, 1.0]), 6.0, 8.0)
    assert kernel == pytest.approx(np.sqrt(28.0))
    profile = out[:, shape[1] // 2, shape[2] // 2]
    # FWHM of the result along x from its second moment
    x = (np.arange(shape[0]) - shape[0] // 2) * zooms[0]
    fwhm = np.sqrt((profile * x**2).sum() / profile.sum()) * FWHM_PER_SIGMA
    assert fwhm == pytest.approx(8.0, abs=0.15)
    assert out.sum() == pytest.approx(img.sum(), rel=1e-3)
    with pytest.raises(ResolutionError, match="cannot be sharpened"):
        smooth_to_resolution(img, np.eye(4), 9.0, 8.0)


def test_record_uses_the_table_or_the_user():
    rec = resolution_record("Biograph mMR", 8.0)
    assert rec["ScannerEffectiveResolutionFWHM"] == 6.0 and rec["CommonResolutionFWHM"] == 8.0
    assert "Delso" in rec["ScannerEffectiveResolutionSource"]
    user = resolution_record("Biograph 64", 8.0, {"Biograph 64": 6.5})
    assert user["ScannerEffectiveResolutionSource"].startswith("user")
    with pytest.raises(ResolutionError, match="--scanner-resolution"):
        resolution_record("Biograph 64", 8.0)


def test_default_graph_has_no_smoothing_and_is_unchanged(tmp_path, templateflow_home):
    default = _build(tmp_path)
    explicit_off = _build(tmp_path, common_resolution=None, scanner_resolutions={"x": 5.0})
    (nodes_a, edges_a), (nodes_b, edges_b) = _graph(default), _graph(explicit_off)
    assert edges_a == edges_b
    assert nodes_a == nodes_b, [k for k in nodes_a if nodes_a[k] != nodes_b.get(k)]
    names = {n.name for n in default._get_all_nodes()}
    assert "smooth_to_resolution" not in names
    assert "common effective resolution" not in default.visit_desc()


def test_common_resolution_smooths_every_pet_and_records_it(tmp_path, templateflow_home):
    wf = _build(tmp_path, common_resolution=8.0)
    smooth = {n.fullname: n for n in wf._get_all_nodes() if n.name == "smooth_to_resolution"}
    assert len(smooth) == 2  # PET-MR and PET-CT
    by_ses = {("petmr" if "petmr" in k else "petct"): v for k, v in smooth.items()}
    assert by_ses["petmr"].inputs.scanner_fwhm_mm == 6.0
    assert by_ses["petct"].inputs.scanner_fwhm_mm == 4.3
    assert {n.inputs.target_fwhm_mm for n in smooth.values()} == {8.0}
    flat = wf._create_flat_graph()
    for node in (n for n in flat.nodes if n.name == "smooth_to_resolution"):
        assert {v.name for v in flat.successors(node)} >= {"pet2t1w"}  # then registration
        assert {u.name for u in flat.predecessors(node)} == {"static"}
    metas = [n.inputs.base for n in wf._get_all_nodes() if n.name.startswith("meta_")]
    assert len(metas) == 4  # preproc PET-CT and PET-MR, T1w and template sidecars
    assert all(m["ResolutionHarmonization"]["CommonResolutionFWHM"] == 8.0 for m in metas)
    assert "common effective resolution of 8 mm" in wf.visit_desc()


def test_interface_writes_the_smoothed_image(tmp_path):
    from bids_harmonize.interfaces.pet import SmoothToResolution

    data = np.zeros((15, 15, 15), np.float32)
    data[7, 7, 7] = 1.0
    nb.save(nb.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "in.nii.gz")
    res = SmoothToResolution(in_file=str(tmp_path / "in.nii.gz"), scanner_fwhm_mm=4.0,
                             target_fwhm_mm=5.0).run(cwd=str(tmp_path))
    out = nb.load(res.outputs.out_file).get_fdata()
    assert res.outputs.kernel_fwhm_mm == pytest.approx(3.0)
    assert out.sum() == pytest.approx(1.0, rel=1e-3) and out.max() < 0.5


def test_options_reach_the_config_and_replay(tmp_path):
    from bids_harmonize.cli.parser import build_parser
    from bids_harmonize.cli.run import config_from_args
    from bids_harmonize.config import config_from_dict, config_to_dict

    (tmp_path / "bids").mkdir()
    args = build_parser().parse_args([str(tmp_path / "bids"), str(tmp_path / "out"),
                                      "participant", "--common-resolution", "8",
                                      "--scanner-resolution", "Biograph 64=6.5"])
    config = config_from_args(args)
    assert config.common_resolution == 8.0
    assert config.scanner_resolutions == {"Biograph 64": 6.5}
    assert config_from_dict(config_to_dict(config)) == config
    default = config_from_args(build_parser().parse_args(
        [str(tmp_path / "bids"), str(tmp_path / "out"), "participant"]))
    assert "common_resolution" not in config_to_dict(default)
    assert "scanner_resolutions" not in config_to_dict(default)
    with pytest.raises(SystemExit):
        build_parser().parse_args([str(tmp_path / "bids"), str(tmp_path / "out"),
                                   "participant", "--common-resolution", "0.5"])


def test_unknown_or_coarser_scanner_excludes_the_participant(tmp_path):
    from types import SimpleNamespace

    ok, unknown = _plan(), _plan(mr_model="Mystery PET/MR 1")
    unknown = SubjectPlan("02", unknown.t1w, unknown.pet)

    def planned(subjects, **options):
        settings = Settings(bids_dir=ROOT, output_dir=tmp_path / "o",
                            template=SimpleNamespace(name="MNI152NLin2009aSym"), **options)
        return plan(subjects, settings)

    result = planned([ok, unknown], common_resolution=8.0)
    assert [p.subject for p in result.participants] == ["01"]
    assert "Mystery PET/MR 1" in result.excluded["02"][0]
    result = planned([ok], common_resolution=5.0)  # sharper than the mMR's 6.0 mm
    assert result.participants == ()
    assert "cannot be sharpened" in result.excluded["01"][0]
    result = planned([unknown], common_resolution=8.0,
                     scanner_resolutions={"Mystery PET/MR 1": 5.0})
    assert len(result.participants) == 1
