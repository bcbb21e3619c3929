"""Discovery and the uptake image with tracer options: SPECT, FP-CIT, unknown tracers,
per-session windows and the nearest-frames policy, units between two injections."""

from __future__ import annotations

import json

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize import tracers
from bids_harmonize.bids import discover
from bids_harmonize.interfaces.pet import PETStaticImage
from bids_harmonize.petmath import body_weight

BASE = {"Units": "Bq/mL", "FrameTimesStart": [3000, 3600], "FrameDuration": [600, 600],
        "ManufacturersModelName": "Biograph mMR", "AttenuationCorrection": "MR-based Dixon"}


@pytest.fixture(autouse=True)
def _clean_tracer_env(monkeypatch):
    monkeypatch.delenv(tracers.TRACER_FILE_ENV, raising=False)
    monkeypatch.delenv(tracers.RUNTIME_TRACERS_ENV, raising=False)


def _nifti(path, shape=(8, 8, 8), value=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full(shape, value, dtype=np.float32)
    data[(0,) * len(shape)] = 0
    nb.save(nb.Nifti1Image(data, np.eye(4)), path)
    return path


def _dataset(root, trc, sidecar, *, session="petmr"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "t", "BIDSVersion": "1.10.0"}))
    ses = root / "sub-01" / f"ses-{session}"
    _nifti(root / "sub-01" / "ses-petmr" / "anat" / "sub-01_ses-petmr_T1w.nii.gz")
    pet = _nifti(ses / "pet" / f"sub-01_ses-{session}_trc-{trc}_pet.nii.gz", (8, 8, 8, 2))
    pet.with_name(pet.name.replace(".nii.gz", ".json")).write_text(json.dumps(sidecar))
    return root


def _problem(found):
    assert not found.plans
    (problem,) = found.excluded["01"]
    assert "\n" not in problem
    return problem


@pytest.mark.parametrize("extra", [{"Modality": "NM"}, {"TracerRadionuclide": "I123"}])
def test_spect_dataset_is_refused(tmp_path, extra):
    root = _dataset(tmp_path / "d", "FPCIT", {**BASE, "TracerName": "DaTSCAN", **extra})
    problem = _problem(discover(root))
    assert "SPECT" in problem and "PET only" in problem and "sub-01_ses-petmr" in problem


def test_fpcit_without_radionuclide_is_not_matched_silently(tmp_path):
    root = _dataset(tmp_path / "d", "FPCIT", {**BASE, "TracerName": "FP-CIT"})
    assert "ambiguous" in _problem(discover(root))
    root = _dataset(tmp_path / "e", "FPCIT", {**BASE, "TracerName": "FP-CIT",
                                              "TracerRadionuclide": "F18",
                                              "FrameTimesStart": [5400, 6000]})
    (plan,) = discover(root).plans
    assert plan.pet[0].tracer == "FPCIT"


def test_unknown_tracer_error_and_user_window(tmp_path):
    meta = {**BASE, "TracerName": "AZ10419369", "TracerRadionuclide": "C11"}
    root = _dataset(tmp_path / "d", "AZ10419369", meta)
    problem = _problem(discover(root))
    assert "--uptake-window AZ10419369=START-END" in problem and "--tracer-file" in problem
    found = discover(root, uptake_windows={"AZ10419369": [50, 70]},
                     reference_regions={"AZ10419369": None})
    (plan,) = found.plans
    assert plan.pet[0].tracer == "AZ10419369"
    tracer = tracers.get_tracer("AZ10419369")
    assert (tracer.family, tracer.window_min, tracer.reference) == (
        "unknown", (50.0, 70.0), None)


def test_same_day_pair_window_per_session_and_nearest_policy(tmp_path):
    # florbetaben injected once; the PET-MR session runs 130-150 min
    meta = {**BASE, "TracerName": "florbetaben", "TracerRadionuclide": "F18",
            "FrameTimesStart": [7800, 8400]}
    root = _dataset(tmp_path / "d", "florbetaben", meta)
    problem = _problem(discover(root))
    assert "frames cover 0.0 of 20.0 min" in problem and "--window-policy nearest" in problem
    assert discover(root, uptake_windows={"ses-petmr:florbetaben": [130, 150]}).plans
    assert discover(root, window_policy="nearest").plans
    # a window for another session does not apply to this one
    assert not discover(root, uptake_windows={"ses-petct:florbetaben": [130, 150]}).plans


def _static(tmp_path, name, meta, data, weight, window=(50, 70), policy="strict"):
    path = tmp_path / f"{name}.nii.gz"
    nb.save(nb.Nifti1Image(data.astype(np.float32), np.eye(4)), path)
    node = PETStaticImage(in_file=str(path), metadata=meta, half_life_min=20.364,
                          realign=False, window_policy=policy,
                          body_weight_source=weight[1])
    if window is not None:
        node.inputs.window_min = window
    if weight[0] is not None:
        node.inputs.body_weight_kg = weight[0]
    cwd = tmp_path / name
    cwd.mkdir()
    result = node.run(cwd=str(cwd))
    return np.asarray(nb.load(result.outputs.out_file).dataobj), result.outputs.info


@pytest.mark.parametrize("with_weight", [True, False])
def test_two_injections_same_uptake_in_the_written_image(tmp_path, with_weight):
    """C-11 twice (416 vs 351 MBq), the weight in participants.tsv only: the static images
    agree (SUV, or %ID/L without a weight), where raw Bq/mL differ by 18.5 %."""
    root = tmp_path / "bids"
    root.mkdir()
    if with_weight:
        (root / "participants.tsv").write_text("participant_id\tweight\nsub-01\t70\n")
    uptake = np.random.default_rng(0).uniform(0.5, 2.0, (6, 6, 6))  # SUV-like pattern
    images, infos = {}, {}
    for session, dose in (("petct", 416.0), ("petmr", 351.0)):
        meta = {**BASE, "TracerRadionuclide": "C11", "InjectedRadioactivity": dose,
                "InjectedRadioactivityUnits": "MBq", "FrameTimesStart": [3000, 3600]}
        conc = uptake * dose * 1e6 / 70_000.0  # Bq/mL for a 70 kg subject
        weight = body_weight(root, "01", session, meta)
        images[session], infos[session] = _static(
            tmp_path, session, meta, np.stack([conc, conc], -1), weight)
    raw_ratio = 351.0 / 416.0
    assert raw_ratio == pytest.approx(0.84375)
    np.testing.assert_allclose(images["petmr"], images["petct"], rtol=1e-5)
    if with_weight:
        assert infos["petmr"]["Units"] == "g/mL"
        assert infos["petmr"]["BodyWeightSource"] == "participants.tsv"
        np.testing.assert_allclose(images["petct"], uptake, rtol=1e-5)
    else:
        assert infos["petmr"]["Units"] == "%ID/L"
        assert "dose-normalised" in infos["petmr"]["UnitsDescription"]
        assert infos["petmr"]["BodyWeightSource"] == "none"


def test_interface_records_the_window_used(tmp_path):
    meta = {**BASE, "TracerRadionuclide": "F18", "FrameTimesStart": [7800, 8400]}
    frames = np.stack([np.full((4, 4, 4), 2.0), np.full((4, 4, 4), 4.0)], -1)
    _, info = _static(tmp_path, "near", meta, frames, (None, "none"), window=(90, 110),
                      policy="nearest")
    assert info["TimeWindowRequested"] == [90.0, 110.0] and info["TimeWindow"] == [130.0, 150.0]
    assert info["TimeWindowPolicy"] == "nearest" and "130-150" in info["TimeWindowNote"]
    image, info = _static(tmp_path, "all", meta, frames, (None, "none"), window=None)
    assert info["TimeWindowRequested"] is None and info["TimeWindow"] == [130.0, 150.0]
    assert float(image[1, 1, 1]) == pytest.approx(3.0)  # every frame, duration-weighted
    assert info["Units"] == "Bq/mL" and "not comparable" in info["UnitsDescription"]


def test_command_line_options_round_trip(tmp_path):
    from bids_harmonize.cli.parser import build_parser
    from bids_harmonize.cli.run import config_from_args
    from bids_harmonize.config import load_config, save_config

    table = tmp_path / "tracers.yaml"
    table.write_text("UCBJ: {family: fdg, radionuclide: C11, half_life_min: 20.364, "
                     "window_min: [60, 90], reference: whole_cerebellum}\n")
    (tmp_path / "bids").mkdir()
    args = build_parser().parse_args([
        str(tmp_path / "bids"), str(tmp_path / "out"), "participant",
        "--uptake-window", "florbetaben=90-110", "--uptake-window",
        "ses-petmr:florbetaben=130-150", "--window-policy", "nearest",
        "--reference-region", "DASB=none", "--tracer-file", str(table)])
    config = config_from_args(args)
    assert config.uptake_windows == {"florbetaben": [90.0, 110.0],
                                     "ses-petmr:florbetaben": [130.0, 150.0]}
    assert config.window_policy == "nearest" and config.references() == {"DASB": None}
    again = load_config(save_config(config, tmp_path / "config.toml"))
    assert (again.uptake_windows, again.window_policy, again.reference_regions,
            again.tracer_file) == (config.uptake_windows, "nearest", {"DASB": "none"}, table)


@pytest.mark.parametrize("value", ["ses-a b:PiB=50-70", "PiB=70-50", "PiB=nan-70", "=50-70"])
def test_bad_uptake_window_option(tmp_path, value, capsys):
    from bids_harmonize.cli.parser import build_parser

    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([str(tmp_path), str(tmp_path / "o"), "participant",
                                   "--uptake-window", value])
    assert info.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()[-1:]) == 1


def test_bad_tracer_file_is_a_one_line_error(tmp_path, capsys):
    from bids_harmonize.cli.run import main

    (tmp_path / "bids").mkdir()
    table = tmp_path / "tracers.yaml"
    table.write_text("UCBJ: {family: synaptic}\n")
    status = main([str(tmp_path / "bids"), str(tmp_path / "out"), "group",
                   "--tracer-file", str(table)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"bids_harmonize: error: --tracer-file {table}: tracer 'UCBJ'")
    assert not (tmp_path / "out").exists()
