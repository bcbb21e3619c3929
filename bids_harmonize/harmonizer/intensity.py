"""Intensity conversions shared by training and inference (pure numpy functions).

CT is converted to the linear attenuation coefficient at 511 keV with the bilinear
scaling of Carney et al. (Med. Phys. 2006) for 120 kVp, then normalised by the
attenuation of water so that the nets see values in about ``[0, 2.1]``.

>>> round(float(hu_to_mu(0.0)), 4), round(float(hu_to_mu(1000.0)), 4)
(0.096, 0.1491)
>>> float(hu_to_mu(-1000.0))
0.0
>>> round(float(mu_to_hu(hu_to_mu(800.0))), 3)
800.0
"""

from __future__ import annotations

import numpy as np

MU_WATER = 0.096  #: 511 keV attenuation of water, 1/cm
HU_BREAK = 47.0  #: bilinear break point (Carney et al. 2006, 120 kVp)
BONE_A = 5.10e-5  #: slope above the break point, 1/cm per HU
BONE_B = 4.71e-2  #: offset above the break point, 1/cm
HU_RANGE = (-1000.0, 3000.0)
MU_NORM_MAX = 2.2  #: normalised mu (mu / mu_water) is clipped to [0, MU_NORM_MAX]


def hu_to_mu(hu):
    """CT numbers (HU) to 511 keV attenuation (1/cm), bilinear, HU clipped to ``HU_RANGE``."""
    hu = np.clip(np.asarray(hu, dtype=np.float32), *HU_RANGE)
    soft = MU_WATER / 1000.0 * (hu + 1000.0)
    bone = BONE_A * (hu + 1000.0) + BONE_B
    return np.where(hu <= HU_BREAK, soft, bone).astype(np.float32)


def mu_to_hu(mu):
    """Inverse of :func:`hu_to_mu` (HU from 1/cm)."""
    mu = np.asarray(mu, dtype=np.float32)
    mu_break = MU_WATER / 1000.0 * (HU_BREAK + 1000.0)
    soft = mu / (MU_WATER / 1000.0) - 1000.0
    bone = (mu - BONE_B) / BONE_A - 1000.0
    return np.where(mu <= mu_break, soft, bone).astype(np.float32)


def ct_to_target(hu):
    """CT (HU) to the normalised attenuation the CT autoencoder reconstructs."""
    return np.clip(hu_to_mu(hu) / MU_WATER, 0.0, MU_NORM_MAX).astype(np.float32)


def target_to_hu(norm_mu):
    """Normalised attenuation back to HU (pseudo-CT)."""
    return mu_to_hu(np.clip(np.asarray(norm_mu, dtype=np.float32), 0.0, MU_NORM_MAX) * MU_WATER)


def brain_mean(image, mask) -> float:
    """Mean of ``image`` inside ``mask`` (>0.5); raises when the mask is empty or the mean <= 0."""
    mask = np.asarray(mask) > 0.5
    if not mask.any():
        raise ValueError("brain mask is empty")
    value = float(np.mean(np.asarray(image, dtype=np.float64)[mask]))
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"mean inside the brain mask is {value!r}; expected a positive number")
    return value


def normalise_t1w(t1w, mask):
    """T1w divided by its brain mean, clipped to [0, 5]."""
    return np.clip(np.asarray(t1w, dtype=np.float32) / brain_mean(t1w, mask), 0.0, 5.0).astype(np.float32)


def normalise_pet(pet, mask):
    """PET divided by its brain mean (returns the image and the scale factor)."""
    scale = brain_mean(pet, mask)
    return np.clip(np.asarray(pet, dtype=np.float32) / scale, 0.0, None).astype(np.float32), scale
