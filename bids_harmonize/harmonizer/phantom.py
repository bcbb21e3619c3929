"""A tiny, fast paired phantom for unit tests (not a simulator: see ``bids_harmonize.synth``).

An ellipsoidal head with scalp, skull and a brain split into a few labelled regions. The
PET-MR image differs from the PET-CT image by a smooth, bone-driven multiplicative loss
(what Dixon attenuation maps do) and a slightly wider blur.

>>> pair = phantom_pair(0, shape=(24, 24, 24))
>>> pair.t1w.shape, int(pair.labels.max())
((24, 24, 24), 4)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .dataset import TrainingPair

_UPTAKE = {  # relative uptake of labels 1..4 per tracer
    "PiB": (2.0, 1.6, 1.0, 1.3),
    "FDG": (2.5, 2.2, 1.2, 1.8),
    "florbetapir": (1.8, 1.5, 1.0, 1.4),
}


def phantom_pair(index: int, *, shape=(40, 40, 40), tracer: str = "PiB", seed: int = 0) -> TrainingPair:
    """A random phantom subject (deterministic in ``index`` and ``seed``)."""
    rng = np.random.default_rng([seed, index])
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radii = np.array([0.85, 0.9, 0.85]) * rng.uniform(0.9, 1.0, 3)
    shift = rng.uniform(-0.04, 0.04, 3)[:, None, None, None]
    rho = np.sqrt((((grid - shift) / radii[:, None, None, None]) ** 2).sum(0))
    head = rho < 1.0
    skull_inner = 0.86 - rng.uniform(0, 0.04)
    skull = (rho < 0.93) & (rho >= skull_inner)
    brain = rho < skull_inner - 0.04
    labels = np.zeros(shape, dtype=np.int16)
    x, y, z = grid
    labels[brain & (z >= 0) & (y >= 0)] = 1
    labels[brain & (z >= 0) & (y < 0)] = 2
    labels[brain & (z < 0) & (rho < 0.45)] = 3
    labels[brain & (labels == 0)] = 4
    ct = np.full(shape, -1000.0, dtype=np.float32)
    ct[head] = 20.0
    ct[brain] = 35.0
    ct[skull] = rng.uniform(900, 1400)
    t1w = np.zeros(shape, dtype=np.float32)
    t1w[head] = 60.0
    t1w[skull] = 10.0
    t1w[brain] = 90.0 + 20.0 * (labels[brain] % 2)
    t1w = (t1w * (1 + 0.1 * x) + rng.normal(0, 2, shape)).clip(0).astype(np.float32)
    uptake = _UPTAKE.get(tracer, (1.5, 1.3, 1.1, 1.2))
    act = np.zeros(shape, dtype=np.float32)
    act[head] = 0.3
    for lab, val in enumerate(uptake, start=1):
        act[labels == lab] = val * rng.uniform(0.9, 1.1)
    act *= 1000.0
    pet_ct = ndimage.gaussian_filter(act, 1.2)
    bone_near = ndimage.gaussian_filter(skull.astype(np.float32), 4.0)
    loss = 1.0 - 0.6 * bone_near - 0.05  # smooth, bone-driven under-estimation
    pet_mr = ndimage.gaussian_filter(act * loss, 1.5)
    noise = rng.normal(0, 5.0, shape)
    return TrainingPair(
        subject=f"{index:02d}",
        tracer=tracer,
        t1w=t1w,
        ct_hu=ct,
        pet_ct=(pet_ct + noise).clip(0).astype(np.float32),
        pet_mr=(pet_mr + noise).clip(0).astype(np.float32),
        brain_mask=brain,
        labels=labels,
        petct_model="Phantom CT",
        petmr_model="Phantom MR",
    )
