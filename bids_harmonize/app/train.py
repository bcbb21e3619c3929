"""The train level: train the three-stage harmonizer on the paired sessions that
``participant`` processed, calibrate its ensemble and install the model (under torchrun,
rank 0 owns the model folder)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from bids_harmonize.app.common import UsageError, check_device, new_run_id, warn_incomplete
from bids_harmonize.config import RunConfig

LOGGER = logging.getLogger("bids_harmonize")


def run_train(config: RunConfig, run_id: str | None = None) -> int:
    """Train the three-stage harmonizer on the paired sessions that 'participant' processed.

    Participants marked incomplete are left out (and listed). The model is trained in
    ``.<name>.partial/<name>`` next to ``--model-dir`` (checkpoints there: a rerun resumes)
    and renamed into place only when complete, so a kill never leaves a half-written
    model and never destroys the previous one. A non-empty ``--model-dir`` is refused
    unless ``--overwrite-model`` is given.
    """
    import torch

    from bids_harmonize.harmonizer.dataset import (
        InsufficientDataError,
        load_pairs_from_derivatives,
    )
    from bids_harmonize.harmonizer.train import train_model
    from bids_harmonize.locks import LockHeldError, acquire_path

    run_id = run_id or new_run_id()
    check_device(config.device)
    torch.set_num_threads(max(1, config.omp_nthreads))
    model_dir = (config.model_dir or config.output_dir / "models" / "site").absolute()
    if model_dir.exists() and (not model_dir.is_dir() or any(model_dir.iterdir())):
        if not config.overwrite_model:
            raise UsageError(f"--model-dir {model_dir} is not empty: choose another folder or "
                             "pass --overwrite-model to replace it", status=2)
        if not (model_dir / "model.json").is_file():
            raise UsageError(f"--model-dir {model_dir} is not empty and holds no model.json: "
                             "refusing to replace a folder that is not a model")
    labels = list(config.participant_label)
    incomplete = warn_incomplete(config.output_dir, "train")
    if incomplete:
        if not labels:
            labels = sorted(p.name.removeprefix("sub-") for p in config.output_dir.glob("sub-*")
                            if p.is_dir())
        labels = [label for label in labels if label not in incomplete]
        if not labels:
            raise UsageError("every selected participant is marked incomplete: "
                             + ", ".join(f"sub-{s}" for s in incomplete))
    try:
        pairs, excluded = load_pairs_from_derivatives(
            config.output_dir, participant_labels=labels or None,
            tracers=config.tracer_label or None, min_pairs=config.train_min_subjects,
            atlas=config.atlas, atlas_labels=config.atlas_labels,
        )
    except InsufficientDataError as exc:
        raise UsageError(str(exc)) from None
    for what, why in excluded:
        LOGGER.warning("Not used for training: %s (%s)", what, why)
    if config.calibrate_model is not None:
        return calibrate_existing(config, pairs, model_dir, run_id)
    train_pairs, calibration_pairs = split_calibration(pairs, config.calibration_subjects)
    harmonizer_config = train_config(config, subjects=len({p.subject for p in train_pairs}))
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    # Under torchrun every process runs this; rank 0 alone owns the folder (lock, ensemble,
    # renaming into place), the others join the distributed stages and stop there.
    rank = torchrun_rank()
    try:
        lock = acquire_path(model_dir.parent / f".{model_dir.name}.lock",
                            f"model folder {model_dir}", run_id=run_id) if rank == 0 else None
    except LockHeldError as exc:
        raise UsageError(str(exc)) from None
    try:
        staging = model_dir.parent / f".{model_dir.name}.partial"
        partial = staging / model_dir.name  # same folder name: the card names the model by it
        train_model(train_pairs, partial, harmonizer_config, device=config.device)
        if rank != 0:
            return 0
        if config.ensemble_members > 0:
            from bids_harmonize.harmonizer.uncertainty import fit_uncertainty

            with single_process_env():  # members are trained in one process, by design
                fit_uncertainty(partial, train_pairs, validation_pairs=calibration_pairs,
                                n_members=config.ensemble_members, device=config.device)
        # checkpoints only serve a resumed run of this training; the model ships without them
        shutil.rmtree(partial / "checkpoints", ignore_errors=True)
        install_model(partial, model_dir, run_id=run_id)
        shutil.rmtree(staging, ignore_errors=True)
    finally:
        if lock is not None:
            lock.release()
    print(f"model written to {model_dir}")
    return 0


def calibrate_existing(config: RunConfig, pairs, model_dir: Path, run_id: str) -> int:
    """``train --calibrate-model SRC``: copy the model SRC, calibrate it on every selected
    pair (all held out: none may be among SRC's training subjects) and install it in
    ``model_dir``, as training would (staged, renamed into place when complete)."""
    from bids_harmonize.harmonizer.uncertainty import calibrate
    from bids_harmonize.harmonizer.weights import ModelError, load_model
    from bids_harmonize.locks import LockHeldError, acquire_path

    source = Path(config.calibrate_model).absolute()
    if torchrun_rank() != 0:
        return 0  # calibration runs in one process
    try:
        load_model(source)  # verified: every file against its sha256
    except ModelError as exc:
        raise UsageError(f"--calibrate-model: {exc}") from None
    if config.calibration_subjects:
        LOGGER.warning("--calibration-subjects is ignored with --calibrate-model: every "
                       "selected paired subject calibrates the model")
    subjects = sorted({p.subject for p in pairs})
    LOGGER.info("calibrating %s on %d held-out pair(s) of %d subject(s): %s", source, len(pairs),
                len(subjects), ", ".join(f"sub-{s}" for s in subjects))
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = acquire_path(model_dir.parent / f".{model_dir.name}.lock",
                            f"model folder {model_dir}", run_id=run_id)
    except LockHeldError as exc:
        raise UsageError(str(exc)) from None
    try:
        staging = model_dir.parent / f".{model_dir.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        partial = staging / model_dir.name
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns("checkpoints", ".*"))
        try:
            card = calibrate(partial, pairs, device=config.device)
        except ValueError as exc:
            raise UsageError(f"--calibrate-model: {exc}") from None
        card.setdefault("calibrated_from", {}).update({
            "model": str(source), "subjects": subjects, "n_pairs": len(pairs),
            "dataset": str(config.output_dir)})
        from bids_harmonize.harmonizer.uncertainty import write_card

        write_card(partial, card)
        install_model(partial, model_dir, run_id=run_id)
        shutil.rmtree(staging, ignore_errors=True)
    finally:
        lock.release()
    print(f"calibrated model written to {model_dir}")
    return 0


def torchrun_rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 otherwise.

    >>> import os; os.environ.pop("RANK", None) and None; torchrun_rank()
    0
    """
    return int(os.environ.get("RANK", "0") or 0)


@contextlib.contextmanager
def single_process_env():
    """Hide torchrun's variables for a step that runs in this one process only.

    >>> os.environ["WORLD_SIZE"] = "2"
    >>> with single_process_env():
    ...     os.environ.get("WORLD_SIZE")
    >>> os.environ.pop("WORLD_SIZE")
    '2'
    """
    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def split_calibration(pairs, n_subjects: int):
    """Training pairs and the pairs of the last ``n_subjects`` subjects (held out to
    calibrate the ensemble); a usage error when fewer than two subjects would remain."""
    subjects = sorted({p.subject for p in pairs})
    if n_subjects <= 0:
        return pairs, []
    if len(subjects) - n_subjects < 2:
        raise UsageError(f"--calibration-subjects {n_subjects} leaves {len(subjects) - n_subjects} "
                         f"of {len(subjects)} subjects for training (at least 2 needed)", status=2)
    held = set(subjects[-n_subjects:])
    LOGGER.info("held out for calibration: %s", ", ".join(f"sub-{s}" for s in sorted(held)))
    return [p for p in pairs if p.subject not in held], [p for p in pairs if p.subject in held]


def install_model(partial: Path, model_dir: Path, *, run_id: str) -> None:
    """Rename a finished model folder into place; an old model is moved aside, then removed."""
    old = None
    if model_dir.exists() and any(model_dir.iterdir()):
        old = model_dir.parent / f".{model_dir.name}.old-{run_id}"
        os.replace(model_dir, old)
    elif model_dir.exists():
        model_dir.rmdir()
    os.replace(partial, model_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def train_config(config: RunConfig, subjects: int | None = None):
    """The harmonizer configuration ``train`` fits: the site recipe sized for ``subjects``
    training subjects (steps per epoch grow beyond the demo model's 12), with the run's
    steps scale, batch size, epochs and seed."""
    from bids_harmonize.harmonizer.config import (
        SITE_RECIPE_SUBJECTS,
        SITE_STEPS_PER_EPOCH,
        HarmonizerConfig,
    )

    stages = {"ct": "stage1", "mri": "stage2", "residual": "stage3"}
    changes = {stages[k]: {"epochs": v} for k, v in config.train_epochs.items()}
    base = HarmonizerConfig.site(steps_scale=config.train_steps_scale,
                                 batch_size=config.train_batch_size, subjects=subjects)
    cfg = base.replace(seed=config.seed, **changes)
    LOGGER.info("training recipe: %d steps per epoch of %d patches (%d up to %d subjects, in "
                "proportion beyond; %s training subject(s); --train-steps-scale %g); epochs "
                "ct/mri/residual %d/%d/%d", cfg.stage1.steps_per_epoch, cfg.stage1.batch_size,
                SITE_STEPS_PER_EPOCH, SITE_RECIPE_SUBJECTS, subjects if subjects else "?",
                config.train_steps_scale, cfg.stage1.epochs, cfg.stage2.epochs, cfg.stage3.epochs)
    return cfg
