"""Hostile inputs, round two (issue 22): impossible images, timing, out-of-range numbers,
special files and bounded reads. Each case excludes only the participant it touches,
with one line naming the file; the other participant stays planned.

Every case runs discovery (pre-flight) only: seconds, no workflow.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import nibabel as nb
import numpy as np
import pytest
from fuzz_helpers import PET_MR, T1W, error_line, fast_args, pet_mr_sidecar, replace, with_pet_mr_sidecar

from bids_harmonize.bids import discover


def _rewrite_image(path, make):
    img = nb.load(path)
    data = np.asanyarray(img.dataobj)
    new = make(data, img)
    path.unlink()
    nb.save(new, path)


def _only_01_excluded(bids, message, file_suffix=""):
    found = discover(bids)
    assert [p.subject for p in found.plans] == ["02"], found.excluded
    (line,) = found.excluded["01"]
    assert message in line, line
    assert "\n" not in line
    if file_suffix:
        assert line.startswith(str(bids / file_suffix)), line
    return line


# ------------------------------------------------------------------ 1. impossible images


def _negative(data, img):
    return nb.Nifti1Image(-np.abs(data.astype(np.float32)) - 1, img.affine)


def _sign_flipped(data, img):
    return nb.Nifti1Image(-data.astype(np.float32) + 0.01 * float(data.max()), img.affine)


def _complex(data, img):
    return nb.Nifti1Image(data.astype(np.complex64) * (1 + 1j), img.affine)


IMAGE_CASES = {
    "pet-all-negative": (f"{PET_MR}.nii.gz", _negative, "no voxel is positive"),
    "pet-sign-flipped": (f"{PET_MR}.nii.gz", _sign_flipped, "negative values outweigh"),
    "pet-complex": (f"{PET_MR}.nii.gz", _complex, "complex-valued voxels"),
    "t1w-all-negative": (T1W, _negative, "no voxel is positive"),
}


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_impossible_images_are_refused(bids, case):
    rel, make, message = IMAGE_CASES[case]
    _rewrite_image(bids / rel, make)
    _only_01_excluded(bids, message, rel)


def test_rgb_t1w_excludes_only_its_participant(bids):
    def rgb(data, img):
        grey = (data / data.max() * 255).astype(np.uint8)
        out = np.zeros(grey.shape, np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")]))
        for channel in "RGB":
            out[channel] = grey
        return nb.Nifti1Image(out, img.affine)

    _rewrite_image(bids / T1W, rgb)
    _only_01_excluded(bids, "RGB or several values per voxel", T1W)


def test_tiny_image_is_refused(bids):
    _rewrite_image(bids / T1W, lambda data, img: nb.Nifti1Image(
        np.ascontiguousarray(data[:, :, :2]), img.affine))
    _only_01_excluded(bids, "too small for a brain image", T1W)


def test_ct_keeps_its_negative_values(bids):
    """Hounsfield units are negative in air: the sign check is for PET and T1w only."""
    found = discover(bids)
    assert sorted(p.subject for p in found.plans) == ["01", "02"]
    ct = found.plans[0].pet[0].ct
    assert ct is not None and float(np.asanyarray(nb.load(ct).dataobj).min()) < 0


# ------------------------------------------------------------------ 2. injection and scan times


def test_injection_after_time_zero_shifts_the_frames(bids):
    """Frames 50-70 min after TimeZero, injection 20 min after it: 30-50 min after injection,
    which does not cover PiB's 50-70 min window (before the fix they were used as 50-70)."""
    with_pet_mr_sidecar(bids, ScanStart=0, InjectionStart=1200,
          FrameTimesStart=[3000 + 200 * i for i in range(6)], FrameDuration=[200] * 6)
    _only_01_excluded(bids, "frames cover 0.0 of 20.0 min of the window 50-70", PET_MR)


def test_injection_shift_keeps_a_covered_window(bids):
    """The same frames with the injection at TimeZero cover the window: planned."""
    with_pet_mr_sidecar(bids, ScanStart=0, InjectionStart=0,
          FrameTimesStart=[3000 + 200 * i for i in range(6)], FrameDuration=[200] * 6)
    found = discover(bids)
    assert sorted(p.subject for p in found.plans) == ["01", "02"]


@pytest.mark.parametrize("changes, message", [
    ({"InjectionStart": 99999}, "InjectionStart (99999 s) is after the last frame ends"),
    ({"InjectionStart": "13:00"}, "InjectionStart must be a finite number"),
    ({"ScanStart": [0]}, "ScanStart must be a finite number"),
])
def test_bad_injection_or_scan_start(bids, changes, message):
    with_pet_mr_sidecar(bids, **changes)
    _only_01_excluded(bids, message, PET_MR)


def test_static_image_counts_frames_from_the_injection(tmp_path):
    """PETStaticImage picks the frames of the window after injection (frame i holds i + 1)."""
    from bids_harmonize.interfaces.pet import PETStaticImage

    frames = np.stack([np.full((8, 8, 8), i + 1.0, np.float32) for i in range(6)], -1)
    frames[2:6, 2:6, 2:6] *= 2  # some structure, so nothing is constant
    pet = tmp_path / "pet.nii.gz"
    nb.save(nb.Nifti1Image(frames, np.diag([2.0, 2.0, 2.0, 1.0])), pet)
    meta = {"FrameTimesStart": [3000 + 600 * i for i in range(6)], "FrameDuration": [600] * 6,
            "InjectionStart": 1200, "Units": "Bq/mL"}
    node = PETStaticImage(in_file=str(pet), metadata=meta, window_min=(50.0, 70.0),
                          realign=False, suv=False, half_life_min=20.4)
    node.inputs.window_policy = "strict"
    (tmp_path / "run").mkdir()
    os.chdir(tmp_path / "run")
    result = node.run()
    info = result.outputs.info
    # after injection the frames start at 30, 40, 50, 60, 70, 80 min: frames 2 and 3
    assert info["FramesUsed"] == [2, 3]
    assert info["TimeWindow"] == [50.0, 70.0]


# ------------------------------------------------------------------ 3. any per-participant error


@pytest.mark.parametrize("text, message", [
    ('"FrameDuration": [1e400', "FrameDuration[0] is not finite or out of range"),
    ('"FrameDuration": [1' + "0" * 400, "FrameDuration[0] is not finite or out of range"),
    ('"FrameDuration": [1' + "0" * 5000, "a number too long to read"),
    ('"X": ' + "[" * 100_000 + "]" * 100_000 + ', "FrameDuration": [300.0',
     "JSON nested more than 32 levels deep"),
])
def test_out_of_range_and_nested_json(bids, text, message):
    raw = (bids / f"{PET_MR}.json").read_text().replace('"FrameDuration": [\n    300.0', text, 1)
    assert text in raw
    replace(bids / f"{PET_MR}.json", raw)
    _only_01_excluded(bids, message)


def test_any_exception_excludes_only_its_participant(bids, monkeypatch):
    """Fault injection: an error of any type while checking sub-01 excludes sub-01 only."""
    import bids_harmonize.bids as bids_module

    real = bids_module._plan_series

    def broken(layout, bids_dir, subject, pet, **kwargs):
        if subject == "01":
            raise ZeroDivisionError("injected fault")
        return real(layout, bids_dir, subject, pet, **kwargs)

    monkeypatch.setattr(bids_module, "_plan_series", broken)
    line = _only_01_excluded(bids, "unexpected ZeroDivisionError: injected fault")
    assert line.startswith("sub-01:")


def test_cli_reports_one_line_for_a_nested_sidecar(bids, tmp_path, run_app):
    raw = pet_mr_sidecar(bids)
    raw["Deep"] = json.loads("[" * 200 + "]" * 200)
    replace(bids / f"{PET_MR}.json", json.dumps(raw))
    out = tmp_path / "out"
    code, err = run_app(*fast_args(bids, out, "--participant-label", "01"))
    assert code == 1 and "nested more than" in error_line(err) and "unexpected" not in err
    assert not out.exists()


# ------------------------------------------------------------------ 9. plausibility warnings


@pytest.mark.parametrize("changes, message", [
    ({"BodyWeight": -70}, "BodyWeight -70 kg is not a body weight"),
    ({"BodyWeight": 5000}, "BodyWeight 5000 kg is not a body weight"),
    ({"InjectedRadioactivity": 10.97}, "an mCi value?"),
    ({"InjectedRadioactivityUnits": "furlongs"}, "is not a known unit"),
    ({"ScanStart": 9000}, "ScanStart (9000 s) is after the first frame starts"),
])
def test_unusual_values_are_warned_not_refused(bids, caplog, changes, message):
    with_pet_mr_sidecar(bids, **changes)
    with caplog.at_level("WARNING", logger="bids_harmonize.bids"):
        found = discover(bids)
    assert sorted(p.subject for p in found.plans) == ["01", "02"]
    assert any(message in r.getMessage() for r in caplog.records), caplog.text


def test_duplicate_keys_are_warned(bids, caplog):
    raw = (bids / f"{PET_MR}.json").read_text()
    replace(bids / f"{PET_MR}.json", raw.replace('"BodyWeight"', '"BodyWeight": 1, "BodyWeight"'))
    with caplog.at_level("WARNING", logger="bids_harmonize.bids"):
        found = discover(bids)
    assert len(found.plans) == 2
    assert any("more than once" in r.getMessage() and "BodyWeight" in r.getMessage()
               for r in caplog.records)


# ------------------------------------------------------------------ 4. special files, bounded reads


def test_fifo_sidecar_does_not_hang(bids):
    (bids / f"{PET_MR}.json").unlink()
    os.mkfifo(bids / f"{PET_MR}.json")
    _only_01_excluded(bids, "not a regular file (a FIFO)", f"{PET_MR}.json")


def test_sidecar_linked_to_dev_zero(bids):
    (bids / f"{PET_MR}.json").unlink()
    os.symlink("/dev/zero", bids / f"{PET_MR}.json")
    _only_01_excluded(bids, "not a regular file (a character device)")


def test_oversized_sidecar_is_refused_unread(bids):
    from bids_harmonize.safeio import SIDECAR_LIMIT

    meta = pet_mr_sidecar(bids)
    meta["Padding"] = "x" * (SIDECAR_LIMIT + 10)
    replace(bids / f"{PET_MR}.json", json.dumps(meta))
    _only_01_excluded(bids, "more than the", f"{PET_MR}.json")


def test_fifo_participants_tsv(bids, tmp_path, run_app):
    (bids / "participants.tsv").unlink(missing_ok=True)
    os.mkfifo(bids / "participants.tsv")
    code, err = run_app(*fast_args(bids, tmp_path / "out"))
    assert code == 1 and "participants.tsv: not a regular file (a FIFO)" in error_line(err)


def _peak_rss_mb(script: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``script`` in a fresh interpreter; its output and its peak memory (MB).

    VmHWM of the new process (``ru_maxrss`` would carry the parent's peak across exec).
    """
    if not os.path.exists("/proc/self/status"):
        pytest.skip("peak memory is read from /proc/self/status (Linux)")
    code = script + ("\nline = [x for x in open('/proc/self/status') if x.startswith('VmHWM')]"
                     "\nprint('PEAK', int(line[0].split()[1]) / 1024)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    peak = float(proc.stdout.rsplit("PEAK", 1)[1]) if "PEAK" in proc.stdout else -1.0
    return proc, peak


def test_header_declaring_4_gb_in_a_1_mb_file(bids, tmp_path):
    """Refused from the header, before inflating anything (was 3.9 GB of memory)."""
    path = bids / f"{PET_MR}.nii.gz"
    header = nb.load(path).header.copy()
    header.set_data_shape((100, 100, 100, 1000))
    header.set_data_dtype(np.float32)
    replace(path, gzip.compress(header.binaryblock + b"\0" * 4 + os.urandom(1 << 20)))
    proc, peak = _peak_rss_mb(
        "from pathlib import Path\n"
        "from bids_harmonize.bids import check_nifti, InputError\n"
        f"try:\n    check_nifti(Path({str(path)!r}))\n"
        "except InputError as exc:\n    print('REFUSED', exc)\n")
    assert "REFUSED" in proc.stdout and "more than a" in proc.stdout, proc.stderr
    assert 0 < peak < 1000, peak  # MB; the data would be 4000


def test_uncompressed_header_larger_than_its_file(tmp_path):
    from bids_harmonize.bids import InputError, check_nifti

    img = nb.Nifti1Image(np.ones((16, 16, 16), np.float32), np.eye(4))
    path = tmp_path / "x.nii"
    nb.save(img, path)
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(InputError, match="the file has"):
        check_nifti(path)


def test_yaml_alias_bomb_tracer_file(tmp_path, run_app, bids):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghij"):
        prev = "abcdefghij"[i]
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    bomb = tmp_path / "tracers.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 1000
    proc, peak = _peak_rss_mb(
        "from bids_harmonize.tracers import load_tracer_file, TracerError\n"
        f"try:\n    load_tracer_file({str(bomb)!r})\n"
        "except TracerError as exc:\n    print('REFUSED', exc)\n")
    assert "REFUSED" in proc.stdout and "aliases" in proc.stdout, proc.stderr
    assert 0 < peak < 1000, peak
    code, err = run_app(*fast_args(bids, tmp_path / "out"), "--tracer-file", bomb)
    assert code == 2 and "aliases" in error_line(err)


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_special_tracer_and_filter_files(tmp_path, run_app, bids, kind):
    for option in ("--tracer-file", "--bids-filter-file", "--platform-map"):
        target = tmp_path / f"special{option}"
        if kind == "fifo":
            os.mkfifo(target)
        else:
            os.symlink("/dev/zero", target)
        code, err = run_app(*fast_args(bids, tmp_path / "out"), option, target)
        line = error_line(err) if "bids_harmonize: error:" in err else err.strip().splitlines()[-1]
        assert code == 2 and ("not a regular file" in line or "not an existing file" in line), (
            option, err)



# ------------------------------------------------------------------ 5. the whole model in pre-flight


def _model_copy(tmp_path):
    import shutil

    from bids_harmonize.harmonizer.weights import default_model_dir

    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    return model


def _edit_members(model, edit):
    card_path = model / "model.json"
    card = json.loads(card_path.read_text())
    edit(card)
    card_path.write_text(json.dumps(card))


def _outside_member(card):
    card["uncertainty"]["members"][0]["file"] = "../../outside.safetensors"


def _member_hash(card):
    card["uncertainty"]["members"][1]["sha256"] = "0" * 64
    card["files"].pop(card["uncertainty"]["members"][1]["file"], None)


MODEL_CASES = {
    "member-missing": (lambda m: (m / "ensemble" / "correction-member2.safetensors").unlink(),
                       "is missing file ensemble/correction-member2.safetensors"),
    "member-outside": (lambda m: _edit_members(m, _outside_member), "not a file inside the model"),
    "member-hash": (lambda m: _edit_members(m, _member_hash), "corrupt or modified model"),
    "member-link-out": (lambda m: (
        (m / "ensemble" / "correction-member1.safetensors").unlink(),
        os.symlink(m.parent / "elsewhere.safetensors",
                   m / "ensemble" / "correction-member1.safetensors")),
        "not a file inside the model"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_incomplete_model_refused_in_preflight(bids, tmp_path, run_app, case):
    """Every file the card names is checked before any participant starts (seconds)."""
    import time

    model = _model_copy(tmp_path)
    (tmp_path / "elsewhere.safetensors").write_bytes(
        (model / "correction.safetensors").read_bytes())
    damage, message = MODEL_CASES[case]
    damage(model)
    args = [a for a in fast_args(bids, tmp_path / "out") if a != "--no-harmonization"]
    started = time.monotonic()
    code, err = run_app(*args, "--model-dir", model)
    assert code == 1 and message in error_line(err), err
    assert time.monotonic() - started < 60
    assert not (tmp_path / "out").exists()


def test_shipped_model_names_only_files_it_holds():
    from bids_harmonize.harmonizer.weights import default_model_dir, read_card

    card, _sha = read_card(default_model_dir())
    assert any(name.startswith("ensemble/") for name in card["files"])


# ------------------------------------------------------------------ 8. no tracebacks for users


def test_nipype_crash_message_reaches_the_terminal_without_its_traceback():
    import logging

    from bids_harmonize.cli.run import _setup_logging

    _setup_logging(0)
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(self.format(record))

    logger = logging.getLogger("nipype.workflow")
    handler = Keep()
    logger.addHandler(handler)
    try:
        logger.error("Saving crash info to %s\n%s", "/out/crash-x.txt",
                     "Traceback (most recent call last):\n  File 'x'\nValueError: boom")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("Node failed")
    finally:
        logger.removeHandler(handler)
    assert seen[0] == "Saving crash info to /out/crash-x.txt (traceback in the crash file)"
    assert all("Traceback" not in line for line in seen), seen


@pytest.mark.parametrize("content", [None, b"01\n\xff\xfe\n"])
def test_slurm_participants_file_missing_or_not_utf8(bids, tmp_path, capsys, content):
    from bids_harmonize.slurm.cli import main as slurm_main

    labels = tmp_path / "labels.txt"
    if content is not None:
        labels.write_bytes(content)
    code = slurm_main([str(bids), str(tmp_path / "out"), "--participants-file", str(labels)])
    err = capsys.readouterr().err
    assert code in (1, 2) and "Traceback" not in err
    assert ("not UTF-8" if content else "labels.txt") in err.strip().splitlines()[-1]


def test_deeply_nested_config_file_exits_2(bids, tmp_path, run_app):
    config = tmp_path / "c.toml"
    config.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    code, err = run_app(bids, tmp_path / "out", "participant", "--config-file", config)
    assert code == 2 and "nested too deeply" in error_line(err)


def test_labels_are_ascii(bids, tmp_path, run_app):
    code, err = run_app(*fast_args(bids, tmp_path / "out", "--participant-label",
                                   "\u0660\u0661"))
    assert code == 2 and "alphanumeric" in err


def test_crash_file_in_the_temporary_folder_is_private(tmp_path, monkeypatch):
    import stat
    import tempfile

    from bids_harmonize.cli.run import write_crash_file

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["bids_harmonize", "/secret/study", "/out", "participant"])
    try:
        raise KeyError("injected")
    except KeyError as exc:
        path = write_crash_file(exc, None, "r1")
    assert path.parent == tmp_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert "/secret/study" not in text and "KeyError" in text
