"""Killed runs: participant locks, the incomplete marker and atomic model writes.

Each test starts the real app in a subprocess and kills it (SIGKILL to its process
group) while it works; a few seconds to ~30 s each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nb
import numpy as np
from fuzz_helpers import error_line, fast_args

from bids_harmonize import locks, runstatus

APP = [sys.executable, "-m", "bids_harmonize.cli.run"]


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([*APP, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _run(*args, timeout=120) -> subprocess.CompletedProcess:
    proc = subprocess.run([*APP, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _wait_for(condition, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (status {proc.returncode}) before the wait: "
                                 + proc.stderr.read()[-2000:])
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the run")
        time.sleep(0.1)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=30)


def test_second_run_names_the_lock_holder_and_a_kill_leaves_incomplete(bids, tmp_path,
                                                                       templateflow_home):
    out = tmp_path / "out"
    args = fast_args(bids, out, "--participant-label", "01", "--sloppy", "--nprocs", "1",
                     "-w", tmp_path / "work")
    first = _start(*args)
    try:
        _wait_for(lambda: runstatus.marker_path(out, "01").exists(), first, 90)
        assert locks.lock_path(out, "01").exists()
        second = _run(*args)
        line = error_line(second.stderr)
        assert second.returncode == 1
        assert "held by another run" in line and f"pid {first.pid}" in line
    finally:
        _kill(first)
    # the killed run's participant stays marked; its record reads as incomplete
    assert not runstatus.is_complete(out, "01")
    (record,) = runstatus.read_status(out)
    assert record["status"] == "incomplete" and "killed" in " ".join(record["reasons"])
    # the dead run's lock is stale: the next run takes it over
    locks.acquire(out, "01", run_id="after-kill").release()
    # group leaves the incomplete participant out, and says so
    group = _run(bids, out, "group")
    assert "sub-01" in group.stderr and "incomplete" in group.stderr


def _write_derivatives(out: Path, n_subjects: int = 2) -> None:
    """Participant-level outputs of phantom subjects, as ``train`` reads them."""
    from bids_harmonize import derivatives
    from bids_harmonize.harmonizer.phantom import phantom_pair

    (out / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "dataset_description.json").write_text(
        json.dumps({"Name": "phantoms", "BIDSVersion": "1.10.0", "DatasetType": "derivative"}))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for i in range(n_subjects):
        pair = phantom_pair(i, shape=(40, 40, 40))
        sub = f"{i + 1:02d}"
        files = {
            derivatives.build_path("t1w_preproc", subject=sub): pair.t1w,
            derivatives.build_path("brain_mask", subject=sub): pair.brain_mask.astype(np.uint8),
            derivatives.build_path("ct_preproc", subject=sub, session="petct",
                                   space="T1w"): pair.ct_hu,
        }
        for ses, platform, data in (("petct", "PET-CT", pair.pet_ct),
                                    ("petmr", "PET-MR", pair.pet_mr)):
            path = derivatives.build_path("pet_preproc", subject=sub, session=ses,
                                          tracer="PiB", space="T1w")
            files[path] = data
            sidecar = (out / path).with_name(Path(path).name.replace(".nii.gz", ".json"))
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            sidecar.write_text(json.dumps({"TracerName": "PiB", "Platform": platform,
                                           "ManufacturersModelName": platform}))
        for path, data in files.items():
            (out / path).parent.mkdir(parents=True, exist_ok=True)
            nb.save(nb.Nifti1Image(np.asarray(data), affine), out / path)


def test_killed_training_keeps_the_previous_model(tmp_path):
    from bids_harmonize.harmonizer.weights import default_model_dir, read_card

    out = tmp_path / "out"
    _write_derivatives(out)
    model = out / "models" / "site"
    shutil.copytree(default_model_dir(), model)
    before = read_card(model)[1]
    (tmp_path / "bids").mkdir()  # train reads only the participant outputs
    train = [tmp_path / "bids", out, "train", "--model-dir", model, "--device", "cpu",
             "--train-epochs", "ct=50", "mri=50", "residual=50"]
    # a non-empty --model-dir is refused without --overwrite-model, before any work
    refused = _run(*train)
    assert refused.returncode == 2 and "--overwrite-model" in error_line(refused.stderr)
    staging = model.parent / ".site.partial"
    assert not staging.exists()
    first = _start(*train, "--overwrite-model")
    try:
        _wait_for(lambda: any(staging.rglob("*.safetensors")), first, 120)
    finally:
        _kill(first)
    # the previous model is untouched and still verifies; the partial one is aside
    assert read_card(model)[1] == before
    assert staging.is_dir()
