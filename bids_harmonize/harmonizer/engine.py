"""The training loop of one stage: epochs of AdamW steps, checkpoint after every epoch.

:func:`run_stage` trains ``module`` on patches of ``dataset`` with ``loss_fn(module,
batch) -> (loss, parts)``, resumes from :class:`~.checkpoints.Checkpoints` (weights and
optimizer) and returns the stage's report (epochs, loss history, seconds). Gradients are
clipped to norm 1; a ``DistributedSampler`` splits the patch indices under torchrun; the
loader's shuffling is reseeded every epoch so a resumed run draws what an uninterrupted
one would.
"""

from __future__ import annotations

import logging
import time

LOGGER = logging.getLogger(__name__)


def progress_bar(iterable, enabled: bool, desc: str):
    """A tqdm bar over ``iterable`` when ``enabled`` (and tqdm is installed)."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency of nipype's stack
        return iterable
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


def _loader(dataset, settings, rt, seed):
    import torch
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from .runtime import seed_worker

    sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=True) if rt.distributed else None
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        sampler=sampler,
        shuffle=sampler is None,
        generator=generator,
        num_workers=rt.data_workers,
        worker_init_fn=seed_worker if rt.data_workers else None,
        pin_memory=rt.device.type == "cuda",
        drop_last=True,
    )
    return loader, sampler, generator


def run_stage(name, module, loss_fn, dataset, settings, rt, ckpt, progress, seed) -> dict:
    """Train ``module`` for ``settings.epochs`` epochs (or reload it when complete).

    Args:
        name: stage name (checkpoint files, log lines).
        module: the trainable net (its parameters get ``requires_grad``; frozen after).
        loss_fn: ``(trained_module, batch) -> (loss, parts)``; ``trained_module`` is
            ``module`` wrapped for DDP when distributed.
        dataset: a :class:`~.data.PatchDataset`.
        settings: :class:`~.config.StageTraining`.
        rt: :class:`~.runtime.Runtime`.
        ckpt: :class:`~.checkpoints.Checkpoints`.
        progress: tqdm bar on the main process.
        seed: loader seed.
    """
    import torch

    done = ckpt.stage(name)
    if done.get("complete"):
        ckpt.load_weights(name, module)
        LOGGER.info("%s: complete in checkpoint, weights reloaded", name)
        return done
    module.train()
    for p in module.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=rt.grad_scaling)
    start_epoch = int(done.get("epochs_done", 0))
    history = list(done.get("history", []))
    seconds = float(done.get("seconds", 0.0))
    if start_epoch:
        ckpt.load_weights(name, module)
        ckpt.load_optimizer(name, optimizer, scaler)
        LOGGER.info("%s: resuming after epoch %d", name, start_epoch)
    trained = rt.wrap(module)
    loader, sampler, generator = _loader(dataset, settings, rt, seed)
    for epoch in range(start_epoch, settings.epochs):
        t0 = time.perf_counter()
        dataset.set_epoch(epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        generator.manual_seed(seed * 1000 + epoch)
        total, parts_sum, n = 0.0, {}, 0
        bar = progress_bar(loader, progress and rt.main, f"{name} epoch {epoch + 1}/{settings.epochs}")
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
        entry = {"epoch": epoch + 1, "loss": mean, **{k: v / max(n, 1) for k, v in parts_sum.items()}}
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
    return {"epochs_done": settings.epochs, "complete": True, "history": history, "seconds": seconds}
