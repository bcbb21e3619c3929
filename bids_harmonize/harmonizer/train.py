"""Stage-by-stage training of the three-stage harmonizer.

Stage 1 trains the CT autoencoder on CT patches; stage 2 the MRI encoder against the
frozen CT encoder (patch-wise InfoNCE + cosine + pseudo-CT through the frozen decoder);
stage 3 the residual correction net with both encoders frozen. Each stage checkpoints
every epoch (safetensors + ``state.json``) and a rerun resumes where it stopped.

Seeded and deterministic on CPU. On CUDA: mixed precision (``torch.autocast`` +
``GradScaler``). Under ``torchrun`` (``WORLD_SIZE`` > 1): ``DistributedDataParallel`` on
the stage's trainable net, a ``DistributedSampler`` over patch indices, and only rank 0
writes files and logs progress. Contrastive negatives come from the local batch.

Example (Python)::

    from bids_harmonize.harmonizer.train import train_model
    from bids_harmonize.harmonizer.config import HarmonizerConfig
    model_dir = train_model(pairs, "models/site-A", HarmonizerConfig())
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from .config import HarmonizerConfig, StageTraining
from .dataset import TrainingPair
from .intensity import ct_to_target, normalise_pet, normalise_t1w

LOGGER = logging.getLogger(__name__)

PET_EPS = 0.05  #: added to brain-mean normalised PET before taking logs
STAGES = ("stage1", "stage2", "stage3")


# --------------------------------------------------------------------------- data
def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    from scipy import ndimage

    if iterations <= 0:
        return mask
    return ndimage.binary_dilation(mask, iterations=iterations)


def prepare_pair(pair: TrainingPair, mask_dilation: int = 2) -> dict[str, np.ndarray]:
    """Normalised float32 arrays of one pair, as the nets see them.

    ``pet``: PET-MR / its brain mean; ``target``: PET-CT divided by the SAME factor (so
    the target log ratio is ``log(PET-CT / PET-MR)``); ``mu``: CT as normalised
    attenuation; ``t1w``: T1w / its brain mean; ``mask``: dilated brain mask;
    ``labels``: region labels (the brain mask as label 1 when absent); ``head``: where
    patches of stages 1-2 are centred.
    """
    arrays = pair.load()
    brain = arrays["brain_mask"] > 0.5
    pet, scale = normalise_pet(arrays["pet_mr"], brain)
    labels = arrays.get("labels")
    labels = brain.astype(np.int16) if labels is None else np.asarray(labels, dtype=np.int16)
    mu = ct_to_target(arrays["ct_hu"])
    return {
        "t1w": normalise_t1w(arrays["t1w"], brain),
        "mu": mu,
        "pet": pet,
        "target": (np.asarray(arrays["pet_ct"], dtype=np.float32) / scale).astype(np.float32),
        "mask": _dilate(brain, mask_dilation).astype(np.float32),
        "labels": labels,
        "head": mu > 0.5,
    }


def crop(array: np.ndarray, centre, size: int) -> np.ndarray:
    """A ``size``^3 patch around ``centre``, zero-padded outside the volume."""
    out = np.zeros((size, size, size), dtype=array.dtype)
    src, dst = [], []
    for c, n in zip(centre, array.shape, strict=True):
        lo = int(c) - size // 2
        a, b = max(lo, 0), min(lo + size, n)
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[tuple(dst)] = array[tuple(src)]
    return out


class PatchDataset:
    """Random patches, reproducible from ``(seed, stage, epoch, index)`` only.

    A ``torch.utils.data.Dataset`` by duck typing; ``set_epoch`` changes the draw.
    """

    def __init__(self, volumes, keys, size, length, seed, stage, centre_key, flip=True, uptake_augment=0.0):
        self.volumes = volumes
        self.keys = keys
        self.size = size
        self.length = length
        self.seed = seed
        self.stage = stage
        self.flip = flip
        self.uptake_augment = float(uptake_augment)
        self.epoch = 0
        self.centres = []
        for vol in volumes:
            idx = np.argwhere(vol[centre_key])
            if len(idx) == 0:
                idx = np.argwhere(np.ones(vol[keys[0]].shape, dtype=bool))
            self.centres.append(idx[:: max(1, len(idx) // 20000)])  # subsample the pool

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        import torch

        rng = np.random.default_rng([self.seed, self.stage, self.epoch, index])
        v = int(rng.integers(len(self.volumes)))
        centres = self.centres[v]
        centre = centres[int(rng.integers(len(centres)))]
        flip = self.flip and rng.random() < 0.5
        field = None
        if self.uptake_augment > 0 and "pet" in self.keys:
            field = uptake_field(rng, self.size, self.uptake_augment)
        out = {}
        for key in self.keys:
            patch = crop(self.volumes[v][key], centre, self.size)
            if flip:
                patch = patch[::-1].copy()
            if field is not None and key in ("pet", "target"):
                patch = patch * field
            tensor = torch.from_numpy(np.ascontiguousarray(patch))[None]
            out[key] = tensor.long() if key == "labels" else tensor.float()
        return out


def uptake_field(rng, size: int, sigma: float) -> np.ndarray:
    """A smooth random positive field ``exp(N(0, sigma))`` interpolated from a 3x3x3 grid.

    Multiplying PET-MR and PET-CT by the same smooth field changes the uptake pattern but
    (nearly) not their ratio: it teaches stage 3 that ``r`` does not depend on the tracer's
    uptake pattern, only on anatomy and the scanners.
    """
    from scipy import ndimage

    coarse = rng.normal(0.0, sigma, size=(3, 3, 3))
    coarse -= coarse.mean()
    field = ndimage.zoom(coarse, size / 3.0, order=1, mode="nearest", grid_mode=True)
    return np.exp(field[:size, :size, :size]).astype(np.float32)


# --------------------------------------------------------------------------- runtime
class _Runtime:
    """Device, distributed and precision settings of one training run."""

    def __init__(self, device: str, mixed_precision: bool):
        import torch
        import torch.distributed as dist

        from .device import resolve_device

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.distributed = self.world > 1
        self.owns_group = False
        self.device = resolve_device(device)
        if self.distributed and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
            self.owns_group = True
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.rank = dist.get_rank() if self.distributed else 0
        self.amp = bool(mixed_precision) and self.device.type == "cuda"

    @property
    def main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        import torch

        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return nullcontext()

    def wrap(self, module):
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def all_reduce_mean(self, value: float) -> float:
        if not self.distributed:
            return value
        import torch
        import torch.distributed as dist

        t = torch.tensor([value], device=self.device, dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self):
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self):
        if self.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


# --------------------------------------------------------------------------- checkpoints
def _save_optimizer(path: Path, optimizer, scaler) -> dict:
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
    save_file(tensors, str(path))
    return {"param_groups": state["param_groups"], "scaler": scaler.state_dict()}


def _load_optimizer(path: Path, meta: dict, optimizer, scaler) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    state: dict = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    if meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])


class _Checkpoints:
    def __init__(self, folder: Path, config: HarmonizerConfig, data_hash: str, writer: bool):
        self.folder = folder
        self.writer = writer
        self.path = folder / "state.json"
        self.fingerprint = hashlib.sha256(
            json.dumps({"config": config.to_dict(), "data": data_hash}, sort_keys=True).encode()
        ).hexdigest()
        self.state = {"fingerprint": self.fingerprint, "stages": {}}
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved.get("fingerprint") == self.fingerprint:
                self.state = saved
            else:
                LOGGER.warning(
                    "checkpoints in %s are from another config or data set: starting afresh",
                    folder,
                )

    def stage(self, name: str) -> dict:
        return self.state["stages"].get(name, {})

    def save(self, name: str, module, optimizer, scaler, info: dict) -> None:
        if not self.writer:
            return
        from .weights import save_state

        self.folder.mkdir(parents=True, exist_ok=True)
        save_state(self.folder / f"{name}.safetensors", module.state_dict())
        info = dict(info)
        if optimizer is not None:
            info["optimizer"] = _save_optimizer(self.folder / f"{name}.optim.safetensors", optimizer, scaler)
        self.state["stages"][name] = info
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=1))
        tmp.replace(self.path)

    def load_weights(self, name: str, module) -> None:
        from safetensors.torch import load_file

        module.load_state_dict(load_file(str(self.folder / f"{name}.safetensors")))


# --------------------------------------------------------------------------- stage losses
def _stage1_loss(trained, batch):
    mu = batch["mu"]
    recon, _ = trained(mu)
    weight = 1.0 + 4.0 * (mu > 1.1).float()  # bone matters most for attenuation
    return (weight * (recon.float() - mu).abs()).mean(), {}


def _stage2_loss(net, batch, config, trained):
    import torch

    from .losses import cosine_distance, masked_l1, patch_info_nce

    with torch.no_grad():
        ct_tokens = net.ct_autoencoder.encode(batch["mu"])
    mri_tokens = trained(batch["t1w"])
    nce = patch_info_nce(mri_tokens, ct_tokens, config.loss.temperature)
    cos = cosine_distance(mri_tokens, ct_tokens)
    pseudo = masked_l1(net.ct_autoencoder.decode(mri_tokens), batch["mu"])
    loss = nce + config.loss.cosine_weight * cos + config.loss.pseudo_ct_weight * pseudo
    return loss, {
        "nce": float(nce.detach()),
        "cos": float(cos.detach()),
        "pseudo_ct": float(pseudo.detach()),
    }


def stage3_terms(r, batch, config, n_labels):
    """Stage-3 loss terms from a log-ratio patch ``r`` (also used by the benchmark)."""
    import torch

    from .losses import log_l1, regional_log_bias, smoothness

    pet, target = batch["pet"], batch["target"]
    log_h = torch.log(pet + PET_EPS) + r
    voxel = log_l1(log_h, target, batch["mask"], PET_EPS)
    regional = regional_log_bias(pet * torch.exp(r), target, batch["labels"], n_labels)
    smooth = smoothness(r)
    lw = config.loss
    loss = lw.voxel_weight * voxel + lw.regional_weight * regional + lw.smooth_weight * smooth
    return loss, {
        "voxel": float(voxel.detach()),
        "regional": float(regional.detach()),
        "smooth": float(smooth.detach()),
    }


def _stage3_loss(net, batch, config, trained, n_labels):
    import torch

    if config.correction.use_anatomy:
        with torch.no_grad():
            tokens, pseudo_mu = net.anatomy(batch["t1w"])
        r = trained(batch["pet"], tokens, pseudo_mu)
    else:
        r = trained(batch["pet"])
    return stage3_terms(r.float(), batch, config, n_labels)


# --------------------------------------------------------------------------- loop
def _run_stage(name, module, loss_fn, dataset, settings: StageTraining, rt, ckpt, progress, seed):
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    done = ckpt.stage(name)
    if done.get("complete"):
        ckpt.load_weights(name, module)
        LOGGER.info("%s: complete in checkpoint, weights reloaded", name)
        return done
    module.train()
    for p in module.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=rt.amp)
    start_epoch = int(done.get("epochs_done", 0))
    history = list(done.get("history", []))
    seconds = float(done.get("seconds", 0.0))
    if start_epoch:
        ckpt.load_weights(name, module)
        _load_optimizer(ckpt.folder / f"{name}.optim.safetensors", done["optimizer"], optimizer, scaler)
        LOGGER.info("%s: resuming after epoch %d", name, start_epoch)
    trained = rt.wrap(module)
    sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True) if rt.distributed else None
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=sampler,
        shuffle=sampler is None,
        generator=generator,
        num_workers=0,
        drop_last=True,
    )
    for epoch in range(start_epoch, settings.epochs):
        t0 = time.perf_counter()
        dataset.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        generator.manual_seed(seed * 1000 + epoch)
        total, parts_sum, n = 0.0, {}, 0
        bar = _progress(loader, progress and rt.main, f"{name} epoch {epoch + 1}/{settings.epochs}")
        for batch in bar:
            batch = {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}
            optimizer.zero_grad(set_to_none=True)
            with rt.autocast():
                loss, parts = loss_fn(trained, batch)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach())
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v
            n += 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        mean = rt.all_reduce_mean(total / max(n, 1))
        seconds += time.perf_counter() - t0
        entry = {
            "epoch": epoch + 1,
            "loss": mean,
            **{k: v / max(n, 1) for k, v in parts_sum.items()},
        }
        history.append(entry)
        if rt.main:
            LOGGER.info(
                "%s epoch %d/%d loss %.5f %s (%.1f s)",
                name,
                epoch + 1,
                settings.epochs,
                mean,
                " ".join(f"{k}={v / max(n, 1):.4f}" for k, v in parts_sum.items()),
                time.perf_counter() - t0,
            )
        info = {
            "epochs_done": epoch + 1,
            "complete": epoch + 1 == settings.epochs,
            "history": history,
            "seconds": seconds,
        }
        ckpt.save(name, module, optimizer, scaler, info)
        rt.barrier()
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return {
        "epochs_done": settings.epochs,
        "complete": True,
        "history": history,
        "seconds": seconds,
    }


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency of nipype's stack
        return iterable
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


def training_list_hash(pairs) -> str:
    """sha256 of the sorted training list (subject, tracer, scanner models)."""
    rows = sorted(f"{p.subject}\t{p.tracer}\t{p.petct_model}\t{p.petmr_model}" for p in pairs)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def training_summary(pairs) -> dict:
    from ..tracers import UnknownTracerError, get_tracer

    tracers = sorted({p.tracer for p in pairs})
    families = set()
    for t in tracers:
        try:
            families.add(get_tracer(t).family)
        except UnknownTracerError:
            families.add("unknown")
    return {
        "tracers": tracers,
        "tracer_families": sorted(families),
        "petct_models": sorted({p.petct_model for p in pairs}),
        "petmr_models": sorted({p.petmr_model for p in pairs}),
        "n_subjects": len({p.subject for p in pairs}),
        "n_pairs": len(pairs),
        "sha256_training_list": training_list_hash(pairs),
    }


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
    out_dir = Path(out_dir)
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out_dir / "checkpoints"
    rt = _Runtime(device, config.mixed_precision)
    previous_det = torch.are_deterministic_algorithms_enabled()
    if rt.device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        data_hash = training_list_hash(pairs)
        ckpt = _Checkpoints(ckpt_dir, config, data_hash, writer=rt.main)
        if not resume:
            ckpt.state = {"fingerprint": ckpt.fingerprint, "stages": {}}
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
        size = config.anatomy.roi_size

        def dataset(stage_index, keys, vols, settings, centre_key):
            length = settings.steps_per_epoch * settings.batch_size * rt.world
            return PatchDataset(
                vols,
                keys,
                size,
                length,
                config.seed,
                stage_index,
                centre_key,
                uptake_augment=config.uptake_augment if stage_index == 3 else 0.0,
            )

        report = {}
        if config.correction.use_anatomy:
            s = config.stage1
            report["stage1"] = _run_stage(
                "stage1",
                net.ct_autoencoder,
                _stage1_loss,
                dataset(1, ("mu",), anatomy_volumes, s, "head"),
                s,
                rt,
                ckpt,
                progress,
                config.seed,
            )
            s = config.stage2
            report["stage2"] = _run_stage(
                "stage2",
                net.mri_encoder,
                lambda m, b: _stage2_loss(net, b, config, m),
                dataset(2, ("t1w", "mu"), anatomy_volumes, s, "head"),
                s,
                rt,
                ckpt,
                progress,
                config.seed,
            )
        else:
            LOGGER.info("anatomy stages off (use_anatomy=False): training stage 3 only")
        s = config.stage3
        report["stage3"] = _run_stage(
            "stage3",
            net.correction,
            lambda m, b: _stage3_loss(net, b, config, m, n_labels),
            dataset(3, ("t1w", "pet", "target", "mask", "labels"), volumes, s, "mask"),
            s,
            rt,
            ckpt,
            progress,
            config.seed,
        )
        if rt.main:
            card = dict(card or {})
            card.setdefault("name", out_dir.name)
            card.setdefault("version", "0.1.0")
            card.setdefault("changelog", {card["version"]: "trained with bids_harmonize"})
            card.setdefault("intended_use", "research use only")
            card.setdefault("retrain_command", "bids_harmonize BIDS_DIR OUT_DIR train")
            card["training_data"] = training_summary(pairs)
            card["training"] = {
                name: {
                    "seconds": round(info["seconds"], 2),
                    "final_loss": info["history"][-1]["loss"] if info["history"] else None,
                    "history": info["history"],
                }
                for name, info in report.items()
            }
            card["training"]["device"] = str(rt.device)
            card["training"]["world_size"] = rt.world
            card["training"]["mixed_precision"] = rt.amp
            card["stages"] = stage_descriptions(config)
            card["inputs"], card["outputs"] = io_format(config)
            card.setdefault("evaluation", {})
            card["library_versions"] = library_versions()
            net_cpu = net.to("cpu")
            save_model(out_dir, net_cpu, card)
            LOGGER.info("model written to %s", out_dir)
            if not keep_checkpoints and ckpt_dir.exists():
                import shutil

                shutil.rmtree(ckpt_dir)
        rt.barrier()
    finally:
        torch.use_deterministic_algorithms(previous_det)
        rt.close()
    return out_dir


def stage_descriptions(config: HarmonizerConfig) -> dict:
    a = config.anatomy
    return {
        "stage1": {
            "net": "CTAutoEncoder (MONAI PatchEmbeddingBlock + TransformerBlock, transposed-conv decoder)",
            "task": "reconstruct CT as 511 keV attenuation / mu_water (bilinear HU conversion)",
            "config": {k: getattr(a, k) for k in a.__dataclass_fields__},
            "training": config.stage1.__dict__,
        },
        "stage2": {
            "net": "ViTEncoder on T1w, same token grid",
            "task": "patch-wise InfoNCE to frozen CT tokens + cosine + pseudo-CT L1 "
            "through the frozen CT decoder",
            "loss": {
                "temperature": config.loss.temperature,
                "cosine_weight": config.loss.cosine_weight,
                "pseudo_ct_weight": config.loss.pseudo_ct_weight,
            },
            "training": config.stage2.__dict__,
        },
        "stage3": {
            "net": "ResidualCorrectionNet (MONAI UnetResBlock, anatomy-gated)",
            "task": "log-ratio r with harmonized = PET-MR * exp(r)",
            "config": {k: getattr(config.correction, k) for k in config.correction.__dataclass_fields__},
            "loss": {
                "voxel_weight": config.loss.voxel_weight,
                "regional_weight": config.loss.regional_weight,
                "smooth_weight": config.loss.smooth_weight,
            },
            "training": config.stage3.__dict__,
        },
    }


def io_format(config: HarmonizerConfig) -> tuple[dict, dict]:
    roi = config.anatomy.roi_size
    inputs = {
        "pet": {
            "modality": "PET (PET-MR, static, any tracer)",
            "channels": 1,
            "spacing_mm": [2.0, 2.0, 2.0],
            "value_range": "divided by its brain mean",
            "grid": "T1w grid",
        },
        "t1w": {
            "modality": "MR T1w",
            "channels": 1,
            "spacing_mm": [2.0, 2.0, 2.0],
            "value_range": "divided by its brain mean, clipped to [0, 5]",
        },
        "brain_mask": {"modality": "brain mask", "channels": 1},
        "patch": {"roi_size": [roi] * 3, "inference": "MONAI sliding_window_inference"},
    }
    outputs = {
        "harmonized": {
            "modality": "PET, PET-CT equivalent",
            "channels": 1,
            "value_range": "same units as the input PET",
        },
        "log_ratio": {
            "modality": "log(harmonized / PET-MR)",
            "channels": 1,
            "value_range": [
                -config.correction.max_abs_log_ratio,
                config.correction.max_abs_log_ratio,
            ],
        },
        "pseudo_ct": {
            "modality": "pseudo-CT from MRI",
            "channels": 1,
            "value_range": "HU, [-1000, ~1800]",
        },
    }
    return inputs, outputs
