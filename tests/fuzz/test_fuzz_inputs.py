"""Fuzzed bad inputs: each ends in one line naming the file, the expected exit status,
no traceback, nothing written to the output folder, and the other participants kept.

Every case here fails in the pre-flight checks (seconds); ``test_fuzz_kill.py`` holds the
cases that run the workflow or kill runs.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
import time

import nibabel as nb
import numpy as np
import pytest
from fuzz_helpers import PET_MR, T1W, error_line, fast_args, replace, with_pet_mr_sidecar

from bids_harmonize.bids import InputError, discover, read_participants

# ------------------------------------------------------------------ sidecars (frame timing, types)

SIDECAR_CASES = {
    "duration-int": ({"FrameDuration": 300}, "FrameDuration must be a list"),
    "duration-string": ({"FrameDuration": "300300"}, "FrameDuration must be a list"),
    "duration-null-item": ({"FrameDuration": [300, None, 300, 300, 300, 300]},
                           "FrameDuration[1] must be a number"),
    "duration-nan": ({"FrameDuration": [300, float("nan"), 300, 300, 300, 300]},
                     "FrameDuration[1] is not finite"),
    "duration-nested": ({"FrameDuration": [[300]] * 6}, "FrameDuration[0] must be a number"),
    "duration-negative": ({"FrameDuration": [300, 300, -300, 300, 300, 300]},
                          "FrameDuration[2] must be positive"),
    "duration-bool": ({"FrameDuration": [True] * 6}, "FrameDuration[0] must be a number"),
    "length-mismatch": ({"FrameDuration": [300] * 5}, "FrameDuration 5 entries"),
    "starts-strings": ({"FrameTimesStart": ["2400"] * 6}, "FrameTimesStart[0] must be a number"),
    "starts-overlap": ({"FrameTimesStart": [2400, 2500, 2600, 2700, 2800, 2900]},
                       "frames must not overlap"),
    "starts-negative": ({"FrameTimesStart": [-600, 2700, 3000, 3300, 3600, 3900]},
                        "FrameTimesStart[0] is negative"),
    "starts-missing": ({"FrameTimesStart": None}, "lacks FrameTimesStart"),
    "model-name-list": ({"ManufacturersModelName": ["Biograph mMR"]},
                        "ManufacturersModelName must be text"),
    "tracer-name-number": ({"TracerName": 11}, "TracerName must be text"),
    "weight-string": ({"BodyWeight": "70 kg"}, "BodyWeight must be a finite number"),
}


@pytest.mark.parametrize("case", sorted(SIDECAR_CASES))
def test_bad_sidecar_values(bids, tmp_path, run_app, case):
    changes, message = SIDECAR_CASES[case]
    with_pet_mr_sidecar(bids, **changes)
    out = tmp_path / "out"
    code, err = run_app(*fast_args(bids, out, "--participant-label", "01"))
    line = error_line(err)
    assert code == 1
    assert message in line and f"{PET_MR}" in line
    assert not out.exists()


SIDECAR_FILES = {
    "truncated": (b'{"FrameDuration": [30', "not valid JSON"),
    "list-valued": (b"[1, 2, 3]", "must be a JSON object"),
    "not-utf8": (b'{"TracerName": "\xff\xfe"}', "not UTF-8"),
    "empty": (b"", "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(SIDECAR_FILES))
def test_broken_sidecar_files(bids, tmp_path, run_app, case):
    data, message = SIDECAR_FILES[case]
    replace(bids / f"{PET_MR}.json", data)
    out = tmp_path / "out"
    code, err = run_app(*fast_args(bids, out, "--participant-label", "01"))
    assert code == 1 and message in error_line(err) and f"{PET_MR}.json" in err
    assert not out.exists()


def test_missing_sidecar(bids, tmp_path, run_app):
    (bids / f"{PET_MR}.json").unlink()
    code, err = run_app(*fast_args(bids, tmp_path / "out", "--participant-label", "01"))
    assert code == 1 and "without a JSON sidecar" in error_line(err)


def test_truncated_sidecar_of_another_subject_does_not_matter(bids):
    replace(bids / f"{PET_MR.replace('sub-01', 'sub-02')}.json", b'{"Frame')
    found = discover(bids, participant_label=["01"])
    assert [p.subject for p in found.plans] == ["01"] and not found.excluded


def test_every_problem_reported_and_good_participant_kept(bids):
    # sub-01: two problems in one sidecar; sub-02 untouched
    with_pet_mr_sidecar(bids, FrameDuration=[300, None, 300, 300, 300, 300], ManufacturersModelName=["x"])
    found = discover(bids)
    assert [p.subject for p in found.plans] == ["02"]
    problems = found.excluded["01"]
    assert len(problems) == 2 and all(str(bids / PET_MR) in p for p in problems)


def test_stop_on_first_crash_keeps_all_or_nothing(bids, tmp_path, run_app):
    replace(bids / f"{PET_MR}.json", b"{")
    out = tmp_path / "out"
    code, err = run_app(*fast_args(bids, out, "--stop-on-first-crash"))
    assert code == 1 and "--stop-on-first-crash" in error_line(err) and "sub-01" in err
    assert not out.exists()


# ------------------------------------------------------------------ images (shapes, affines, sizes)


def _image(path, data, affine, dtype=np.float32):
    img = nb.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    path.unlink(missing_ok=True)
    nb.save(img, path)


def test_zero_length_dimension(bids, tmp_path, run_app):
    _image(bids / T1W, np.zeros((8, 0, 8)), np.eye(4))
    code, err = run_app(*fast_args(bids, tmp_path / "out", "--participant-label", "01"))
    assert code == 1 and "zero-length dimension" in error_line(err) and T1W in err


@pytest.mark.parametrize("bad", ["nan", "inf", "zero"])
def test_bad_affine(bids, tmp_path, run_app, bad):
    affine = {"nan": np.full((4, 4), np.nan), "inf": np.diag([np.inf, 1, 1, 1]),
              "zero": np.zeros((4, 4))}[bad]
    data = np.random.default_rng(0).random((8, 8, 8))
    img = nb.Nifti1Image(data.astype(np.float32), None)
    img.header.set_sform(affine, code=1)
    img.header.set_qform(np.eye(4), code=0)
    (bids / T1W).unlink()
    nb.save(img, bids / T1W)
    code, err = run_app(*fast_args(bids, tmp_path / "out", "--participant-label", "01"))
    line = error_line(err)
    assert code == 1 and T1W in line
    assert "affine" in line


def test_all_zero_t1w(bids, tmp_path, run_app):
    _image(bids / T1W, np.zeros((8, 8, 8)), np.eye(4))
    code, err = run_app(*fast_args(bids, tmp_path / "out", "--participant-label", "01"))
    assert code == 1 and "no signal" in error_line(err)


def test_declared_size_cap_reads_no_data(bids, tmp_path, run_app):
    """A ~1 MB gzip whose header declares 800^3 voxels is refused from the header alone."""
    header = nb.Nifti1Header()
    header.set_data_dtype(np.uint8)
    header.set_data_shape((800, 800, 800))
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4 + bytes(1 << 20)
    path = bids / T1W
    path.unlink()
    path.write_bytes(gzip.compress(raw))
    started = time.monotonic()
    code, err = run_app(*fast_args(bids, tmp_path / "out", "--participant-label", "01"))
    assert code == 1 and "800 x 800 x 800" in error_line(err)
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"garbage" * 100, "not a readable NIfTI"),
    ("truncated", "unreadable"),
])
def test_corrupt_pet_image(bids, tmp_path, run_app, content, message):
    path = bids / f"{PET_MR}.nii.gz"
    if content == "truncated":
        content = path.read_bytes()[: path.stat().st_size // 2]
    replace(path, content)
    code, err = run_app(*fast_args(bids, tmp_path / "out", "--participant-label", "01"))
    assert code == 1 and message in error_line(err) and PET_MR in err


# ------------------------------------------------------------------ duplicates


def test_runs_and_reconstructions_are_kept_apart(bids):
    pet = bids / f"{PET_MR}.nii.gz"
    for name in ("run-1", "run-2", "rec-acdyn"):
        stem = PET_MR.replace("_pet", f"_{name}_pet")
        os.link(pet, bids / f"{stem}.nii.gz")
        os.link(bids / f"{PET_MR}.json", bids / f"{stem}.json")
    pet.unlink()
    (bids / f"{PET_MR}.json").unlink()
    found = discover(bids, participant_label=["01"])
    (plan,) = found.plans
    keys = [s.key for s in plan.pet]
    assert len(keys) == len(set(keys)) == 4  # three PET-MR series and the PET-CT one
    assert any("run_2" in k for k in keys) and any("rec_acdyn" in k for k in keys)


# ------------------------------------------------------------------ options and dataset files


def test_config_file_errors_exit_2(bids, tmp_path, run_app):
    out = tmp_path / "out"
    cfg = tmp_path / "c.toml"
    for text, message in [
        ("[run\nnprocs = 1", "not valid TOML"),
        ('[run]\nbids_dir = "/d"\noutput_dir = "/o"\nanalysis_level = "participant"\n'
         "nprocs = \"two\"\n", "'nprocs' must be an integer"),
        ('[run]\nbids_dir = "/d"\noutput_dir = "/o"\nanalysis_level = "participant"\n'
         "colour = 1\n", "unknown settings: colour"),
    ]:
        cfg.write_text(text)
        code, err = run_app(*fast_args(bids, out, "--config-file", cfg))
        assert code == 2 and message in error_line(err) and str(cfg) in err
    cfg.write_bytes(b"\xff\xfe[run]")
    code, err = run_app(*fast_args(bids, out, "--config-file", cfg))
    assert code == 2 and "not UTF-8" in error_line(err)
    assert not out.exists()


@pytest.mark.parametrize("content, message", [
    (b"{not json", "not valid JSON"),
    (b'["pet"]', "must be a JSON object"),
    (b'{"pet": ["ses-x"]}', "must map to a JSON object"),
    (b'{"bold": {}}', "unknown query 'bold'"),
    (b'{"pet": {"session": {"a": 1}}}', "filter pet.session"),
])
def test_malformed_filter_file_exits_2(bids, tmp_path, run_app, content, message):
    path = tmp_path / "filter.json"
    path.write_bytes(content)
    code, err = run_app(*fast_args(bids, tmp_path / "out", "--bids-filter-file", path))
    assert code == 2 and message in err.splitlines()[-1] and str(path) in err


@pytest.mark.parametrize("content, message", [
    (b"key\tplatform\nses-\xff\tPET-MR\n", "not UTF-8"),
    (b"key,platform\nses-a,PET-MR\n", "needs tab-separated columns"),
    (b"key\tplatform\nses-a\n", "too few columns"),
])
def test_bad_platform_map_exits_2(bids, tmp_path, run_app, content, message):
    path = tmp_path / "map.tsv"
    path.write_bytes(content)
    code, err = run_app(*fast_args(bids, tmp_path / "out", "--platform-map", path))
    assert code == 2 and message in err.splitlines()[-1]


def test_platform_map_with_bom_is_read(tmp_path):
    from bids_harmonize.bids import read_platform_map

    path = tmp_path / "map.tsv"
    path.write_bytes("\ufeffkey\tplatform\nses-a\tPET-CT\n".encode())
    assert read_platform_map(path) == {"ses-a": "PET-CT"}


def test_participants_tsv(bids, tmp_path, run_app):
    tsv = bids / "participants.tsv"
    replace(tsv, "\ufeffparticipant_id\tweight\nsub-01\t70\n".encode())
    assert read_participants(bids)[0]["participant_id"] == "sub-01"
    replace(tsv, b"subject\tweight\nsub-01\t70\n")
    with pytest.raises(InputError, match="no 'participant_id' column"):
        read_participants(bids)
    out = tmp_path / "out"
    code, err = run_app(*fast_args(bids, out))
    assert code == 1 and "participants.tsv" in error_line(err)
    assert not out.exists()


def test_validator_missing_is_an_error(bids, tmp_path, run_app, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "nowhere" / "python"))
    args = [a for a in fast_args(bids, tmp_path / "out") if a != "--skip-bids-validation"]
    code, err = run_app(*args)
    assert code == 1 and "bids-validator-deno" in error_line(err)
    assert "--skip-bids-validation" in err


def test_validator_found_next_to_interpreter(tmp_path, monkeypatch):
    from bids_harmonize.bids import find_validator

    fake_bin = tmp_path / "venv" / "bin"
    fake_bin.mkdir(parents=True)
    exe = fake_bin / "bids-validator-deno"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.setattr(sys, "executable", str(fake_bin / "python"))
    assert find_validator() == str(exe)


# ------------------------------------------------------------------ model cards


def _model(tmp_path):
    from bids_harmonize.harmonizer.weights import default_model_dir

    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    return model


def _edit_card(model, edit, *, rehash=True):
    """Edit the card; ``rehash`` keeps its config_sha256 consistent (a card built that way)."""
    from bids_harmonize.harmonizer.weights import config_sha256

    card_path = model / "model.json"
    card = json.loads(card_path.read_text())
    edit(card)
    if rehash:
        card["config_sha256"] = config_sha256(card["config"])
    card_path.write_text(json.dumps(card))


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["config"]["anatomy"].update(num_heads=5), "does not divide"),
    (lambda c: c["config"]["anatomy"].update(hidden_size=400000), "hidden_size must be"),
    (lambda c: c["config"]["anatomy"].update(num_layers="2"), "num_layers must be"),
    (lambda c: c["config"].update(correction=[1]), "config.correction is not an object"),
    (lambda c: c["config"]["anatomy"].update(num_layers=3), "does not match its config_sha256"),
])
def test_impossible_model_card(bids, tmp_path, run_app, edit, message):
    model = _model(tmp_path)
    _edit_card(model, edit, rehash="config_sha256" not in message)
    args = [a for a in fast_args(bids, tmp_path / "out") if a != "--no-harmonization"]
    started = time.monotonic()
    code, err = run_app(*args, "--model-dir", model)
    assert code == 1 and message in error_line(err) and "model.json" in err
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


def test_garbage_weights_with_matching_hash(bids, tmp_path, run_app):
    from bids_harmonize.harmonizer.weights import sha256_file

    model = _model(tmp_path)
    weights = model / "correction.safetensors"
    weights.write_bytes(os.urandom(4096))
    _edit_card(model, lambda c: c["files"].update({weights.name: sha256_file(weights)}))
    args = [a for a in fast_args(bids, tmp_path / "out") if a != "--no-harmonization"]
    code, err = run_app(*args, "--model-dir", model)
    assert code == 1 and "correction.safetensors" in error_line(err)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the top-level handler


def test_unexpected_error_is_one_line_and_a_crash_file(bids, tmp_path, run_app, monkeypatch):
    """Fault injection: any exception the app does not expect ends in one line + crash file."""
    import bids_harmonize.bids as bids_module

    def broken(*_args, **_kwargs):
        raise KeyError("injected fault")

    monkeypatch.setattr(bids_module, "discover", broken)
    out = tmp_path / "out"
    out.mkdir()
    code, err = run_app(*fast_args(bids, out))
    line = error_line(err)
    assert code == 1 and "unexpected KeyError" in line and "injected fault" in line
    (crash,) = (out / "logs").glob("crash-*-bids_harmonize.txt")
    assert str(crash) in line
    assert "Traceback" in crash.read_text() and "injected fault" in crash.read_text()


# ------------------------------------------------------------------ permissions (as nobody)


def _as_nobody():
    if os.geteuid() != 0:
        return None
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


@pytest.mark.parametrize("what", ["sidecar", "session"])
def test_unreadable_inputs(synth_bids, templateflow_home, what):
    import subprocess
    import tempfile

    prefix = _as_nobody()
    if prefix is None:
        if os.geteuid() == 0:
            pytest.skip("no setpriv to drop root privileges")
        prefix = []  # not root: permissions apply as they are
    root = tempfile.mkdtemp(prefix="bh-fuzz-perm-")
    try:
        bids = os.path.join(root, "bids")
        shutil.copytree(synth_bids, bids, ignore=shutil.ignore_patterns("derivatives"))
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames:
                os.chmod(os.path.join(dirpath, name), 0o755)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o644)
        os.chmod(root, 0o777)  # the output folder is created there by the unprivileged user
        target = (os.path.join(bids, f"{PET_MR}.json") if what == "sidecar"
                  else os.path.join(bids, "sub-01", "ses-petmr"))
        os.chmod(target, 0)
        out = os.path.join(root, "out")
        os.makedirs(os.path.join(root, "home"), mode=0o777)
        os.chmod(os.path.join(root, "home"), 0o777)
        for dirpath, _dirs, filenames in os.walk(templateflow_home):  # readable for nobody
            os.chmod(dirpath, 0o755)
            for name in filenames:
                os.chmod(os.path.join(dirpath, name), 0o644)
        env = {**os.environ, "HOME": os.path.join(root, "home"),
               "TEMPLATEFLOW_HOME": str(templateflow_home)}
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "bids_harmonize.cli.run",
             *map(str, fast_args(bids, out, "--participant-label", "01"))],
            capture_output=True, text=True, env=env, timeout=120, cwd=root, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        line = error_line(proc.stderr)
        assert proc.returncode == 1 and "permission denied" in line and target in line
        assert not os.path.exists(out)
    finally:
        for dirpath, dirnames, _files in os.walk(root):
            for name in dirnames:
                os.chmod(os.path.join(dirpath, name), 0o755)
        os.chmod(target, 0o755)
        shutil.rmtree(root, ignore_errors=True)
