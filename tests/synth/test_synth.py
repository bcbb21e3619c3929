"""Tests of the paired PET-CT / PET-MR simulator (small: 2 mm, one subject)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bids_harmonize.synth import SynthConfig, simulate_subject, template_labels, write_dataset
from bids_harmonize.synth import anatomy as anat_mod
from bids_harmonize.synth.cli import build_parser, main
from bids_harmonize.tracers import get_tracer

PET_REQUIRED = (
    "TracerName", "TracerRadionuclide", "InjectedRadioactivity", "InjectedRadioactivityUnits",
    "InjectedMass", "InjectedMassUnits", "SpecificRadioactivity", "SpecificRadioactivityUnits",
    "ModeOfAdministration", "TimeZero", "ScanStart", "InjectionStart", "FrameTimesStart",
    "FrameDuration", "AcquisitionMode", "ImageDecayCorrected", "ImageDecayCorrectionTime",
    "ReconMethodName", "ReconMethodParameterLabels", "ReconMethodParameterUnits",
    "ReconMethodParameterValues", "ReconFilterType", "ReconFilterSize",
    "AttenuationCorrection", "Manufacturer", "ManufacturersModelName", "Units", "BodyWeight",
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "bids"
    table = write_dataset(out, n_subjects=1, tracers=["PiB"], seed=0)
    return out, table


@pytest.fixture(scope="module")
def subject():
    """One noiseless subject at 3 mm (the physics is then exact up to discretisation)."""
    return simulate_subject(1, seed=3, tracers=["FDG", "PiB"],
                            config=SynthConfig(noise=False, resolution_mm=3.0))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_cli_spelling_parses():
    args = build_parser().parse_args(["OUT", "--subjects", "3", "--tracers", "PiB,FDG",
                                      "--seed", "0"])
    assert (args.subjects, args.tracers, args.seed) == (3, ["PiB", "FDG"], 0)


def test_layout_and_sidecars(dataset):
    out, _ = dataset
    sub = out / "sub-01"
    assert (sub / "ses-petct" / "anat" / "sub-01_ses-petct_CT.nii.gz").is_file()
    assert (sub / "ses-petmr" / "anat" / "sub-01_ses-petmr_T1w.nii.gz").is_file()
    assert "*_CT.nii.gz" in (out / ".bidsignore").read_text()
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["BIDSVersion"] == "1.10.0" and desc["DatasetType"] == "raw"
    tracer = get_tracer("PiB")
    from bids_harmonize.acsetups import get_setup, infer_ac_setup, mumap_path

    assert "*_mumap.nii.gz" in (out / ".bidsignore").read_text()
    for ses, ac in (("petct", "CT-based"), ("petmr", get_setup("dixon-nobone").ac_text)):
        pet = sub / f"ses-{ses}" / "pet" / f"sub-01_ses-{ses}_trc-PiB_pet.nii.gz"
        meta = json.loads(pet.with_name(pet.name.replace(".nii.gz", ".json")).read_text())
        missing = [k for k in PET_REQUIRED if k not in meta]
        assert not missing, missing
        img = nib.load(pet)
        assert img.ndim == 4
        n = img.shape[3]
        assert len(meta["FrameTimesStart"]) == len(meta["FrameDuration"]) == n
        assert meta["AttenuationCorrection"] == ac
        assert meta["Units"] == "Bq/mL" and meta["InjectedRadioactivityUnits"] == "MBq"
        # frames start ~10 min before the standard window and cover its end
        t0, t1 = tracer.window_min
        assert meta["FrameTimesStart"][0] == pytest.approx((t0 - 10) * 60)
        assert meta["FrameTimesStart"][-1] + meta["FrameDuration"][-1] == pytest.approx(t1 * 60)
        assert meta["ScanStart"] == meta["FrameTimesStart"][0]
        assert meta["ManufacturersModelName"] in (
            ("Biograph Vision", "Discovery MI") if ses == "petct" else ("Biograph mMR",))
        # the metadata tells the setup (sub-01 gets the first default setup)
        setup, _ = infer_ac_setup(meta["ManufacturersModelName"], meta["SoftwareVersions"],
                                  meta["AttenuationCorrection"])
        assert setup == ("ct" if ses == "petct" else "dixon-nobone")
        mu = mumap_path(pet)
        assert mu.is_file() == (ses == "petmr")
        if ses == "petmr":
            mu_meta = json.loads(mu.with_name(mu.name.replace(".nii.gz", ".json")).read_text())
            assert mu_meta["Units"] == "cm^-1" and mu_meta["PhotonEnergyKeV"] == 511
            assert mu_meta["AttenuationCorrectionSetup"] == "dixon-nobone"
            assert mu_meta["IntendedFor"] == [f"bids::sub-01/ses-petmr/pet/{pet.name}"]
            mu_img = nib.load(mu)
            assert mu_img.shape == img.shape[:3]
            assert np.allclose(mu_img.affine, img.affine)
            vals = np.asarray(mu_img.dataobj)
            # Dixon without bone: soft tissue 0.100, fat 0.0854, no value above soft tissue
            assert vals.min() >= 0 and 0.099 < vals.max() <= 0.1001
    truth = out / "derivatives" / "synth-truth"
    assert json.loads((truth / "dataset_description.json").read_text())["DatasetType"] == \
        "derivative"
    params = json.loads((truth / "sub-01" / "sub-01_desc-truth_params.json").read_text())
    assert {"centiloid", "braak_stage", "sessions", "reference_affine"} <= set(params)
    assert params["sessions"]["petmr"]["ac_setup"] == "dixon-nobone"
    assert (truth / "sub-01" / "anat" / "sub-01_space-ref_desc-mrac_mumap.nii.gz").is_file()
    parts = pd.read_csv(out / "participants.tsv", sep="\t")
    assert list(parts["participant_id"]) == ["sub-01"]


def test_bids_validator_zero_errors(dataset):
    out, _ = dataset
    exe = shutil.which("bids-validator-deno") or str(Path(sys.executable).with_name(
        "bids-validator-deno"))
    if not os.path.exists(exe):
        pytest.skip("bids-validator-deno is not installed")
    try:
        proc = subprocess.run([exe, str(out), "--format", "json"], capture_output=True,
                              text=True, timeout=300)
        report = json.loads(proc.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as err:
        pytest.skip(f"bids-validator-deno could not run here: {err}")
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    assert errors == []


def test_determinism_byte_identical(tmp_path):
    cfg = SynthConfig(resolution_mm=3.0, n_frames=3)
    write_dataset(tmp_path / "a", n_subjects=1, tracers=["FDG"], seed=7, config=cfg)
    write_dataset(tmp_path / "b", n_subjects=1, tracers=["FDG"], seed=7, config=cfg)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    different = [k for k in a if a[k] != b[k]]
    assert different == []


def test_api_common_grid(subject):
    s = subject
    shape = s.shape
    for arr in (s.t1w, s.ct_hu, s.mu_true, s.mu_mr, s.labels, s.brain_mask,
                s.activity["FDG"], s.pet_ct["FDG"], s.pet_mr["FDG"]):
        assert arr.shape == shape
    assert s.affine.shape == (4, 4)
    assert s.tracers == ["FDG", "PiB"]
    assert set(s.sessions) == {"petct", "petmr"}
    assert s.sessions["petmr"].platform == "PET-MR"


def test_true_centiloid_matches_target(subject):
    """The true image's Centiloid (tracers.yaml equation, synth labels) is the drawn one."""
    from bids_harmonize.atlas import composite_labels

    img, labels = subject.activity["PiB"], subject.labels
    suvr = img[np.isin(labels, composite_labels("cortical_composite"))].mean() / img[
        np.isin(labels, composite_labels("whole_cerebellum"))].mean()
    cl = get_tracer("PiB").centiloid_from_suvr(suvr)
    assert cl == pytest.approx(subject.params["centiloid"], abs=0.05)
    assert subject.params["tracers"]["PiB"]["true_measures"]["centiloid"] == pytest.approx(
        cl, abs=0.01)


def test_labels_cover_all_24(subject):
    tpl = np.asarray(template_labels().dataobj)
    assert template_labels().shape == (99, 117, 95)
    assert sorted(set(np.unique(tpl).tolist()) - {0}) == list(range(1, 25))
    assert sorted(set(np.unique(subject.labels).tolist()) - {0}) == list(range(1, 25))


def test_hu_ranges():
    anat = anat_mod.make_anatomy(np.random.default_rng(0), 2.0)
    fr, hu = anat.fractions, anat.hu

    def pure(name, level=0.95):
        return hu[fr[name] > level]

    assert np.allclose(pure("air", 0.99), -1000, atol=30)
    assert pure("fat").mean() == pytest.approx(-100, abs=25)
    assert pure("soft").mean() == pytest.approx(40, abs=15)
    assert pure("CSF").mean() == pytest.approx(10, abs=10)
    brain = hu[(fr["GM"] + fr["WM"]) > 0.95]
    assert 25 <= brain.mean() <= 40
    bone = hu[fr["cortical_bone"] > 0.6]
    assert bone.size > 0 and 1000 <= np.percentile(bone, 90) <= 1800
    diploe = pure("diploe", 0.6)
    assert diploe.size > 0 and 250 <= np.median(diploe) <= 900
    assert hu[~anat.masks["petrous"]].max() <= 1800
    assert 1800 <= hu[anat.masks["petrous"]].max() <= 2400  # the densest bone of the skull


def test_mrac_underestimates_cortex_near_skull_more_than_deep_grey(subject):
    """Physics: Dixon MR-AC misses bone -> PET-MR low near the skull, less in the centre."""
    s = subject
    ct, mr = s.pet_ct["FDG"], s.pet_mr["FDG"]
    bone = s.mu_true > 0.115
    dist = ndimage.distance_transform_edt(~bone, sampling=float(s.affine[0, 0]))
    cortex = (s.labels >= 1) & (s.labels <= 10)
    near = cortex & (dist <= 8.0)
    deep = (s.labels >= 11) & (s.labels <= 17)
    ratio_near = mr[near].mean() / ct[near].mean()
    ratio_deep = mr[deep].mean() / ct[deep].mean()
    assert ratio_near < 0.95
    # this seed's Dixon scan has a fat/water swap (brain read as fat): lower still
    swap = s.params["mr_attenuation"]["fat_water_swap"]
    assert (0.65 if swap else 0.75) < ratio_near
    assert ratio_deep > ratio_near + 0.01
    assert ratio_deep < 1.02


@pytest.mark.parametrize("setup", ["dixon-bone", "zte", "atlas"])
def test_bone_aware_setups_are_closer_to_petct(subject, setup):
    """Setups with bone in the μ-map: cortex within ±6 % of PET-CT, above Dixon without bone."""
    from bids_harmonize.atlas import composite_labels

    other = simulate_subject(1, seed=3, tracers=["FDG"], config=SynthConfig(
        noise=False, resolution_mm=3.0, petmr_setups=(setup,)))
    assert other.sessions["petmr"].ac_setup == setup
    assert subject.sessions["petmr"].ac_setup == "dixon-nobone"
    mask = np.isin(subject.labels, composite_labels("cortical_composite"))

    def ratio(s):
        return s.pet_mr["FDG"][mask].mean() / s.pet_ct["FDG"][mask].mean()

    assert ratio(subject) < ratio(other)
    if other.params["mr_attenuation"].get("fat_water_swap"):
        # this seed's Dixon scan has a fat/water swap over part of the head (brain as fat)
        assert 0.85 < ratio(other) < 0.97
    else:
        assert 0.94 < ratio(other) < 1.06
    # the scanner map has bone: values above soft tissue near the skull
    assert other.mu_mr.max() > 0.12 and subject.mu_mr.max() <= 0.1001


def test_bad_inputs_exit_nonzero_without_output(tmp_path, capsys):
    def run(argv):
        code = None
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
        err = capsys.readouterr().err
        return code, err

    target = tmp_path / "out"
    code, err = run([str(target), "--subjects", "0"])
    assert code != 0 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code, err = run([str(target), "--subjects", "1", "--tracers", "NotATracer"])
    assert code != 0 and "NotATracer" in err and len(err.strip().splitlines()) == 1
    assert not target.exists()
    code, err = run([str(target), "--petmr-setups", "dixon-nobone,nosuch"])
    assert code != 0 and "nosuch" in err and len(err.strip().splitlines()) == 1
    code, err = run([str(target), "--tracers", "PiB,MK6240", "--petmr-delay", "20"])
    assert code != 0 and "MK6240" in err and len(err.strip().splitlines()) == 1
    code, err = run([str(target), "--petmr-delay", "-5"])
    assert code != 0 and len(err.strip().splitlines()) == 1
    code, err = run([str(target), "--petmr-setups", "ct"])
    assert code != 0 and "ct" in err and len(err.strip().splitlines()) == 1
    assert not target.exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    code, err = run([str(full), "--subjects", "1"])
    assert code != 0 and "--overwrite" in err
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run([str(blocker / "sub"), "--subjects", "1"])
    assert code != 0 and len(err.strip().splitlines()) == 1
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_overwrite_replaces(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "old.txt").write_text("x")
    assert main([str(out), "--subjects", "1", "--tracers", "FPCIT", "--resolution", "3",
                 "--n-frames", "2", "--no-noise", "--overwrite", "-q"]) == 0
    assert not (out / "old.txt").exists()
    assert (out / "sub-01" / "ses-petmr" / "pet" / "sub-01_ses-petmr_trc-FPCIT_pet.nii.gz").is_file()


def test_uptake_models_all_tracers():
    """Every tracer of tracers.yaml simulates, with family-typical true measures."""
    from bids_harmonize.atlas import composite_labels
    from bids_harmonize.synth import uptake
    from bids_harmonize.tracers import tracer_table

    anat = anat_mod.make_anatomy(np.random.default_rng(0), 3.0)
    labels = anat.labels
    disease = uptake.draw_disease(np.random.default_rng(0), 70.0)
    disease.update(centiloid=80.0, braak_stage=4, dat_loss=0.6, dat_more_affected_side="left")

    def mean(img, name):
        return img[np.isin(labels, composite_labels(name))].mean()

    for name, tracer in tracer_table().items():
        suv, flow, info = uptake.window_suv(anat, tracer, disease, np.random.default_rng(1))
        assert suv.shape == anat.shape and np.isfinite(suv).all() and (suv >= 0).all()
        measures = uptake.true_measures(suv, labels, tracer)
        if tracer.family == "amyloid":
            assert measures["centiloid"] == pytest.approx(80.0, abs=0.05), name
        elif tracer.family == "tau":
            assert measures["suvr_braak_I_II"] > measures["suvr_braak_V_VI"], name
            assert measures["suvr_braak_III_IV"] > 1.1, name
        elif tracer.family == "fdg":
            assert mean(suv, "cortical_composite") > 1.4 * mean(suv, "cerebral_white_matter")
        elif tracer.family == "dat":
            left, right = measures["sbr_putamen_posterior_left"], measures[
                "sbr_putamen_posterior_right"]
            assert left < right < measures["sbr_caudate_right"]
            assert 2.5 < measures["sbr_caudate_right"] < 8.5


def test_native_images_map_back_to_reference_grid(dataset):
    """``to_ref_affines`` of the truth JSON bring each native image onto the reference grid."""
    from bids_harmonize.synth.physics import resample

    out, _ = dataset
    truth = out / "derivatives" / "synth-truth" / "sub-01"
    params = json.loads((truth / "sub-01_desc-truth_params.json").read_text())
    ref = nib.load(truth / "anat" / "sub-01_space-ref_desc-true_CT.nii.gz")
    ref_ct = ref.get_fdata(dtype=np.float32)
    true_pet = nib.load(truth / "pet" / "sub-01_ses-petct_trc-PiB_space-ref_desc-true_pet.nii.gz"
                        ).get_fdata(dtype=np.float32)
    head = ref_ct > -500
    for ses, rel, target, cval in (
        ("petct", "anat/sub-01_ses-petct_CT.nii.gz", ref_ct, -1000.0),
        ("petct", "pet/sub-01_ses-petct_trc-PiB_pet.nii.gz", true_pet, 0.0),
        ("petmr", "pet/sub-01_ses-petmr_trc-PiB_pet.nii.gz", true_pet, 0.0),
    ):
        img = nib.load(out / "sub-01" / f"ses-{ses}" / rel)
        to_ref = np.asarray(params["sessions"][ses]["to_ref_affines"][Path(rel).name])
        assert np.allclose(to_ref, np.linalg.inv(params["sessions"][ses]["pose"]) @ img.affine)
        data = img.get_fdata(dtype=np.float32)
        data = data.mean(axis=3) if data.ndim == 4 else data
        back = resample(data, to_ref, ref.shape, ref.affine, cval=cval)
        assert np.corrcoef(back[head], target[head])[0, 1] > 0.85, rel


def test_later_petmr_scan_drifts_by_the_kinetic_model():
    """PET-MR 30 min later: frames shifted, cortical SUVR up by the tracer's model."""
    from bids_harmonize.atlas import composite_labels
    from bids_harmonize.synth.uptake import SUVR_DRIFT_PER_MIN

    cfg = dict(noise=False, resolution_mm=3.0, n_frames=2, petmr_setups=("zte",))
    base = simulate_subject(2, seed=1, tracers=["PiB"], config=SynthConfig(**cfg))
    late = simulate_subject(2, seed=1, tracers=["PiB"], config=SynthConfig(
        **cfg, petmr_delay_min=30.0))
    ctx = np.isin(base.labels, composite_labels("cortical_composite"))
    ref = np.isin(base.labels, composite_labels("whole_cerebellum"))

    def suvr(img):
        return img[ctx].mean() / img[ref].mean()

    # PET-CT and the truth of the PET-CT session do not change
    assert np.array_equal(base.pet_ct["PiB"], late.pet_ct["PiB"])
    beta = SUVR_DRIFT_PER_MIN["PiB"][0]
    expected = 1 + (suvr(base.pet_mr["PiB"]) - 1) * (1 + beta * 30.0)
    assert suvr(late.pet_mr["PiB"]) == pytest.approx(expected, rel=0.02)
    assert suvr(late.pet_mr["PiB"]) > suvr(base.pet_mr["PiB"])
    assert late.params["petmr_delay_min"] == 30.0


def test_session_variability_changes_each_sessions_true_ratio_only():
    """session_sd: each session's brain-to-reference ratio times its own factor; the
    reference region's true uptake and everything at session_sd 0 stay as they were."""
    cfg = dict(resolution_mm=3.0, n_frames=1, n_angles=32, petmr_setups=("zte",))
    base = simulate_subject(2, seed=1, tracers=["PiB"], config=SynthConfig(**cfg))
    var = simulate_subject(2, seed=1, tracers=["PiB"], config=SynthConfig(
        **cfg, session_sd=0.05))
    assert "session_ratio_factor" not in base.params["tracers"]["PiB"]
    factors = var.params["tracers"]["PiB"]["session_ratio_factor"]
    assert set(factors) == {"petct", "petmr"} and factors["petct"] != factors["petmr"]
    rows = {(r["index"], k): r[k] for r in var.regional for k in ("true_petct", "true_petmr")}
    rows0 = {(r["index"], k): r[k] for r in base.regional
             for k in ("true_petct", "true_petmr")}
    cortex, cerebellum = 1, 19  # synth atlas: a cortical label and a reference label
    for ses in ("petct", "petmr"):
        k = f"true_{ses}"
        assert rows[(cerebellum, k)] == pytest.approx(rows0[(cerebellum, k)], rel=1e-6)
        assert rows[(cortex, k)] / rows0[(cortex, k)] == pytest.approx(factors[ses], rel=1e-4)
    # without noise there is no session variability either (the breakdown's noiseless pair)
    quiet = simulate_subject(2, seed=1, tracers=["PiB"], config=SynthConfig(
        **cfg, noise=False, session_sd=0.05))
    assert "session_ratio_factor" not in quiet.params["tracers"]["PiB"]
    with pytest.raises(ValueError, match="session_sd"):
        SynthConfig(session_sd=0.5)
