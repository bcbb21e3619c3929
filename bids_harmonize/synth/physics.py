"""Acquisition physics: attenuation maps, projection, counts, scatter, reconstruction, scanners.

Model (per session, tracer and frame), on the scanner's PET grid, slice by slice
(2-D parallel-beam, ``n_angles`` over 180 degrees, bin = pixel):

    E   = blur_PSF(P a_f)                                  unattenuated emission projections
    y  ~ Poisson( K_f * TOF * (exp(-P mu_true - P mu_hw) * E + S_true) )
    a_hat_f = FBP_{ramp x Hann [x PSF recovery]}( (y / (K_f TOF) - S_hat) / AC_scanner )
              then a 3-D Gaussian post-filter

``P`` is a precomputed sparse system matrix (pixel-driven, linear interpolation),
applied to all slices at once; it and the FBP live in :mod:`bids_harmonize.physics.tomography`,
which the harmonizer shares.  Attenuation of a line of response is
``exp(-integral of mu)`` over the whole line whatever the emission point.  The
scanner PSF (Gaussian) is applied to the projections (exact for parallel beams:
the projection of a Gaussian-blurred slice is the blurred projection) and across
slices.  ``K_f`` turns Bq/mL into expected counts: scanner sensitivity (cps/kBq),
voxel volume, frame duration and the radioactive decay over the frame, so the
noise level follows dose, duration and decay (``CENTRE_SENSITIVITY_GAIN`` accounts
for the higher sensitivity at the centre of a 3-D field of view).

Error sources between the platforms, all from physics (no bias is painted on the PET):

- attenuation: ``mu_true`` comes from the CT by the bilinear conversion of Carney et al.
  (2006) (:func:`hu_to_mu`); PET-CT corrects with the CT-derived map, PET-MR with the map
  of its attenuation-correction setup (:mod:`bids_harmonize.synth.mrac`), placed where
  the head was during the MR-AC acquisition (head motion before the PET);
- 3-D acquisition: the PET-MR correction error is averaged over oblique lines
  (:func:`oblique_ratio`, tilts of :data:`OBLIQUE_TILTS_DEG`);
- MR hardware: head coil and table (:func:`hardware_mu`) attenuate on PET-MR; the
  scanner's hardware map covers only part of them (setup ``coil_missing_fraction``);
- scatter (:func:`scatter_projection`): true scatter from the true attenuation; the
  scanner subtracts its own estimate from its own μ-map and measured data, scaled to the
  scatter tails outside the head, so a wrong μ-map leaves a smooth residual;
- reconstruction per vendor: post-filter, PSF reconstructions as a capped PSF
  deconvolution (sharper, with edge overshoot), TOF as a noise-equivalent count gain.

Approximated (documented in README.md): 2-D slices with FBP emulate the vendors' 3-D
OSEM (iterations and subsets are not run; their resolution and contrast recovery are
stood in for by the post-filter and the PSF recovery); TOF changes only the noise;
scatter is a Gaussian-kernel model, not single-scatter simulation; randoms are not
modelled; oblique lines enter only the attenuation-correction error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import cache

import numpy as np

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
    tof_ps: float = 0.0  # coincidence timing resolution; 0 = no time of flight
    psf_recon: bool = False  # resolution modelling in the reconstruction
    recon: str = ""  # the vendor reconstruction this emulates (sidecar text)


#: Scanner models (names of ``data/scanners.tsv``); PSF, voxel, sensitivity approximate
#: (NEMA NU 2 papers: Vision: van Sluis et al. 2019, J Nucl Med 60:1031; Discovery MI:
#: Hsu et al. 2017, J Nucl Med 58:1511; mCT: Jakoby et al. 2011, Phys Med Biol 56:2375;
#: mMR: Delso et al. 2011, J Nucl Med 52:1914; SIGNA PET/MR: Grant et al. 2016, Med Phys
#: 43:2334).  TOF timing resolutions are those papers' values; the clinical brain
#: reconstructions (``recon``) are typical vendor protocols, emulated as FBP with the
#: scanner's post-filter and, for PSF reconstructions, a capped deconvolution of the PSF.
SCANNERS: dict[str, ScannerModel] = {
    m.model: m
    for m in (
        ScannerModel("Biograph Vision", "Siemens", "PET-CT", 3.5, (2.0, 2.0, 2.0), 128, 112, 16.4,
                     postfilter_fwhm_mm=3.0, tof_ps=214.0, psf_recon=True,
                     recon="OSEM 3D, 8 iterations 5 subsets, PSF + TOF, 3 mm Gaussian"),
        ScannerModel("Discovery MI", "GE", "PET-CT", 4.0, (2.0, 2.0, 2.8), 128, 80, 13.7,
                     postfilter_fwhm_mm=3.0, tof_ps=385.0, psf_recon=True,
                     recon="OSEM 3D (VPFX-S), 4 iterations 16 subsets, PSF + TOF, 3 mm Gaussian"),
        ScannerModel("Biograph mCT", "Siemens", "PET-CT", 4.4, (2.0, 2.0, 2.0), 128, 112, 9.7,
                     postfilter_fwhm_mm=3.0, tof_ps=540.0, psf_recon=True,
                     recon="OSEM 3D, 4 iterations 21 subsets, PSF + TOF, 3 mm Gaussian"),
        ScannerModel("Biograph mMR", "Siemens", "PET-MR", 4.5, (2.6, 2.6, 2.03), 100, 110, 15.0,
                     postfilter_fwhm_mm=4.0, tof_ps=0.0, psf_recon=False,
                     recon="OP-OSEM 3D, 3 iterations 21 subsets, no PSF, no TOF, 4 mm Gaussian"),
        ScannerModel("SIGNA PET/MR", "GE", "PET-MR", 4.2, (2.6, 2.6, 2.78), 100, 80, 21.0,
                     postfilter_fwhm_mm=4.0, tof_ps=390.0, psf_recon=False,
                     recon="OSEM 3D, 4 iterations 28 subsets, TOF, no PSF, 4 mm Gaussian"),
        ScannerModel("uPMR 790", "United Imaging", "PET-MR", 3.8, (2.4, 2.4, 2.0), 108, 112, 15.0,
                     postfilter_fwhm_mm=3.0, tof_ps=0.0, psf_recon=False,
                     recon="OSEM 3D, no PSF, 3 mm Gaussian"),
    )
}

#: Speed of light, mm/ps.
C_MM_PER_PS = 0.299792458
#: Effective diameter (cm) of a head for the TOF noise-equivalent gain.
HEAD_DIAMETER_CM = 18.0
#: Fraction of the PSF's variance a PSF reconstruction recovers at clinical iteration
#: numbers (an assumption: OSEM-PSF improves brain resolution by ~1 mm FWHM, e.g.
#: Rapisarda et al. 2010, Phys Med Biol 55:4131).
PSF_RECOVERY_FRACTION = 0.5

#: Scatter model (scatter in the projections, both true and as the scanner estimates it):
#: ``S = eta * G * [E * (1 - a)]``: photons removed from a line of response (``1 - a``,
#: ``a`` its attenuation factor) reappear, Compton scattered, as a broad smooth
#: distribution ``G`` over nearby lines; ``E`` = unattenuated emission projections.
#: ``eta`` sets the head scatter fraction near 30 % (3-D brain PET: 30-40 %, Zaidi &
#: Montandon 2007, PET Clin 2:219); the kernel's width (Gaussian, sigma in mm) is an
#: assumption of the order of convolution-subtraction kernels (Bergstrom et al. 1983,
#: J Comput Assist Tomogr 7:42).
SCATTER_ETA = 0.14
SCATTER_SIGMA_MM = 45.0

#: MR head coil and table in the PET-MR field of view (what the hardware μ-map covers).
#: Coil: cylindrical shell of polycarbonate-like housing, inner radius, wall thickness,
#: μ (ρ ≈ 1.2 g/cm3 plastics at 511 keV ≈ 0.11 /cm).  Table: flat slab under the head.
#: The attenuation of the Biograph mMR head/neck coil is a few % of true counts (Paulus
#: et al. 2012, Med Phys 39:4303 report hardware attenuation of this order); the
#: geometry here is an assumption of that order.
COIL_RADIUS_MM = (118.0, 126.0)  # (left-right, anterior-posterior) semi-axes, inner wall
COIL_WALL_MM = 4.0
COIL_MU = 0.11
TABLE_Y_MM = -135.0  # below the head (posterior), top of the slab
TABLE_THICKNESS_MM = 8.0
TABLE_MU = 0.05  # carbon-fibre/foam composite at 511 keV, an assumption


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
    return replace(sc, voxel_mm=vox, matrix=int(round(sc.matrix / f)),
                   n_slices=int(round(sc.n_slices / f)))


def tof_gain(tof_ps: float, diameter_cm: float = HEAD_DIAMETER_CM) -> float:
    """Noise-equivalent count gain of time of flight, ``D / (c dt / 2)`` (at least 1).

    Budinger 1983, J Nucl Med 24:73; Conti 2011, Eur J Nucl Med Mol Imaging 38:1147.

    >>> tof_gain(0.0), round(tof_gain(214.0), 2)
    (1.0, 5.61)
    """
    if tof_ps <= 0:
        return 1.0
    dx_cm = C_MM_PER_PS * tof_ps / 2.0 / 10.0
    return max(1.0, diameter_cm / dx_cm)


#: 3-D acquisition: polar (ring-difference) tilts of the lines of response averaged in the
#: attenuation-correction error, uniform up to about the scanners' acceptance (Biograph
#: mMR: atan(25.8 cm axial FOV / 65.6 cm ring) = 21.5 deg, Delso et al. 2011, J Nucl Med
#: 52:1914; SIGNA PET/MR: 25 cm / 62 cm, Grant et al. 2016, Med Phys 43:2334).
OBLIQUE_TILTS_DEG = (-16.0, -8.0, 0.0, 8.0, 16.0)


def _block_mean(vol: np.ndarray, f: int) -> np.ndarray:
    pad = [(0, (-s) % f) for s in vol.shape]
    v = np.pad(vol, pad, mode="edge")
    sh = [s // f for s in v.shape]
    return v.reshape(sh[0], f, sh[1], f, sh[2], f).mean(axis=(1, 3, 5)).astype(np.float32)


def oblique_ratio(dmu: np.ndarray, voxel_mm, n_angles: int,
                  tilts_deg=OBLIQUE_TILTS_DEG, coarse: int = 2, n_coarse_angles: int = 24
                  ) -> np.ndarray:
    """3-D over 2-D attenuation-correction error factor per 2-D line of response.

    ``dmu`` = true minus correction μ (1/cm) on the PET grid ``(n, n, nz)``.  A 3-D scanner
    corrects each oblique line with its own factor, so the error of the rebinned 2-D
    data is ``mean_tilt exp(-dL_tilt)`` rather than the in-plane ``exp(-dL_0)``; this
    returns their ratio ``(n_angles, n, nz)``, computed on a coarse grid (``coarse``
    voxels, ``n_coarse_angles`` angles) and interpolated (the ratio is smooth).

    >>> r = oblique_ratio(np.zeros((16, 16, 8), np.float32), (2.0, 2.0, 2.0), 12)
    >>> r.shape, float(abs(r - 1).max())
    ((12, 16, 8), 0.0)
    """
    import torch
    import torch.nn.functional as F

    n, _, nz = dmu.shape
    d = _block_mean(np.asarray(dmu, np.float32), coarse)
    nc, _, nzc = d.shape
    vx, vz = voxel_mm[0] * coarse, voxel_mm[2] * coarse
    vol = torch.from_numpy(d)[None, None]  # (1, 1, X, Y, Z): grid order (z, y, x)
    c, cz = (nc - 1) / 2.0, (nzc - 1) / 2.0
    idx = torch.arange(nc, dtype=torch.float32) - c
    zi = torch.arange(nzc, dtype=torch.float32) - cz
    tt, ss, z0 = torch.meshgrid(idx, idx, zi, indexing="ij")  # (t, s, z)
    inside = (tt**2 + ss**2) <= (nc / 2.0) ** 2
    lines = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small ops: threads only contend (10x slower when loaded)
    try:
        lines, ratio = _oblique_lines(vol, tilts_deg, n_coarse_angles, tt, ss, z0, inside,
                                      (c, cz), vx, vz)
        # periodic in angle: append the first angle (s mirrored) before interpolating
        wrap = torch.flip(ratio[:1], dims=[1])
        ratio = torch.cat([ratio, wrap])[None, None]
        full = F.interpolate(ratio, size=(n_angles + 1, n, nz), mode="trilinear",
                             align_corners=True)
    finally:
        torch.set_num_threads(threads)
    return np.ascontiguousarray(full[0, 0, :n_angles].numpy(), dtype=np.float32)


def _oblique_lines(vol, tilts_deg, n_coarse_angles, tt, ss, z0, inside, centre, vx, vz):
    import torch
    import torch.nn.functional as F

    c, cz = centre
    lines = {}
    with torch.no_grad():
        for phi in tilts_deg:
            tan, step_cm = np.tan(np.deg2rad(phi)), vx / 10.0 / np.cos(np.deg2rad(phi))
            out = []
            for th in np.arange(n_coarse_angles) * np.pi / n_coarse_angles:
                x = ss * float(np.cos(th)) - tt * float(np.sin(th))
                y = ss * float(np.sin(th)) + tt * float(np.cos(th))
                z = z0 + tt * float(tan * vx / vz)
                grid = torch.stack([z / max(cz, 0.5), y / max(c, 0.5), x / max(c, 0.5)], -1)
                smp = F.grid_sample(vol, grid[None], mode="bilinear", padding_mode="zeros",
                                    align_corners=True)[0, 0]
                out.append((smp * inside).sum(0) * float(step_cm))  # (s, z)
            lines[phi] = torch.stack(out)  # (angles, s, z)
        mean3d = torch.stack([torch.exp(-v) for v in lines.values()]).mean(0)
        ratio = (mean3d / torch.exp(-lines[min(lines, key=abs)])).clamp(0.5, 2.0)
    return lines, ratio


def hardware_mu(shape, voxel_mm) -> np.ndarray:
    """μ (1/cm) of the MR head coil and table on a PET grid centred on the isocentre."""
    aff = centred_grid(shape, voxel_mm)
    x = aff[0, 0] * np.arange(shape[0]) + aff[0, 3]
    y = aff[1, 1] * np.arange(shape[1]) + aff[1, 3]
    xx, yy = np.meshgrid(x, y, indexing="ij")
    rx, ry = COIL_RADIUS_MM
    r_in = np.sqrt((xx / rx) ** 2 + (yy / ry) ** 2)
    r_out = np.sqrt((xx / (rx + COIL_WALL_MM)) ** 2 + (yy / (ry + COIL_WALL_MM)) ** 2)
    coil = (r_in >= 1.0) & (r_out < 1.0)
    table = (yy <= TABLE_Y_MM) & (yy > TABLE_Y_MM - TABLE_THICKNESS_MM)
    sl = np.where(coil, COIL_MU, 0.0) + np.where(table & ~coil, TABLE_MU, 0.0)
    return np.repeat(sl[:, :, None], shape[2], axis=2).astype(np.float32)


@cache
def _gauss_matrix(n: int, sigma: float) -> np.ndarray:
    """``(n, n)`` Gaussian blur matrix; what leaves the ends is lost (not renormalised)."""
    d = np.arange(n)[:, None] - np.arange(n)[None, :]
    g = np.exp(-0.5 * (d / sigma) ** 2) / (np.sqrt(2 * np.pi) * sigma)
    return g.astype(np.float32)


def scatter_projection(emission, af, sigma_bins: float, sigma_slices: float,
                       eta: float = SCATTER_ETA) -> np.ndarray:
    """Smooth scatter projections ``eta * G * [emission * (1 - af)]`` (see SCATTER_ETA).

    ``emission``: unattenuated emission projections ``(n_angles, n, nz)``; ``af`` their
    attenuation factors.  ``G``: Gaussian along the bins and the slices (scatter leaving
    the field of view is lost).

    >>> e = np.zeros((4, 64, 8), np.float32); e[:, 28:36] = 1.0
    >>> s = scatter_projection(e, np.full_like(e, 0.5), 10.0, 2.0)
    >>> bool(s[0, 32, 4] > s[0, 5, 4] > 0)
    True
    """
    removed = np.asarray(emission, dtype=np.float32) * (1.0 - np.asarray(af, np.float32))
    n_ang, n, nz = removed.shape
    # two large matrix products (bins, then slices) rather than one per angle
    flat = np.ascontiguousarray(removed.transpose(1, 0, 2)).reshape(n, n_ang * nz)
    s = (_gauss_matrix(n, round(float(sigma_bins), 4)) @ flat).reshape(n, n_ang, nz)
    if nz > 1:
        s = (s.reshape(n * n_ang, nz) @ _gauss_matrix(nz, round(float(sigma_slices), 4)).T
             ).reshape(n, n_ang, nz)
    return np.ascontiguousarray((np.float32(eta) * s).transpose(1, 0, 2), dtype=np.float32)


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


def decay_factor(start_min, duration_min, half_life_min):
    """Mean fraction of the activity left over a frame, relative to the injection time.

    >>> round(float(decay_factor(0.0, 1e-6, 20.0)), 4)
    1.0
    """
    lam = np.log(2) / half_life_min
    start = np.asarray(start_min, float)
    dur = np.asarray(duration_min, float)
    return np.exp(-lam * start) * (1 - np.exp(-lam * dur)) / (lam * dur)
