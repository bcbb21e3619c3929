"""The public PET-BIDS layouts of bids-examples (pet001-pet006) with their real sidecars.

``tests/data/bids_examples_pet.json`` holds the key fields of each layout's PET sidecars
(copied from bids-standard/bids-examples; see its ``_about``); the images under them are
small ones drawn by the project's simulator (8 mm anatomy). Checked: discovery, platform
inference, tracer resolution from the options as a user types them, and graph building
(nothing is run).

What the real sidecars show: pet001, pet003 and pet004 give each frame's *end* as its
``FrameDuration`` (frames overlap), so they are excluded with a message naming the file;
with the durations a site would mean (start differences) they plan and build. pet003,
pet004 and pet006 have no T1w; the app needs one (registration), so the tests add one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bids_harmonize import tracers
from bids_harmonize.bids import discover
from bids_harmonize.cli.parser import build_parser
from bids_harmonize.cli.run import config_from_args
from bids_harmonize.platforms import infer_platform

LAYOUTS = json.loads((Path(__file__).parent / "data" / "bids_examples_pet.json").read_text())

#: What a user types for each layout (the tracers of pet001-pet005 are in no table).
OPTIONS = {
    "pet001": ["--uptake-window", "CIMBI-36=60-90", "--reference-region", "CIMBI-36=none"],
    "pet002": ["--reference-region", "DASB=none"],
    "pet003": ["--reference-region", "DASB=none"],
    "pet004": ["--uptake-window", "CIMBI-36=60-90", "--reference-region", "CIMBI-36=none"],
    "pet005": ["--uptake-window", "AZ-10419369=22-51", "--reference-region",
               "AZ-10419369=none"],
    "pet006": [],
}
#: Layouts whose FrameDuration holds each frame's end (frames overlap).
FRAME_ENDS_AS_DURATIONS = ("pet001", "pet003", "pet004")
#: Per layout: platform, tracer name, tracer label, series planned, harmonized or not.
EXPECTED = {
    "pet001": ("PET", "CIMBI-36", "CIMBI36", 1),
    "pet002": ("PET", "DASB", "DASB", 2),
    "pet003": ("PET", "DASB", "DASB", 1),
    "pet004": ("PET", "CIMBI-36", "CIMBI36", 1),
    "pet005": ("PET-MR", "AZ-10419369", "AZ10419369", 2),
    "pet006": ("PET", "FDG", "FDG", 1),
}


@pytest.fixture(autouse=True)
def _clean_tracer_env(monkeypatch):
    # setenv (not delenv): what discovery registers is undone after each test
    monkeypatch.setenv(tracers.TRACER_FILE_ENV, "")
    monkeypatch.setenv(tracers.RUNTIME_TRACERS_ENV, "")


@pytest.fixture(scope="module")
def anatomy():
    """One simulated head at 8 mm (drawn once: a few seconds)."""
    from bids_harmonize.synth.anatomy import make_anatomy, t1w_image

    anat = make_anatomy(np.random.default_rng(0), resolution_mm=8.0)
    return anat, t1w_image(anat, np.random.default_rng(1))


def _options(tmp_path, name):
    args = build_parser().parse_args([str(tmp_path), str(tmp_path / "out"), "participant",
                                      *OPTIONS[name]])
    config = config_from_args(args)
    return {"uptake_windows": config.uptake_windows,
            "reference_regions": config.references()}


def _write(root: Path, name: str, anatomy, *, mean_durations=False, add_t1w=False) -> Path:
    """The layout's tree: its real sidecars, simulated images (one uptake pattern per frame)."""
    anat, t1w = anatomy
    spec = LAYOUTS[name]
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": name, "BIDSVersion": "1.10.0"}))
    anat_files = list(spec["anat"]) or (["sub-01/anat/sub-01_T1w.nii.gz"] if add_t1w else [])
    for rel in anat_files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        nb.save(nb.Nifti1Image(t1w.astype(np.float32), anat.affine), root / rel)
    uptake = np.where(anat.labels > 0, 1.0 + (anat.labels % 3), 0.1).astype(np.float32)
    for rel, sidecar in spec["pet"].items():
        sidecar = dict(sidecar)
        starts = sidecar["FrameTimesStart"]
        if mean_durations and name in FRAME_ENDS_AS_DURATIONS:  # what the site meant
            sidecar["FrameDuration"] = [*np.diff(starts).tolist(),
                                        sidecar["FrameDuration"][-1] - starts[-1]]
        frames = np.stack([uptake * 1000.0 * (1 + 0.01 * i) for i in range(len(starts))], -1)
        path = root / f"{rel}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nb.save(nb.Nifti1Image(frames, anat.affine), path)
        (root / f"{rel}.json").write_text(json.dumps(sidecar))
    return root


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_platform_and_tracer_from_the_real_sidecars(tmp_path, name):
    """Every sidecar of every layout: the platform and the tracer, from its fields alone."""
    platform, tracer_name, label, _ = EXPECTED[name]
    for rel, sidecar in LAYOUTS[name]["pet"].items():
        session = next((p[4:] for p in rel.split("/") if p.startswith("ses-")), None)
        assert infer_platform(sidecar, subject="01", session=session, has_ct=False)[0] \
            == platform, rel
        options = _options(tmp_path, name)
        tracer = tracers.resolve_tracer(None, sidecar["TracerName"], sidecar,
                                        windows=options["uptake_windows"],
                                        references=options["reference_regions"])
        assert (tracer.name, tracer.label) == (tracer_name, label)


@pytest.mark.parametrize("name", ["pet001", "pet003", "pet004"])
def test_frame_ends_given_as_durations_are_refused_naming_the_file(tmp_path, anatomy, name):
    root = _write(tmp_path / name, name, anatomy, add_t1w=True)
    found = discover(root, **_options(tmp_path, name))
    assert not found.plans
    (problem,) = found.excluded["01"]
    assert "before frame 1 ends" in problem and "must not overlap" in problem
    assert problem.startswith(str(root / "sub-01"))


@pytest.mark.parametrize("name", ["pet003", "pet004", "pet006"])
def test_layout_without_t1w_is_excluded_for_that_alone(tmp_path, anatomy, name):
    root = _write(tmp_path / name, name, anatomy, mean_durations=True)
    found = discover(root, **_options(tmp_path, name))
    assert found.excluded == {"01": ["no T1w in any session (needed for registration)"]}


def test_unknown_tracer_message_is_the_command_that_works(tmp_path, anatomy):
    """pet005: the message names the option; typed exactly, it runs."""
    root = _write(tmp_path / "pet005", "pet005", anatomy)
    (problem, *_) = discover(root).excluded["01"]
    assert "--uptake-window AZ-10419369=START-END" in problem
    typed = ["--uptake-window", "AZ-10419369=22-51"]
    args = build_parser().parse_args([str(root), str(tmp_path / "out"), "participant", *typed])
    assert discover(root, uptake_windows=config_from_args(args).uptake_windows).plans


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_layout_plans_and_builds(tmp_path, anatomy, templateflow_home, name, caplog):
    """Each layout (durations as meant, a T1w where it has none) plans and builds its graph:
    PET-only scanners are preprocessed and quantified, never harmonized."""
    from bids_harmonize.app.participant import build_workflow
    from bids_harmonize.app.plan import Settings
    from bids_harmonize.templates import get_template

    platform, tracer_name, label, n_series = EXPECTED[name]
    root = _write(tmp_path / name, name, anatomy, mean_durations=True, add_t1w=True)
    options = _options(tmp_path, name)
    with caplog.at_level(logging.INFO, logger="bids_harmonize.bids"):
        found = discover(root, **options)
    assert not found.excluded, found.excluded
    (plan,) = found.plans
    assert len(plan.pet) == n_series
    assert {(s.platform, s.tracer, s.tracer_label) for s in plan.pet} == {
        (platform, tracer_name, label)}
    never = [r for r in caplog.records if "never harmonized" in r.getMessage()]
    assert len(never) == (n_series if platform == "PET" else 0)
    model = tmp_path / "model"
    model.mkdir()
    wf = build_workflow(found.plans, Settings(bids_dir=root, output_dir=tmp_path / "out",
        template=get_template("MNI152NLin2009aSym"), model_dir=model, sloppy=True,
        uptake_windows=options["uptake_windows"]))
    nodes = wf._get_all_nodes()
    names = {n.fullname for n in nodes}
    harmonized = {p for n in names for p in n.split(".") if p.startswith("harmonize_")}
    assert bool(harmonized) is (platform == "PET-MR")
    assert all(f"trc_{label}_" in h for h in harmonized)  # graph keys use the label
    quantify = {p for n in names for p in n.split(".") if p.startswith("quantify_")}
    assert len(quantify) == n_series * (2 if platform == "PET-MR" else 1)


def test_pet_only_image_is_the_reference_in_group_pairing():
    """Measured (transmission) attenuation correction is a reference like CT-based."""
    import pandas as pd

    from bids_harmonize.group.run import _conditions

    images = pd.DataFrame({"platform": ["PET", "PET-MR", "PET-MR"],
                           "version": ["raw", "raw", "harmonized"], "subject": ["01"] * 3,
                           "tracer": ["DASB"] * 3, "seg": ["synth"] * 3})
    assert _conditions(images)["condition"].tolist() == ["petct", "petmr_raw",
                                                         "petmr_harmonized"]
