"""2-D parallel-beam tomography: the projector, line integrals and filtered back-projection.

Shared by the simulator (:mod:`bids_harmonize.synth.simulate` acquires and reconstructs
with it) and the harmonizer (:func:`bids_harmonize.harmonizer.physics.expected_ac_error`
takes line integrals of attenuation maps and reconstructs their effect), so that both see
one geometry. Slices are ``n x n`` with pixel index ``i * n + j`` (x, y); sinograms are
``(n_angles, n, ...)``, ``n_angles`` over 180 degrees, one bin per pixel.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

#: Largest gain of the PSF-deconvolution filter (PSF reconstructions recover part of the
#: resolution, with edge overshoot; real OSEM-PSF is also limited by its iterations).
PSF_RECOVERY_MAX_GAIN = 2.5


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


def recovery_gain(f, sigma_px: float, max_gain: float = PSF_RECOVERY_MAX_GAIN):
    """Capped inverse of a Gaussian's transfer function (``f`` in cycles per pixel).

    >>> [round(float(g), 3) for g in recovery_gain(np.array([0.0, 0.1, 0.5]), 1.0)]
    [1.0, 1.218, 2.5]
    """
    return np.minimum(np.exp(2 * (np.pi * np.asarray(f) * sigma_px) ** 2), max_gain)


@cache
def _filter_matrix(n: int, cutoff: float, post_sigma_px: float,
                   recover_sigma_px: float = 0.0) -> np.ndarray:
    """Toeplitz matrix of the (zero-padded, hence linear) ramp x Hann [x Gaussian] filter.

    ``recover_sigma_px`` > 0 adds a capped deconvolution of a Gaussian of that sigma
    (resolution modelling of a PSF reconstruction, with its edge overshoot).
    """
    filt = _fbp_filter(n, cutoff).astype(np.float64)
    size = 2 * (len(filt) - 1)
    f = np.fft.rfftfreq(size)
    if recover_sigma_px > 0:
        filt = filt * recovery_gain(f, recover_sigma_px)
    if post_sigma_px > 0:
        filt = filt * np.exp(-2 * (np.pi * f * post_sigma_px) ** 2)
    kern = np.fft.irfft(filt, n=size)
    idx = (np.arange(n)[:, None] - np.arange(n)[None, :]) % size
    return kern[idx].astype(np.float32)


def fbp(sino: np.ndarray, cutoff: float = 1.0, post_sigma: tuple[float, float] = (0.0, 0.0),
        recover_sigma: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Filtered back-projection of ``(n_angles, n, ...)`` sinograms -> ``(n, n, ...)``.

    Ramp filter with a Hann window (``cutoff`` x Nyquist).  ``post_sigma`` = (in-plane
    sigma in pixels, sigma along the last axis in slices) of a Gaussian post-filter,
    applied exactly in the projection domain (the projection of a radially symmetric
    blur is a 1-D blur of the projection).  ``recover_sigma`` = (in-plane, axial) sigma
    of a Gaussian PSF partly deconvolved (:func:`recovery_gain`), for PSF reconstructions.

    >>> n = 64
    >>> c = np.arange(n) - (n - 1) / 2
    >>> disk = ((c[:, None] ** 2 + c[None, :] ** 2) < 20 ** 2).astype(np.float32)[..., None]
    >>> rec = fbp(project(disk, 96))
    >>> round(float(rec[28:36, 28:36].mean()), 2)
    1.0
    """
    n_angles, n = sino.shape[:2]
    rest = sino.shape[2:]
    h_mat = _filter_matrix(n, cutoff, round(float(post_sigma[0]), 6),
                           round(float(recover_sigma[0]), 6))
    # filtering along the bins is one matrix product (faster than padded FFTs here)
    flat = np.ascontiguousarray(np.swapaxes(sino.reshape(n_angles, n, -1), 0, 1),
                                dtype=np.float32).reshape(n, -1)
    q = (h_mat @ flat).reshape(n, n_angles, -1)
    q = np.ascontiguousarray(np.swapaxes(q, 0, 1)).reshape(n_angles, n, *rest)
    if recover_sigma[1] > 0 and rest and q.shape[-1] > 1:
        nz = q.shape[-1]
        size = int(2 ** np.ceil(np.log2(2 * nz)))
        pad = [(0, 0)] * (q.ndim - 1) + [(0, size - nz)]
        spec = np.fft.rfft(np.pad(q, pad, mode="edge"), axis=-1)
        gain = recovery_gain(np.fft.rfftfreq(size), recover_sigma[1])
        q = np.fft.irfft(spec * gain, n=size, axis=-1)[..., :nz].astype(np.float32)
    if post_sigma[1] > 0 and rest:
        q = ndimage.gaussian_filter1d(q, post_sigma[1], axis=-1, truncate=3.0)
    _, at_mat = system_matrix(n, n_angles)
    img = at_mat @ q.reshape(n_angles * n, -1)
    return (img * np.float32(np.pi / n_angles)).reshape(n, n, *rest)
