"""Consortium presets of the simulator (issue 20): sites, cohort, cohort writer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bids_harmonize.synth import SynthConfig, simulate_subject, write_dataset
from bids_harmonize.synth.cli import main
from bids_harmonize.synth.consortium import (
    ConsortiumError,
    load_consortium,
    parse_consortium,
    preset_names,
)
from bids_harmonize.tracers import get_tracer

FAST = dict(noise=False, resolution_mm=3.0, n_frames=1, n_angles=32)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_paper_preset_sites_and_sources():
    c = load_consortium("paper")
    assert "paper" in preset_names()
    assert [s.name for s in c.sites] == ["A", "B", "C"]
    setups = {c.setup_for(i) for i in range(1, 13)}
    assert setups == {"dixon-nobone", "dixon-bone", "zte", "atlas"}  # four setups
    # subjects go to the sites in turn; site A's setups alternate
    assert [c.site_for(i).name for i in (1, 2, 3, 4)] == ["A", "B", "C", "A"]
    assert [c.setup_for(i) for i in (1, 4, 7)] == ["dixon-nobone", "dixon-bone", "dixon-nobone"]
    assert "10.1038/s41746-026-02570-0" in c.source
    # test-retest variability at every site (protocol.session_sd, sourced in the YAML)
    assert all(0.02 <= s.session_sd <= 0.03 for s in c.sites)
    assert len({s.institution for s in c.sites}) == 3


def test_cohort_is_a_memory_clinic_mix():
    cohort = load_consortium("paper").cohort
    rng = np.random.default_rng(0)
    draws = [cohort.draw_amyloid(rng) for _ in range(4000)]
    pos = np.array([p for p, _ in draws])
    cl = np.array([c for _, c in draws])
    assert 0.57 < pos.mean() < 0.63  # IDEAS: 55.3 % MCI, 70.1 % dementia
    assert cl[pos].min() >= cohort.positive_centiloid_min
    assert abs(np.median(cl[pos]) - 87.7) < 3  # Amadoru et al. 2020
    assert cl[~pos].max() <= 20.0


@pytest.mark.parametrize("change, message", [
    (lambda s: s["sites"][0]["petmr"].update(setups=["ct"]), "not a PET-MR setup"),
    (lambda s: s["sites"][0]["petmr"].update(setups=["nope"]), "nope"),
    (lambda s: s["sites"][0]["petct"].update(model="Biograph mMR"), "not a simulated PET-CT"),
    (lambda s: s["cohort"]["amyloid_positive_fraction"].pop("source"), "no source"),
    (lambda s: s["sites"][1].update(name="A"), "must differ"),
    (lambda s: s["sites"][0]["protocol"].update(petmr_delay=500), "0-120"),
    (lambda s: s["sites"][2]["protocol"].update(session_sd=0.5), "session_sd must be 0-0.2"),
    (lambda s: s["sites"][2]["protocol"]["session_sd"].pop("source"), "no source"),
])
def test_bad_consortium_is_one_clear_error(change, message):
    import copy
    from importlib import resources

    import yaml

    spec = yaml.safe_load(resources.files("bids_harmonize.data").joinpath(
        "consortia.yaml").read_text())["paper"]
    spec = copy.deepcopy(spec)
    change(spec)
    with pytest.raises(ConsortiumError, match=message):
        parse_consortium("x", spec, "x.yaml")


def test_subject_of_a_site_has_its_scanners_timing_and_cohort():
    cfg = SynthConfig(**FAST, consortium=load_consortium("paper"))
    s = simulate_subject(2, seed=0, tracers=["PiB"], config=cfg)  # site B
    assert s.sessions["petct"].model == "Discovery MI"
    assert s.sessions["petmr"].ac_setup == "zte"
    assert s.params["site"]["name"] == "B"
    assert s.params["site"]["effective_resolution_mm"] == {"petct": 4.1, "petmr": 5.8}
    t0, t1 = get_tracer("PiB").window_min
    assert s.params["petmr_delay_min"] == {"PiB": t1 - t0}  # sequential: one window later
    # the cohort draws amyloid from its own stream, the same for the same seed
    again = simulate_subject(2, seed=0, tracers=["PiB"], config=cfg)
    assert again.params["centiloid"] == s.params["centiloid"]
    assert np.array_equal(again.pet_mr["PiB"], s.pet_mr["PiB"])


def test_cohort_writer_files_do_not_depend_on_jobs(tmp_path):
    cfg = SynthConfig(**FAST, consortium=load_consortium("paper"))
    write_dataset(tmp_path / "one", n_subjects=3, tracers=["PiB"], seed=1, config=cfg, jobs=1)
    write_dataset(tmp_path / "two", n_subjects=3, tracers=["PiB"], seed=1, config=cfg, jobs=2)
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    root = tmp_path / "one"
    parts = pd.read_csv(root / "participants.tsv", sep="\t")
    assert parts["site"].tolist() == ["A", "B", "C"]
    pjson = json.loads((root / "participants.json").read_text())
    assert "site" in pjson and "cohort" in pjson["amyloid_status"]["Description"]
    side = json.loads((root / "sub-03/ses-petmr/pet/sub-03_ses-petmr_trc-PiB_pet.json")
                      .read_text())
    assert side["InstitutionName"] == "Site C Memory Clinic (simulated)"
    assert side["ManufacturersModelName"] == "SIGNA PET/MR"
    desc = json.loads((root / "dataset_description.json").read_text())
    assert "consortium paper" in desc["GeneratedBy"][0]["Description"]


def test_cli_consortium_option(tmp_path, capsys):
    assert main([str(tmp_path / "bad"), "--consortium", "nope", "-q"]) == 1
    err = capsys.readouterr().err
    assert "unknown consortium 'nope'" in err and len(err.strip().splitlines()) == 1


def test_cli_session_sd_is_checked_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main([str(out), "--session-sd", "0.5", "-q"]) == 1
    err = capsys.readouterr().err
    assert "session_sd must be between 0 and 0.2" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())
