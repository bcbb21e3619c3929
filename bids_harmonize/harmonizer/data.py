"""Training data as the nets see it: normalised volumes and reproducible random patches.

:func:`prepare_pair` turns a :class:`~.dataset.TrainingPair` into normalised float32
volumes keyed by the stage-3 input channel names of the configuration
(:data:`~.config.INPUT_CHANNELS`) plus the training-only keys (``target``, ``mu``,
``mask``, ``labels``, ``head``). :class:`PatchDataset` draws ``roi_size``^3 patches from
them, reproducibly from ``(seed, stage, epoch, index)`` alone, so a resumed or distributed
run sees the same patches as an uninterrupted single-process one.

>>> import numpy as np
>>> float(crop(np.ones((3, 3, 3), np.float32), (0, 0, 0), 4).sum())
8.0
"""

from __future__ import annotations

import numpy as np

from .dataset import TrainingPair
from .intensity import ct_to_target, normalise_pet, normalise_t1w

#: keys every prepared volume has besides its input channels
TRAINING_KEYS = ("target", "mu", "mask", "labels", "head")


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    from scipy import ndimage

    if iterations <= 0:
        return mask
    return ndimage.binary_dilation(mask, iterations=iterations)


def prepare_pair(pair: TrainingPair, mask_dilation: int = 2) -> dict[str, np.ndarray]:
    """Normalised float32 arrays of one pair, as the nets see them, on the model grid.

    Every array is first put on the model grid (RAS+, 2 mm; :meth:`TrainingPair.grid`),
    the same way inference puts its inputs there.

    ``pet``: PET-MR / its brain mean; ``target``: PET-CT divided by the SAME factor (so
    the target log ratio is ``log(PET-CT / PET-MR)``); ``mu``: CT as normalised
    attenuation; ``t1w``: T1w / its brain mean; ``mask``: dilated brain mask;
    ``labels``: region labels (the brain mask as label 1 when absent); ``head``: where
    patches of stages 1-2 are centred. ``scanner_mu`` (1/cm) when the pair carries the
    scanner's mu-map. The ``ac_error`` channel needs the trained anatomy stages and is
    added by the training engine (:func:`~.physics.expected_ac_error`).
    """
    arrays = pair.load()
    grid = pair.grid(arrays["pet_mr"].shape)
    arrays = {k: grid.to_model(v, 0 if k in ("brain_mask", "labels") else 1)
              for k, v in arrays.items()}
    brain = arrays["brain_mask"] > 0.5
    pet, scale = normalise_pet(arrays["pet_mr"], brain)
    labels = arrays.get("labels")
    labels = brain.astype(np.int16) if labels is None else np.asarray(labels, dtype=np.int16)
    mu = ct_to_target(arrays["ct_hu"])
    out = {
        "t1w": normalise_t1w(arrays["t1w"], brain),
        "mu": mu,
        "pet": pet,
        "target": (np.asarray(arrays["pet_ct"], dtype=np.float32) / scale).astype(np.float32),
        "mask": _dilate(brain, mask_dilation).astype(np.float32),
        "labels": labels,
        "head": mu > 0.5,
    }
    if "mu_map" in arrays:
        out["scanner_mu"] = np.asarray(arrays["mu_map"], dtype=np.float32)
    return out


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


#: keys the uptake augmentation multiplies (PET-MR and PET-CT by the same field)
UPTAKE_KEYS = ("pet", "target")


class PatchDataset:
    """Random patches, reproducible from ``(seed, stage, epoch, index)`` only.

    A ``torch.utils.data.Dataset`` by duck typing; ``set_epoch`` changes the draw.

    Args:
        volumes: prepared volumes (:func:`prepare_pair`), one dict per pair.
        keys: which arrays each sample holds (``labels`` becomes int64, the rest float32).
        size: patch edge in voxels.
        length: samples per epoch.
        seed, stage: with the epoch and the index, all the randomness there is.
        centre_key: boolean array of the voxels patches are centred on.
        flip: random left-right flips.
        uptake_augment: std of the log of a smooth random field multiplying ``pet`` and
            ``target`` (0: off).
    """

    def __init__(self, volumes, keys, size, length, seed, stage, centre_key, flip=True, uptake_augment=0.0):
        self.volumes = volumes
        self.keys = tuple(keys)
        self.size = size
        self.length = length
        self.seed = seed
        self.stage = stage
        self.flip = flip
        self.uptake_augment = float(uptake_augment)
        self.epoch = 0
        self.centres = []
        for vol in volumes:
            missing = [k for k in self.keys if k not in vol]
            if missing:
                raise KeyError(f"prepared volume lacks {missing}")
            idx = np.argwhere(vol[centre_key])
            if len(idx) == 0:
                idx = np.argwhere(np.ones(vol[self.keys[0]].shape, dtype=bool))
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
            if field is not None and key in UPTAKE_KEYS:
                patch = patch * field
            tensor = torch.from_numpy(np.ascontiguousarray(patch))[None]
            out[key] = tensor.long() if key == "labels" else tensor.float()
        return out


def stage_keys(stage: int, config) -> tuple[str, ...]:
    """The arrays a stage's patches hold, from the configured input channels.

    >>> from bids_harmonize.harmonizer.config import HarmonizerConfig
    >>> stage_keys(3, HarmonizerConfig())
    ('pet', 't1w', 'target', 'mask', 'labels')
    >>> stage_keys(1, HarmonizerConfig())
    ('mu',)
    """
    from .config import stage3_channels

    if stage == 1:
        return ("mu",)
    if stage == 2:
        return ("t1w", "mu")
    names = [c.name for c in stage3_channels(config.correction)]
    if not config.correction.use_anatomy:
        names = [n for n in names if n != "t1w"]
    return (*names, "target", "mask", "labels")
