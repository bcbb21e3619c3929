"""Effective resolution of PET scanners and smoothing to a common resolution.

Multi-site amyloid studies (ADNI: Joshi et al. 2009, NeuroImage 46:154; AMYPAD: Shekari et
al. 2023, EJNMMI Phys, doi:10.1186/s40658-023-00588-x, effective resolutions 3.3-8.1 mm
across 28 systems, target 8 mm) smooth
every scanner's images to one common effective resolution, with a Gaussian whose FWHM
adds to the scanner's in quadrature (Gaussians convolve that way). Sharper scanners get a
wider kernel; a scanner coarser than the target cannot be sharpened and is refused.

Pure functions (no Nipype): the participant workflow's ``SmoothToResolution`` interface
and the simulator's realism benchmark call them.

- :func:`effective_fwhm` -- a reconstruction's nominal resolution from its parts;
- :func:`smoothing_fwhm` -- the kernel that takes one resolution to another;
- :func:`smooth_to_resolution` -- apply it to an image (voxel sizes from the affine);
- :func:`scanner_resolution` -- a model's effective resolution from
  ``data/scanner_resolution.tsv`` (every number with its source).
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

#: FWHM of a Gaussian in units of its standard deviation, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: A scanner this close above the target (mm) is taken as at the target (no smoothing).
TOLERANCE_MM = 0.05
RESOLUTION_TABLE = "bids_harmonize/data/scanner_resolution.tsv"


class ResolutionError(ValueError):
    """A scanner coarser than the common resolution, or a resolution that is not known."""


def effective_fwhm(psf_fwhm_mm: float, postfilter_fwhm_mm: float = 0.0,
                   psf_recovery: float = 0.0) -> float:
    """Nominal FWHM (mm) of a reconstruction: scanner PSF and post-filter in quadrature.

    ``psf_recovery``: fraction of the PSF's variance a resolution-modelling (PSF)
    reconstruction recovers (0 without PSF modelling).

    >>> round(effective_fwhm(4.5, 4.0), 2)
    6.02
    >>> round(effective_fwhm(3.5, 3.0, psf_recovery=0.5), 2)
    3.89
    """
    if psf_fwhm_mm < 0 or postfilter_fwhm_mm < 0 or not 0.0 <= psf_recovery < 1.0:
        raise ValueError("FWHMs must be >= 0 and psf_recovery in [0, 1)")
    return math.sqrt(psf_fwhm_mm**2 * (1.0 - psf_recovery) + postfilter_fwhm_mm**2)


def smoothing_fwhm(current_mm: float, target_mm: float) -> float:
    """FWHM (mm) of the Gaussian that takes ``current_mm`` to ``target_mm`` resolution.

    ``sqrt(target**2 - current**2)``; 0 when the image is already at the target (within
    :data:`TOLERANCE_MM`); a scanner coarser than the target is a :class:`ResolutionError`.

    >>> smoothing_fwhm(6.0, 8.0)
    5.291502622129181
    >>> smoothing_fwhm(8.0, 8.0)
    0.0
    >>> smoothing_fwhm(8.6, 8.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bids_harmonize.resolution.ResolutionError: effective resolution 8.6 mm is coarser ...
    """
    if current_mm <= 0 or target_mm <= 0:
        raise ValueError(f"resolutions must be positive (got {current_mm}, {target_mm})")
    if current_mm > target_mm + TOLERANCE_MM:
        raise ResolutionError(
            f"effective resolution {current_mm:g} mm is coarser than the common resolution "
            f"{target_mm:g} mm: an image cannot be sharpened (choose a common resolution of "
            f"at least {current_mm:g} mm)")
    return math.sqrt(max(target_mm**2 - current_mm**2, 0.0))


def voxel_sizes(affine) -> np.ndarray:
    """Voxel sizes (mm) of an affine's three axes.

    >>> voxel_sizes(np.diag([2.0, -2.0, 2.5, 1.0])).tolist()
    [2.0, 2.0, 2.5]
    """
    return np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))


def smooth_to_resolution(data: np.ndarray, affine, current_mm: float, target_mm: float
                         ) -> tuple[np.ndarray, float]:
    """``data`` (3-D, or 4-D with frames last) smoothed from ``current_mm`` to ``target_mm``.

    Returns the image (float32) and the kernel FWHM (mm). An isotropic Gaussian in
    millimetres (sigma per axis from the affine's voxel sizes); the image's sum inside
    the field of view is kept up to edge effects (``mode="nearest"``).

    >>> img = np.zeros((21, 21, 21), np.float32); img[10, 10, 10] = 1.0
    >>> out, k = smooth_to_resolution(img, np.eye(4), 4.0, 5.0)
    >>> round(k, 3), round(float(out.sum()), 3)
    (3.0, 1.0)
    """
    from scipy import ndimage

    kernel = smoothing_fwhm(current_mm, target_mm)
    data = np.asarray(data, dtype=np.float32)
    if kernel == 0.0:
        return data.copy(), 0.0
    sigma = kernel / FWHM_PER_SIGMA / voxel_sizes(affine)
    sigma = tuple(sigma) + (0.0,) * (data.ndim - 3)
    out = ndimage.gaussian_filter(data, sigma=sigma, mode="nearest", truncate=4.0)
    return out.astype(np.float32), kernel


@dataclass(frozen=True)
class ScannerResolution:
    """One row of ``data/scanner_resolution.tsv``."""

    model: str
    fwhm_mm: float
    reconstruction: str
    source: str


def _norm(text: str) -> str:
    return "".join(ch for ch in str(text).lower() if ch.isalnum())


@cache
def load_scanner_resolutions() -> dict[str, ScannerResolution]:
    """``{normalised model name or alias: ScannerResolution}`` (aliases of scanners.tsv).

    >>> load_scanner_resolutions()["biographmmr"].fwhm_mm
    6.0
    """
    data = resources.files("bids_harmonize.data")
    rows = {}
    with data.joinpath("scanner_resolution.tsv").open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            fwhm = float(row["effective_fwhm_mm"])
            if not 1.0 <= fwhm <= 15.0 or not row["source"].strip():
                raise ValueError(f"{RESOLUTION_TABLE}: {row['model']}: implausible FWHM or "
                                 "no source")
            rows[row["model"]] = ScannerResolution(row["model"], fwhm, row["reconstruction"],
                                                   row["source"])
    table = {_norm(k): v for k, v in rows.items()}
    with data.joinpath("scanners.tsv").open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["model"] in rows:
                for alias in filter(None, (row.get("aliases") or "").split(";")):
                    table.setdefault(_norm(alias), rows[row["model"]])
    return table


def scanner_resolution(model: str | None) -> ScannerResolution | None:
    """The effective resolution of a scanner model (name or alias), or None when unknown.

    >>> scanner_resolution("Biograph_mMR").fwhm_mm, scanner_resolution("Unknown 3000")
    (6.0, None)
    """
    if not model:
        return None
    table = load_scanner_resolutions()
    if _norm(model) in table:
        return table[_norm(model)]
    words = {_norm(w) for w in re.split(r"[\s(),/;]+", str(model))}
    found = {table[w].model: table[w] for w in words if len(w) >= 3 and w in table}
    return found.popitem()[1] if len(found) == 1 else None


def resolution_record(model: str | None, target_mm: float,
                      overrides: dict[str, float] | None = None) -> dict:
    """What smoothing a series of scanner ``model`` to ``target_mm`` does, for its sidecar.

    The scanner's effective resolution comes from ``overrides`` (model -> FWHM mm, the
    user's) or ``data/scanner_resolution.tsv``; an unknown model or one coarser than the
    target is a :class:`ResolutionError` naming the model and how to fix it.

    >>> r = resolution_record("Biograph mMR", 8.0)
    >>> r["ScannerEffectiveResolutionFWHM"], round(r["SmoothingKernelFWHM"], 2)
    (6.0, 5.29)
    >>> resolution_record("Unknown 3000", 8.0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bids_harmonize.resolution.ResolutionError: scanner 'Unknown 3000': effective resolution unknown ...
    """
    overrides = {_norm(k): float(v) for k, v in (overrides or {}).items()}
    if model and _norm(model) in overrides:
        fwhm, source, recon = overrides[_norm(model)], "user (--scanner-resolution)", ""
    else:
        known = scanner_resolution(model)
        if known is None:
            raise ResolutionError(
                f"scanner {model!r}: effective resolution unknown (not in {RESOLUTION_TABLE}); "
                "give it with --scanner-resolution MODEL=MM, e.g. from a Hoffman phantom "
                "scan reconstructed like the data")
        fwhm, source, recon = known.fwhm_mm, known.source, known.reconstruction
    try:
        kernel = smoothing_fwhm(fwhm, target_mm)
    except ResolutionError as exc:
        raise ResolutionError(f"scanner {model!r}: {exc}") from None
    return {
        "CommonResolutionFWHM": float(target_mm),
        "ScannerEffectiveResolutionFWHM": float(fwhm),
        "ScannerEffectiveResolutionSource": source,
        "ScannerReconstruction": recon,
        "SmoothingKernelFWHM": round(kernel, 4),
        "Units": "mm",
        "Description": "static PET smoothed in its own space with an isotropic Gaussian of "
                       "SmoothingKernelFWHM, sqrt(common^2 - scanner^2), before registration, "
                       "harmonization and quantification",
    }
