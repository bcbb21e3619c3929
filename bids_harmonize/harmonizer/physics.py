"""Expected attenuation-correction error of a PET-MR scanner, from physics (pure numpy).

A PET image reconstructed with an attenuation map ``mu_ac`` while the head attenuates with
``mu_true`` has, on every line of response (LOR) ``L``, its counts divided by the wrong
attenuation-correction factor: the sinogram is multiplied by

    f(L) = ACF_ac(L) / ACF_true(L) = exp(-integral over L of (mu_true - mu_ac))

For a smooth ``f``, filtered back-projection of ``f * P a`` gives, to first order, the
activity ``a(x)`` times the mean of ``f`` over the LORs through ``x`` (the error of a
multiplicative sinogram factor spreads along its LORs and averages over the angles). The
expected correction that turns the PET-MR image into the PET-CT one is therefore

    e(x) = -log( mean over LORs through x of exp(-integral (mu_true - mu_ac)) )

:func:`expected_ac_error` computes ``e`` with the 2-D parallel-beam projector the simulator
also uses (:func:`bids_harmonize.physics.tomography.system_matrix`), slice by slice along
the axial axis,
on a grid ``downsample`` times coarser than the input and over few angles: the map is
smooth, so this costs well under a second for a 2 mm head. ``e > 0`` where the scanner's
map lacks attenuation (bone as soft tissue: Dixon without bone), ``e ~ 0`` where it has
the bone. The approximation ignores scatter, the PSF and the uptake pattern: stage 3
learns what it misses.

With an activity estimate (the PET-MR image itself), the map is computed more closely to
what the scanner's reconstruction does: ``e = log(FBP(P a) / FBP(f * P a))``, the
filtered back-projection of the activity's projections without and with the wrong
correction (where the activity is too low for a stable ratio, the LOR mean is kept).
Measured against simulator v2 (``bids_harmonize.synth``, 2 mm, PiB, one subject per
setup, true mu vs the scanner's mu-map; mean over the 24 regions of log(PET-CT/PET-MR)):
vendor Dixon without bone, observed +0.059, LOR mean +0.087 (regional r = 0.68, mean
absolute error 0.034), FBP with the PET-MR as activity +0.070 (r = 0.77, error 0.022);
bone-aware setups observed -0.018 to -0.035, predicted -0.014 to -0.037.

The true-mu estimate is the stage-2 pseudo-CT at inference. Without the scanner's own
mu-map, :func:`setup_mu_map` rebuilds the map a setup's method makes from that estimate
(:data:`SETUP_HAS_BONE`); an unknown setup gives no physics map (zeros).

>>> import numpy as np
>>> mu = np.zeros((24, 24, 4), np.float32); mu[4:20, 4:20] = 0.1
>>> float(np.abs(expected_ac_error(mu, mu)).max())
0.0
"""

from __future__ import annotations

import logging

import numpy as np

LOGGER = logging.getLogger(__name__)

#: Dixon 4-class attenuation values (1/cm at 511 keV), Martinez-Moller et al., J. Nucl.
#: Med. 50:520 (2009): air 0, fat 0.086, soft tissue 0.100 (bone is soft tissue)
MU_DIXON_FAT = 0.086
MU_DIXON_SOFT = 0.100
#: class boundaries for re-segmenting a mu estimate as a Dixon scanner would (midpoints)
MU_AIR_FAT = 0.043  #: below: air (half of the fat value)
MU_FAT_SOFT = 0.093  #: between fat (0.086) and soft tissue (0.100)

#: Fallback for setup names the setup table (``bids_harmonize.acsetups``) lacks: whether
#: the setup's mu-map has bone. Without bone (vendor Dixon, Biograph mMR VB20):
#: 5-20 % cortical under-estimation (Anazodo et al., Front. Neurosci. 2015); with a bone
#: model, ZTE, atlas or CT the residual bias is a few % (Ladefoged et al., NeuroImage
#: 2017; Sousa et al., EJNMMI Phys. 2018; Merida et al., Phys. Med. Biol. 2017): the
#: rebuilt map is then the mu estimate itself (no expected error).
SETUP_HAS_BONE = {
    "dixon-nobone": False,
    "dixon": False,
    "dixon-bone": True,
    "zte": True,
    "ute": True,
    "atlas": True,
    "ct": True,
}


def _block_mean(a: np.ndarray, d: int) -> np.ndarray:
    """Mean over ``d``^3 blocks (edges padded by replication)."""
    if d <= 1:
        return a.astype(np.float32)
    pad = [(0, (-n) % d) for n in a.shape]
    a = np.pad(a, pad, mode="edge")
    s = a.shape
    return a.reshape(s[0] // d, d, s[1] // d, d, s[2] // d, d).mean(axis=(1, 3, 5)).astype(np.float32)


def expected_ac_error(
    mu_true,
    mu_ac,
    *,
    voxel_mm: float = 2.0,
    n_angles: int = 24,
    downsample: int = 2,
    axial_axis: int = 2,
    activity=None,
    min_activity: float = 0.1,
) -> np.ndarray:
    """``e = -log(mean over LORs of exp(-integral (mu_true - mu_ac)))`` on the input grid.

    With ``activity``: ``e = log(FBP(P a) / FBP(f P a))`` where the activity reconstructs
    above ``min_activity`` times its 99th percentile, the LOR mean elsewhere.

    Args:
        mu_true: estimate of the true attenuation (1/cm at 511 keV), 3-D.
        mu_ac: the attenuation map the scanner corrected with (1/cm), same grid.
        voxel_mm: isotropic voxel size of the inputs.
        n_angles: projection angles over 180 degrees.
        downsample: the line integrals run on a grid this many times coarser.
        axial_axis: the axis across the 2-D slices (the scanner's axial direction).
        activity: an estimate of the activity (e.g. the PET-MR image), same grid, or None.
        min_activity: relative activity below which the LOR mean is used.

    Returns:
        float32 map, positive where the scanner's map lacks attenuation.

    >>> mu = np.zeros((32, 32, 4), np.float32); mu[4:28, 4:28] = 0.1
    >>> bone = mu.copy(); bone[4:28, 4:6] = bone[4:28, 26:28] = 0.17
    >>> e = expected_ac_error(bone, mu)          # the scanner's map misses the bone
    >>> bool(e[16, 16, 2] > 0.03), bool(e[16, 8, 2] > e[16, 16, 2])
    (True, True)
    """
    from scipy import ndimage

    from bids_harmonize.physics.tomography import fbp, system_matrix

    mu_true = np.asarray(mu_true, dtype=np.float32)
    mu_ac = np.asarray(mu_ac, dtype=np.float32)
    if mu_true.shape != mu_ac.shape or mu_true.ndim != 3:
        raise ValueError(f"mu maps must be 3-D on one grid, not {mu_true.shape} and {mu_ac.shape}")
    if activity is not None and np.shape(activity) != mu_true.shape:
        raise ValueError(f"activity {np.shape(activity)} is not on the mu grid {mu_true.shape}")
    shape = mu_true.shape

    def slices(volume):
        """Block-mean slices, padded to a square whose inscribed circle holds them all
        (the projector ignores pixels outside it)."""
        moved = np.moveaxis(np.asarray(volume, dtype=np.float32), axial_axis, -1)
        small = _block_mean(moved, int(downsample))
        nx, ny, nz = small.shape
        n = int(np.ceil(np.hypot(nx, ny))) + 2
        ox, oy = (n - nx) // 2, (n - ny) // 2
        square = np.zeros((n, n, nz), dtype=np.float32)
        square[ox : ox + nx, oy : oy + ny] = small
        return square, (slice(ox, ox + nx), slice(oy, oy + ny))

    square, inside = slices(mu_true - mu_ac)
    n, _, nz = square.shape
    a_mat, at_mat = system_matrix(n, int(n_angles))
    pixel_cm = voxel_mm * max(int(downsample), 1) / 10.0
    integrals = (a_mat @ square.reshape(n * n, nz)) * np.float32(pixel_cm)
    ratio = np.exp(-integrals)  # ACF_ac / ACF_true per LOR
    weight = at_mat @ np.ones(a_mat.shape[0], dtype=np.float32)
    mean = (at_mat @ ratio) / np.maximum(weight, 1e-6)[:, None]
    e = -np.log(np.clip(mean, 1e-6, None)).reshape(n, n, nz)
    if activity is not None:
        act, _ = slices(np.clip(activity, 0.0, None))
        proj = (a_mat @ act.reshape(n * n, nz)).reshape(int(n_angles), n, nz)
        right = fbp(proj, post_sigma=(1.0, 0.0))
        wrong = fbp(proj * ratio.reshape(int(n_angles), n, nz), post_sigma=(1.0, 0.0))
        level = np.float32(min_activity) * max(float(np.percentile(right, 99)), 1e-12)
        ok = (right > level) & (wrong > level)
        e = np.where(ok, np.log(np.where(ok, right, 1.0) / np.where(ok, wrong, 1.0)), e)
    e = e[inside].astype(np.float32)
    if downsample > 1:
        moved = np.moveaxis(np.zeros(shape, dtype=np.float32), axial_axis, -1).shape
        factors = [m / s for m, s in zip(moved, e.shape, strict=True)]
        e = ndimage.zoom(e, factors, order=1, mode="nearest", grid_mode=True)
        e = e[: moved[0], : moved[1], : moved[2]]
    return np.ascontiguousarray(np.moveaxis(e, -1, axial_axis), dtype=np.float32)


def _setup_row(setup: str):
    """The setup's row of ``bids_harmonize.acsetups`` (None when unknown there)."""
    try:
        from bids_harmonize.acsetups import load_setups
    except ImportError:  # pragma: no cover - acsetups ships with the package
        return None
    try:
        return load_setups().get(str(setup))
    except (ValueError, OSError) as err:
        LOGGER.warning("attenuation-correction setup table unreadable: %s", err)
        return None


def setup_has_bone(setup: str | None) -> bool | None:
    """Whether a setup's mu-map has bone (None: unknown setup).

    The setup table (``bids_harmonize.acsetups``, column ``bone_model``) decides; names it
    lacks fall back to :data:`SETUP_HAS_BONE`.

    >>> setup_has_bone("dixon-nobone"), setup_has_bone("zte"), setup_has_bone("mystery")
    (False, True, None)
    """
    if not setup or setup == "unknown":
        return None
    row = _setup_row(setup)
    if row is not None:
        return row.bone_model != "none"
    return SETUP_HAS_BONE.get(str(setup).lower())


def setup_mu_map(mu_true, setup: str) -> np.ndarray | None:
    """The mu-map a setup's method would make from the true attenuation ``mu_true`` (1/cm).

    Setups without bone re-segment ``mu_true`` into Dixon's classes (air, fat, soft
    tissue with the setup's values; bone becomes soft tissue); setups with bone return
    ``mu_true`` (no expected error); an unknown setup gives None.

    >>> setup_mu_map(np.array([0.0, 0.08, 0.1, 0.17]), "dixon").astype(float).round(3).tolist()
    [0.0, 0.086, 0.1, 0.1]
    >>> setup_mu_map(np.array([0.17]), "zte").astype(float).round(3).tolist()
    [0.17]
    >>> setup_mu_map(np.array([0.17]), "mystery") is None
    True
    """
    mu_true = np.asarray(mu_true, dtype=np.float32)
    has_bone = setup_has_bone(setup)
    if has_bone is None:
        return None
    if has_bone:
        return mu_true.copy()
    row = _setup_row(setup)
    soft = row.get("mu_soft", MU_DIXON_SOFT) if row is not None else MU_DIXON_SOFT
    fat = row.get("mu_fat", MU_DIXON_FAT) if row is not None else MU_DIXON_FAT
    out = np.full(mu_true.shape, soft, dtype=np.float32)
    out[mu_true < MU_FAT_SOFT] = fat
    out[mu_true < MU_AIR_FAT] = 0.0
    return out


def ac_error_for(mu_est, scanner_mu, setup, physics, activity=None) -> tuple[np.ndarray, str]:
    """The ``ac_error`` channel and where it came from.

    Args:
        mu_est: true-mu estimate (1/cm), e.g. the stage-2 pseudo-CT.
        scanner_mu: the scanner's mu-map (1/cm) on the same grid, or None.
        setup: the scanner's attenuation-correction setup name ("unknown" when not known).
        physics: :class:`~.config.PhysicsConfig`.
        activity: activity estimate (the PET-MR image) for the FBP form, or None.

    Returns:
        ``(map, source)`` with ``source`` ``"scanner mu-map"``, ``"setup <name>"`` or
        ``"none"`` (map of zeros). With ``physics.prefer == "setup"`` a known setup wins
        over the scanner's mu-map.
    """
    kw = {
        "n_angles": physics.n_angles,
        "downsample": physics.downsample,
        "axial_axis": physics.axial_axis,
        "activity": activity if getattr(physics, "use_activity", True) else None,
    }
    mu_est = np.asarray(mu_est, dtype=np.float32)
    rebuilt = setup_mu_map(mu_est, setup)
    if rebuilt is not None and getattr(physics, "prefer", "scanner") == "setup":
        return expected_ac_error(mu_est, rebuilt, **kw), f"setup {setup}"
    if scanner_mu is not None:
        return expected_ac_error(mu_est, scanner_mu, **kw), "scanner mu-map"
    if rebuilt is not None:
        return expected_ac_error(mu_est, rebuilt, **kw), f"setup {setup}"
    return np.zeros(mu_est.shape, dtype=np.float32), "none"
