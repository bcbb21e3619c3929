"""Acquisition physics: attenuation maps, projection, counts, FBP reconstruction, scanners.

Model (per session, tracer and frame), on the scanner's PET grid, slice by slice
(2-D parallel-beam, ``n_angles`` over 180 degrees, bin = pixel):

    y ~ Poisson( K_f * exp(-P mu_true) * blur_PSF(P a_f) )
    a_hat_f = FBP_{ramp x Hann}( y / (K_f * exp(-P mu_ac)) )   then a 3-D Gaussian post-filter

``P`` is a precomputed sparse system matrix (pixel-driven, linear interpolation),
applied to all slices at once.  Attenuation of a line of response is
``exp(-integral of mu)`` over the whole line whatever the emission point.  The
scanner PSF (Gaussian) is applied to the projections (exact for parallel beams:
the projection of a Gaussian-blurred slice is the blurred projection) and across
slices.  ``K_f`` turns Bq/mL into expected counts: scanner sensitivity (cps/kBq),
voxel volume, frame duration and the radioactive decay over the frame, so the
noise level follows dose, duration and decay (``CENTRE_SENSITIVITY_GAIN`` accounts
for the higher sensitivity at the centre of a 3-D field of view).  Scatter and randoms are not
modelled.

``mu_true`` comes from the CT by the bilinear conversion of Carney et al. (2006)
(:func:`hu_to_mu`); PET-CT corrects with the CT-derived map, PET-MR with the map of
its attenuation-correction setup (:mod:`bids_harmonize.synth.mrac`).  The PET-MR/PET-CT
difference therefore comes from the physics: bone missing from the Dixon map under-corrects lines of response
that cross the skull.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

LOGGER = logging.getLogger(__name__)

MU_WATER = 0.096  # 1/cm at 511 keV (Carney et al. 2006 bilinear conversion at 0 HU)

#: Counts gain of a brain at the centre of a 3-D scanner's field of view relative to the
#: NEMA (line source, whole axial FOV) sensitivity; the 2-D model keeps every true
#: coincidence the 3-D acquisition would record.
CENTRE_SENSITIVITY_GAIN = 4.0


@dataclass(frozen=True)
class ScannerModel:
    """A PET scanner as simulated (PSF, reconstruction grid, sensitivity)."""

    model: str
    manufacturer: str
    platform: str  # PET-CT | PET-MR
    psf_fwhm_mm: float
    voxel_mm: tuple[float, float, float]  # in-plane, in-plane, slice
    matrix: int
    n_slices: int
    sensitivity_cps_per_kbq: float
    postfilter_fwhm_mm: float = 3.0
    hann_cutoff: float = 1.0  # fraction of Nyquist


#: Scanner models (names of ``data/scanners.tsv``); parameters are approximate.
SCANNERS: dict[str, ScannerModel] = {
    m.model: m
    for m in (
        ScannerModel("Biograph Vision", "Siemens", "PET-CT", 3.5, (2.0, 2.0, 2.0), 128, 112, 16.4),
        ScannerModel("Discovery MI", "GE", "PET-CT", 4.0, (2.0, 2.0, 2.8), 128, 80, 13.7),
        ScannerModel("Biograph mCT", "Siemens", "PET-CT", 4.4, (2.0, 2.0, 2.0), 128, 112, 9.7),
        ScannerModel("Biograph mMR", "Siemens", "PET-MR", 4.5, (2.6, 2.6, 2.03), 100, 110, 15.0),
        ScannerModel("SIGNA PET/MR", "GE", "PET-MR", 4.2, (2.6, 2.6, 2.78), 100, 80, 21.0),
        ScannerModel("uPMR 790", "United Imaging", "PET-MR", 3.8, (2.4, 2.4, 2.0), 108, 112, 15.0),
    )
}


def get_scanner(model: str, resolution_mm: float = 2.0) -> ScannerModel:
    """A scanner model; at ``resolution_mm`` other than 2 the voxels scale with it."""
    try:
        sc = SCANNERS[model]
    except KeyError:
        raise ValueError(f"unknown scanner model {model!r}; known: {', '.join(SCANNERS)}") \
            from None
    if resolution_mm == 2.0:
        return sc
    f = resolution_mm / 2.0
    vox = tuple(v * f for v in sc.voxel_mm)
    return ScannerModel(sc.model, sc.manufacturer, sc.platform, sc.psf_fwhm_mm, vox,
                        int(round(sc.matrix / f)), int(round(sc.n_slices / f)),
                        sc.sensitivity_cps_per_kbq, sc.postfilter_fwhm_mm, sc.hann_cutoff)


def hu_to_mu(hu):
    """Bilinear HU -> linear attenuation at 511 keV (1/cm), Carney et al. 2006 (120 kVp).

    >>> [round(float(v), 4) for v in hu_to_mu([-1000.0, 0.0, 1000.0])]
    [0.0, 0.096, 0.1491]
    """
    hu = np.asarray(hu, dtype=np.float32)
    soft = 9.6e-5 * (hu + 1000.0)
    bone = 5.1e-5 * (hu + 1000.0) + 4.71e-2
    return np.clip(np.where(hu > 47.0, bone, soft), 0.0, None).astype(np.float32)


# --------------------------------------------------------------------------- geometry
def rigid(rot_deg, trans_mm) -> np.ndarray:
    """4x4 rigid transform from rotations about x, y, z (degrees) and a translation."""
    rx, ry, rz = np.deg2rad(rot_deg)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), \
        np.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    out = np.eye(4)
    out[:3, :3] = r_z @ r_y @ r_x
    out[:3, 3] = trans_mm
    return out


def centred_grid(shape, voxel_mm) -> np.ndarray:
    """Axis-aligned RAS affine of a grid centred on the scanner's isocentre."""
    aff = np.diag([*voxel_mm, 1.0]).astype(float)
    aff[:3, 3] = [-(n - 1) / 2 * v for n, v in zip(shape, voxel_mm, strict=True)]
    return aff


def resample(src, src_affine, dst_shape, dst_affine, cval=0.0) -> np.ndarray:
    """Trilinear resampling of ``src`` onto a destination grid (affines to one world).

    >>> a = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    >>> bool(np.allclose(resample(a, np.eye(4), (3, 3, 3), np.eye(4)), a))
    True
    """
    return resample_many([src], src_affine, dst_shape, dst_affine, cval=cval)[0]


def resample_many(srcs, src_affine, dst_shape, dst_affine, cval=0.0) -> list[np.ndarray]:
    """Resample several volumes of one grid at once (torch ``grid_sample``, trilinear).

    Points outside the source get ``cval``.
    """
    import torch
    import torch.nn.functional as F

    src_shape = np.shape(srcs[0])
    m = np.linalg.solve(src_affine, dst_affine)
    axes = [np.arange(n, dtype=np.float32) for n in dst_shape]
    grid = np.empty((*dst_shape, 3), dtype=np.float32)
    for a in range(3):
        # normalised source coordinate: 2 * index / (n - 1) - 1, folded into the coefficients
        g = 2.0 / max(src_shape[a] - 1, 1)
        c = (m[a] * g).astype(np.float32)
        grid[..., 2 - a] = (c[0] * axes[0][:, None, None] + c[1] * axes[1][None, :, None]) \
            + (c[2] * axes[2][None, None, :] + np.float32(c[3] - 1.0))
    stack = np.stack([np.asarray(s, dtype=np.float32) - np.float32(cval) for s in srcs])
    with torch.no_grad():
        out = F.grid_sample(torch.from_numpy(stack)[None], torch.from_numpy(grid)[None],
                            mode="bilinear", padding_mode="zeros", align_corners=True)
    out = out[0].numpy()
    return [np.ascontiguousarray(o) + np.float32(cval) if cval else np.ascontiguousarray(o)
            for o in out]


# --------------------------------------------------------------------------- projector
@cache
def system_matrix(n: int, n_angles: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """2-D parallel-beam projector for an ``n x n`` slice: ``A`` (angles*bins, n*n), ``A.T``.

    Pixel-driven with linear interpolation between the two nearest bins; pixels
    outside the inscribed circle are ignored.  Image pixel index ``i * n + j`` (x, y).
    """
    c = np.arange(n) - (n - 1) / 2
    xx, yy = np.meshgrid(c, c, indexing="ij")
    inside = np.flatnonzero((xx**2 + yy**2).ravel() <= (n / 2 - 0.5) ** 2)
    x, y = xx.ravel()[inside], yy.ravel()[inside]
    rows, cols, vals = [], [], []
    for a, th in enumerate(np.arange(n_angles) * np.pi / n_angles):
        s = x * np.cos(th) + y * np.sin(th) + (n - 1) / 2
        i0 = np.floor(s).astype(np.int64)
        w = s - i0
        for ii, ww in ((i0, 1 - w), (i0 + 1, w)):
            ok = (ii >= 0) & (ii < n)
            rows.append(a * n + ii[ok])
            cols.append(inside[ok])
            vals.append(ww[ok])
    a_mat = sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32),
         (np.concatenate(rows), np.concatenate(cols))), shape=(n_angles * n, n * n))
    return a_mat, a_mat.T.tocsr()


def project(vol: np.ndarray, n_angles: int) -> np.ndarray:
    """Projections of every axial slice: ``(n, n, nz) -> (n_angles, n, nz)``."""
    n, _, nz = vol.shape[:3]
    a_mat, _ = system_matrix(n, n_angles)
    out = a_mat @ np.ascontiguousarray(vol, dtype=np.float32).reshape(n * n, -1)
    return out.reshape(n_angles, n, *vol.shape[2:])


@cache
def _fbp_filter(n: int, cutoff: float) -> np.ndarray:
    size = int(2 ** np.ceil(np.log2(2 * n)))
    k = np.arange(size)
    k = np.where(k > size // 2, k - size, k)
    h = np.zeros(size)
    h[0] = 0.25
    odd = k % 2 == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    ramp = np.real(np.fft.rfft(h))
    f = np.fft.rfftfreq(size)  # cycles / bin, Nyquist = 0.5
    fc = 0.5 * cutoff
    hann = np.where(f <= fc, 0.5 * (1 + np.cos(np.pi * f / fc)), 0.0)
    return (ramp * hann).astype(np.float32)


@cache
def _filter_matrix(n: int, cutoff: float, post_sigma_px: float) -> np.ndarray:
    """Toeplitz matrix of the (zero-padded, hence linear) ramp x Hann [x Gaussian] filter."""
    filt = _fbp_filter(n, cutoff).astype(np.float64)
    size = 2 * (len(filt) - 1)
    if post_sigma_px > 0:
        f = np.fft.rfftfreq(size)
        filt = filt * np.exp(-2 * (np.pi * f * post_sigma_px) ** 2)
    kern = np.fft.irfft(filt, n=size)
    idx = (np.arange(n)[:, None] - np.arange(n)[None, :]) % size
    return kern[idx].astype(np.float32)


def fbp(sino: np.ndarray, cutoff: float = 1.0, post_sigma: tuple[float, float] = (0.0, 0.0)
        ) -> np.ndarray:
    """Filtered back-projection of ``(n_angles, n, ...)`` sinograms -> ``(n, n, ...)``.

    Ramp filter with a Hann window (``cutoff`` x Nyquist).  ``post_sigma`` = (in-plane
    sigma in pixels, sigma along the last axis in slices) of a Gaussian post-filter,
    applied exactly in the projection domain (the projection of a radially symmetric
    blur is a 1-D blur of the projection).

    >>> n = 64
    >>> c = np.arange(n) - (n - 1) / 2
    >>> disk = ((c[:, None] ** 2 + c[None, :] ** 2) < 20 ** 2).astype(np.float32)[..., None]
    >>> rec = fbp(project(disk, 96))
    >>> round(float(rec[28:36, 28:36].mean()), 2)
    1.0
    """
    n_angles, n = sino.shape[:2]
    rest = sino.shape[2:]
    h_mat = _filter_matrix(n, cutoff, round(float(post_sigma[0]), 6))
    # filtering along the bins is one matrix product (faster than padded FFTs here)
    flat = np.ascontiguousarray(np.swapaxes(sino.reshape(n_angles, n, -1), 0, 1),
                                dtype=np.float32).reshape(n, -1)
    q = (h_mat @ flat).reshape(n, n_angles, -1)
    q = np.ascontiguousarray(np.swapaxes(q, 0, 1)).reshape(n_angles, n, *rest)
    if post_sigma[1] > 0 and rest:
        q = ndimage.gaussian_filter1d(q, post_sigma[1], axis=-1, truncate=3.0)
    _, at_mat = system_matrix(n, n_angles)
    img = at_mat @ q.reshape(n_angles * n, -1)
    return (img * np.float32(np.pi / n_angles)).reshape(n, n, *rest)


def decay_factor(start_min, duration_min, half_life_min):
    """Mean fraction of the activity left over a frame, relative to the injection time.

    >>> round(float(decay_factor(0.0, 1e-6, 20.0)), 4)
    1.0
    """
    lam = np.log(2) / half_life_min
    start = np.asarray(start_min, float)
    dur = np.asarray(duration_min, float)
    return np.exp(-lam * start) * (1 - np.exp(-lam * dur)) / (lam * dur)
