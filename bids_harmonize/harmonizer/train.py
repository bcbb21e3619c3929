"""Stage-by-stage training of the three-stage harmonizer: the public entry point.

:func:`train_model` wires the parts together, one module per job (as MONAI separates
data, engines and bundle metadata):

- :mod:`.data` — normalised volumes and reproducible random patches;
- :mod:`.stages` — the loss of each stage on a batch (maths in :mod:`.losses`);
- :mod:`.engine` — the epoch loop of one stage;
- :mod:`.runtime` — device, ``torchrun``/DDP, mixed precision;
- :mod:`.checkpoints` — per-epoch safetensors checkpoints and resuming;
- :mod:`.card` — the model card's generated parts;
- :mod:`.physics` — the expected attenuation-correction error (the ``ac_error`` channel).

Stage 1 trains the CT autoencoder on CT patches; stage 2 the MRI encoder against the
frozen CT encoder; stage 3 the residual correction net with both encoders frozen, on the
configured input channels (:attr:`~.config.CorrectionConfig.inputs`). When those include
``ac_error``, the map is computed per training pair between stages 2 and 3, from the
stage-2 pseudo-CT (or the CT, ``physics.mu_source``) and the pair's scanner mu-map (or the
one its setup would make).

Seeded and deterministic on CPU. On CUDA: mixed precision. Under ``torchrun``
(``WORLD_SIZE`` > 1): ``DistributedDataParallel`` on the stage's trainable net, a
``DistributedSampler`` over patch indices, and only rank 0 writes files and logs progress.

Example (Python)::

    from bids_harmonize.harmonizer.train import train_model
    from bids_harmonize.harmonizer.config import HarmonizerConfig
    model_dir = train_model(pairs, "models/site-A", HarmonizerConfig())
"""

from __future__ import annotations

import logging
from pathlib import Path

from .card import training_card, training_list_hash
from .checkpoints import Checkpoints
from .config import HarmonizerConfig, stage3_channels
from .data import PatchDataset, prepare_pair, stage_keys
from .dataset import TrainingPair
from .engine import run_stage
from .physics_channel import add_physics_channel
from .runtime import Runtime
from .stages import stage1_loss, stage2_loss, stage3_loss

LOGGER = logging.getLogger(__name__)

STAGES = ("stage1", "stage2", "stage3")


def train_model(
    pairs: list[TrainingPair],
    out_dir,
    config: HarmonizerConfig | None = None,
    *,
    device: str = "auto",
    resume: bool = True,
    progress: bool = True,
    card: dict | None = None,
    checkpoint_dir=None,
    keep_checkpoints: bool = True,
) -> Path:
    """Train the three stages on ``pairs`` and write a model directory at ``out_dir``.

    Args:
        pairs: training pairs on one grid each (:class:`TrainingPair`).
        out_dir: the model directory to write (weights + ``model.json``).
        config: nets and training settings (defaults: small CPU config).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        resume: continue from checkpoints of the same config and data when present.
        progress: show a tqdm progress bar (logging happens regardless).
        card: extra card fields (name, version, changelog, description, intended_use,
            retrain_command, evaluation).
        checkpoint_dir: where per-epoch checkpoints go (default ``out_dir/checkpoints``).
        keep_checkpoints: delete the checkpoint folder at the end when False.

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.
    """
    import torch

    from .nets.harmonizer import ThreeStageHarmonizer
    from .weights import library_versions, save_model

    config = config or HarmonizerConfig()
    if not pairs:
        from .dataset import InsufficientDataError

        raise InsufficientDataError("no training pairs given")
    stage3_channels(config.correction)  # an unknown channel name fails before any work
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
    rt = Runtime(device, config.mixed_precision)
    previous_det = torch.are_deterministic_algorithms_enabled()
    if rt.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        ckpt = Checkpoints(ckpt_dir, config, training_list_hash(pairs), writer=rt.main)
        if not resume:
            ckpt.reset()
        LOGGER.info(
            "training on %d pairs (%d subjects) on %s%s%s",
            len(pairs),
            len({p.subject for p in pairs}),
            rt.device,
            f", {rt.world} processes" if rt.distributed else "",
            ", mixed precision" if rt.amp else "",
        )
        volumes = [prepare_pair(p, config.mask_dilation) for p in pairs]
        first_of_subject = {}
        for i, p in enumerate(pairs):
            first_of_subject.setdefault(p.subject, i)
        anatomy_volumes = [volumes[i] for i in first_of_subject.values()]
        n_labels = int(max(int(v["labels"].max()) for v in volumes))

        torch.manual_seed(config.seed)
        net = ThreeStageHarmonizer(config).to(rt.device)
        for p in net.parameters():
            p.requires_grad_(False)

        def dataset(stage_index, vols, settings, centre_key):
            return PatchDataset(
                vols,
                stage_keys(stage_index, config),
                config.anatomy.roi_size,
                settings.steps_per_epoch * settings.batch_size * rt.world,
                config.seed,
                stage_index,
                centre_key,
                uptake_augment=config.uptake_augment if stage_index == 3 else 0.0,
            )

        def stage(name, module, loss_fn, data, settings):
            return run_stage(name, module, loss_fn, data, settings, rt, ckpt, progress, config.seed)

        report = {}
        if config.correction.use_anatomy:
            report["stage1"] = stage(
                "stage1", net.ct_autoencoder, stage1_loss, dataset(1, anatomy_volumes, config.stage1, "head"),
                config.stage1,
            )
            report["stage2"] = stage(
                "stage2",
                net.mri_encoder,
                lambda m, b: stage2_loss(net, b, config, m),
                dataset(2, anatomy_volumes, config.stage2, "head"),
                config.stage2,
            )
        else:
            LOGGER.info("anatomy stages off (use_anatomy=False): training stage 3 only")
        if "ac_error" in config.correction.inputs:
            add_physics_channel(volumes, pairs, net, config, rt.device)
        report["stage3"] = stage(
            "stage3",
            net.correction,
            lambda m, b: stage3_loss(net, b, config, m, n_labels),
            dataset(3, volumes, config.stage3, "mask"),
            config.stage3,
        )
        if rt.main:
            full_card = training_card(
                card,
                config=config,
                pairs=pairs,
                report=report,
                rt=rt,
                library_versions=library_versions(),
                out_name=out_dir.name,
            )
            save_model(out_dir, net.to("cpu"), full_card)
            LOGGER.info("model written to %s", out_dir)
            if not keep_checkpoints and ckpt_dir.exists():
                import shutil

                shutil.rmtree(ckpt_dir)
        rt.barrier()
    finally:
        torch.use_deterministic_algorithms(previous_det)
        rt.close()
    return out_dir
