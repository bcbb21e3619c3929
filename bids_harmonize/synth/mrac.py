"""Scanner μ-maps of the PET-MR attenuation-correction setups, made from the true anatomy.

Each setup of ``data/acsetups.tsv`` (:mod:`bids_harmonize.acsetups`) builds its μ-map by
its own mechanism from the subject's tissue fractions, with its own failure modes; no
bias is painted onto the PET.  All maps are in 1/cm at 511 keV on the reference grid.

- ``none`` (``dixon-nobone``, Dixon 4-class): air / fat / soft tissue; bone becomes soft
  tissue; fatty diploe may read as fat; only part of the sinus air is found (thin or
  partly filled cavities are missed) and the mastoid air cells are soft tissue; in a
  fraction of subjects a fat/water swap inverts fat and soft tissue over part of the head.
- ``model`` (``dixon-bone``): the Dixon map plus a registered, smooth bone model at a
  population-mean bone attenuation (misregistered by a few mm); the model fills the
  mastoid air cells with bone (air/bone confusion).
- ``zte``: the true map seen by zero-echo-time MR: fat as soft tissue, bone attenuation
  from a PD-to-HU calibration with a per-subject slope error around a mean bias
  (``bone_calibration_bias``), most sinus air found,
  ZTE resolution blur.
- ``atlas``: soft tissue plus a population atlas skull: blurred, misregistered, with the
  atlas' skull thickness instead of the subject's (scales the bone line integral), and
  the atlas air cavities (partly off the subject's).

The same random stream gives the same map for a seed (see ``simulate._rng``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from bids_harmonize.acsetups import ACSetup

FWHM = 2.3548


def _sinus_air(anat, rng, found_lo, found_hi):
    """Internal air the method finds: large cavities (eroded), a random fraction."""
    air = anat.masks["internal_air"]
    found_frac = float(rng.uniform(found_lo, found_hi))
    eroded = ndimage.binary_erosion(air, iterations=1)
    noise = ndimage.gaussian_filter(rng.random(anat.shape).astype(np.float32), 2.0)
    missed = noise < (np.quantile(noise[air], 1.0 - found_frac) if air.any() else 0.0)
    return eroded & ~missed if found_frac < 1 else air.copy(), found_frac


def _dixon(anat, setup: ACSetup, rng, info) -> np.ndarray:
    fr = anat.fractions
    body = fr["air"] < 0.5
    soft, fat_mu = setup.get("mu_soft"), setup.get("mu_fat")
    diploe_fat = rng.random() < setup.get("diploe_as_fat_probability", 0.0)
    fat = (fr["fat"] > 0.5) | ((fr["diploe"] > 0.5) & diploe_fat)
    mu = np.where(body, np.float32(soft), np.float32(0.0)).astype(np.float32)
    mu[fat & body] = fat_mu
    swapped = rng.random() < setup.get("fat_water_swap_probability", 0.0)
    extent = setup.get("fat_water_swap_extent", 0.0)
    field = ndimage.gaussian_filter(rng.random(anat.shape).astype(np.float32), 12.0)
    if swapped and extent > 0:
        region = body & (field >= np.quantile(field[body], 1.0 - extent))
        mu[region & fat] = soft
        mu[region & ~fat] = fat_mu
        info["fat_water_swap_fraction_of_head"] = round(float(region.sum() / body.sum()), 4)
    info["fat_water_swap"] = bool(swapped)
    info["diploe_as_fat"] = bool(diploe_fat)
    found, frac = _sinus_air(anat, rng, setup.get("sinus_air_found_min"),
                             setup.get("sinus_air_found_max"))
    mu[found] = 0.0
    info["sinus_air_found_fraction"] = round(frac, 4)
    return mu


def _bone_fraction(anat) -> np.ndarray:
    fr = anat.fractions
    return np.clip(fr["cortical_bone"] + fr["diploe"], 0.0, 1.0).astype(np.float32)


def _misregister(img, rng, sd_mm, h, info, key):
    shift_mm = rng.normal(0.0, sd_mm, size=3)
    info[key] = [round(float(s), 3) for s in shift_mm]
    return ndimage.shift(img, shift_mm / h, order=1, mode="constant")


def setup_mu_map(anat, setup: ACSetup, rng: np.random.Generator, mu_true: np.ndarray
                 ) -> tuple[np.ndarray, dict]:
    """The μ-map (1/cm, reference grid) ``setup`` makes for this subject, and what happened.

    ``ct`` returns ``mu_true`` unchanged (the CT-based map; CT noise and the session's
    own CT grid are handled by the PET-CT acquisition).
    """
    h = float(anat.affine[0, 0])
    info: dict = {"setup": setup.name, "bone_model": setup.bone_model}
    body = anat.fractions["air"] < 0.5
    if setup.bone_model == "ct":
        return mu_true.astype(np.float32), info
    if setup.bone_model in ("none", "model"):
        mu = _dixon(anat, setup, rng, info)
        if setup.bone_model == "model":
            bone = _bone_fraction(anat)
            bone[anat.masks["mastoid"]] = 1.0  # the model has no mastoid air cells
            bone = ndimage.gaussian_filter(bone, setup.get("bone_blur_mm") / FWHM / h)
            bone = _misregister(bone, rng, setup.get("bone_misregistration_mm"), h, info,
                                "bone_model_shift_mm")
            w = np.clip(bone, 0.0, 1.0) * (mu > 0)
            mu = (mu * (1 - w) + np.float32(setup.get("mu_bone")) * w).astype(np.float32)
        return mu.astype(np.float32), info
    soft = setup.get("mu_soft")
    if setup.bone_model == "zte":
        err = float(rng.normal(setup.get("bone_calibration_bias", 0.0),
                               setup.get("bone_calibration_sd")))
        info["bone_calibration_error"] = round(err, 4)
        excess = np.clip(mu_true - soft, 0.0, None) * _bone_fraction(anat).clip(0, 1).astype(
            bool)
        mu = np.where(body, np.float32(soft), np.float32(0.0)) + excess * np.float32(1 + err)
        # air inside the head: ZTE sees most of it
        found, frac = _sinus_air(anat, rng, setup.get("sinus_air_found_min"),
                                 setup.get("sinus_air_found_max"))
        mu[found] = 0.0
        mast = anat.masks["mastoid"]
        mu[mast] = mu_true[mast]  # mastoid honeycomb resolved at ZTE resolution
        info["sinus_air_found_fraction"] = round(frac, 4)
        mu = ndimage.gaussian_filter(mu.astype(np.float32), setup.get("zte_blur_mm") / FWHM / h)
        return np.where(body | (mu > 0.01), mu, 0.0).astype(np.float32), info
    if setup.bone_model == "atlas":
        thick = float(np.clip(rng.normal(1.0, setup.get("skull_thickness_sd")), 0.6, 1.4))
        info["atlas_skull_thickness_factor"] = round(thick, 4)
        bone = _bone_fraction(anat)
        bone[anat.masks["mastoid"]] = 1.0
        bone = ndimage.gaussian_filter(bone, setup.get("bone_blur_mm") / FWHM / h)
        bone = _misregister(bone, rng, setup.get("bone_misregistration_mm"), h, info,
                            "atlas_shift_mm")
        mu = np.where(body, np.float32(soft), np.float32(0.0)).astype(np.float32)
        # skull thickness: the atlas' line integral through the skull, thickness x mu
        w = np.clip(bone * thick, 0.0, 1.0) * body
        mu = mu * (1 - w) + np.float32(setup.get("mu_bone")) * w
        air, frac = _sinus_air(anat, rng, setup.get("sinus_air_found_min"),
                               setup.get("sinus_air_found_max"))
        air_w = ndimage.gaussian_filter(air.astype(np.float32), setup.get("bone_blur_mm")
                                        / FWHM / h)
        air_w = _misregister(air_w, rng, setup.get("bone_misregistration_mm"), h, info,
                             "atlas_air_shift_mm")
        mu = mu * (1 - np.clip(air_w, 0, 1))
        info["sinus_air_found_fraction"] = round(frac, 4)
        return mu.astype(np.float32), info
    raise ValueError(f"setup {setup.name!r}: unknown bone model {setup.bone_model!r}")
