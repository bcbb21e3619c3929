"""Per-subject head model: deformed template brain plus a generated head.

The subject lives on the *reference anatomy grid* (:func:`template.padded_grid`).
A smooth random deformation (global scaling, low-frequency displacement, ventricle
enlargement) maps each subject voxel to template coordinates, where the nilearn
GM/WM maps, the synth labels and the distance to the intracranial cavity are
sampled.  Around the brain the head is built in layers of the (subject) distance
to the cavity: inner table, diploe and outer table of the skull (thickness varies
with position and subject: thin temporal squama, thick occipital crest and
protuberance), periosteum/temporal muscle, subcutaneous fat, skin.  Face, sinuses
(frontal, sphenoid, maxillary), nasal cavity, orbits, mastoid air cells, the skull
base around the posterior fossa (petrous pyramids, clivus, occipital condyles, atlas),
palate and cervical spine are (possibly turned) ellipsoids in template coordinates,
so they deform with the subject.

Tissues are kept as partial-volume fractions (``Anatomy.fractions``, summing to 1);
CT, T1w and attenuation maps are linear mixtures of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from bids_harmonize.synth import template as tpl

LOGGER = logging.getLogger(__name__)

CLASSES = ("air", "fat", "soft", "GM", "WM", "CSF", "cortical_bone", "diploe", "eye")

#: Hounsfield units of the classes (bone values are drawn per subject).
HU = {"air": -1000.0, "fat": -100.0, "soft": 40.0, "GM": 38.0, "WM": 28.0, "CSF": 8.0,
      "cortical_bone": 1500.0, "diploe": 450.0, "eye": 10.0}

#: T1-weighted signal (arbitrary units) of the classes.
T1 = {"air": 0.0, "fat": 0.95, "soft": 0.33, "GM": 0.52, "WM": 0.85, "CSF": 0.10,
      "cortical_bone": 0.02, "diploe": 0.55, "eye": 0.10}

CENTRE = np.array([0.0, -18.0, 0.0])

#: Range of the petrous bone's CT number (HU): the otic capsule is the densest bone of the
#: body, around 2000 HU and above at 120 kVp (an assumption of that order).
PETROUS_HU = (1900.0, 2300.0)


@dataclass
class Anatomy:
    """One subject's head on the reference grid (see module docstring)."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    fractions: dict[str, np.ndarray]
    labels: np.ndarray
    region: np.ndarray  # nearest grey-matter label of every brain voxel (for partial volume)
    masks: dict[str, np.ndarray]  # internal_air, mastoid, meninges, choroid, head, ...
    hu: np.ndarray  # noiseless CT (HU)
    params: dict = field(default_factory=dict)

    @property
    def brain_mask(self) -> np.ndarray:
        return self.labels > 0


def _frac_interval(d, lo, hi, h):
    """Fraction of a voxel of width ``h`` centred at distance ``d`` lying in ``[lo, hi]``."""
    return np.clip((np.minimum(hi, d + h / 2) - np.maximum(lo, d - h / 2)) / h, 0.0, 1.0)


def _soft_ellipsoid(x, y, z, centre, radii, h, yaw_deg=0.0, pitch_deg=0.0):
    """Approximate voxel coverage of an ellipsoid (mm coordinates, voxel width ``h``).

    ``yaw_deg`` turns the ellipsoid's first axis from +x towards +y (about z),
    then ``pitch_deg`` turns its second axis from +y towards +z (about its first axis).
    """
    cx, cy, cz = centre
    rx, ry, rz = radii
    dx, dy, dz = x - cx, y - cy, z - cz
    if yaw_deg:
        c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
        dx, dy = c * dx + s * dy, c * dy - s * dx
    if pitch_deg:
        c, s = np.cos(np.radians(pitch_deg)), np.sin(np.radians(pitch_deg))
        dy, dz = c * dy + s * dz, c * dz - s * dy
    q = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2 + (dz / rz) ** 2)
    sd = (1.0 - q) * min(radii)
    return np.clip(sd / h + 0.5, 0.0, 1.0).astype(np.float32)


def _smooth_field(rng, shape, n_waves=4, scale_mm=80.0, affine=None):
    """A smooth random field (sum of a few random plane waves), zero mean, unit-ish SD.

    Each wave is the imaginary part of a product of three 1-D complex exponentials,
    so the cost is a few multiplications per voxel.
    """
    x, y, z = tpl.mni_coordinates(shape, affine)
    out = np.zeros(shape, dtype=np.float32)
    for _ in range(n_waves):
        k = rng.normal(size=3)
        k = k / np.linalg.norm(k) * (2 * np.pi / (scale_mm * rng.uniform(0.8, 1.6)))
        phase = rng.uniform(0, 2 * np.pi)
        ex = np.exp(1j * (k[0] * x + phase)).astype(np.complex64)
        ey = np.exp(1j * k[1] * y).astype(np.complex64)
        ez = np.exp(1j * k[2] * z).astype(np.complex64)
        out += ((ex * ey) * ez).imag
    return out / np.float32(np.sqrt(n_waves / 2))


def _override(fr, weight, cls, box=(slice(None),) * 3):
    """Blend class ``cls`` into the fractions with voxel weight ``weight`` (0..1) in ``box``."""
    if not np.any(weight > 0):
        return
    keep = 1.0 - weight
    for name in CLASSES:
        fr[name][box] *= keep
    fr[cls][box] += weight


def _warp(ref, taff, xt, yt, zt):
    """Sample the padded template (GM, WM, distance, labels) at template coordinates."""
    import torch
    import torch.nn.functional as F

    shape = xt.shape
    n = ref["GM"].shape
    grid = np.empty((*shape, 3), dtype=np.float32)
    for a, coord in enumerate((xt, yt, zt)):
        grid[..., 2 - a] = (coord - np.float32(taff[a, 3])) / np.float32(2.0 * (n[a] - 1) / 2.0) \
            - np.float32(1.0)
    grid_t = torch.from_numpy(grid)[None]
    stack = np.stack([ref["GM"], ref["WM"], ref["d_out"] - np.float32(200.0)])
    with torch.no_grad():
        lin = F.grid_sample(torch.from_numpy(stack)[None], grid_t, mode="bilinear",
                            padding_mode="zeros", align_corners=True)[0].numpy()
        lab = F.grid_sample(torch.from_numpy(ref["labels"].astype(np.float32))[None, None],
                            grid_t, mode="nearest", padding_mode="zeros",
                            align_corners=True)[0, 0].numpy()
    return lin[0], lin[1], lin[2] + np.float32(200.0), lab.astype(np.int16)


def make_anatomy(rng: np.random.Generator, resolution_mm: float = 2.0,
                 *, age: float = 70.0) -> Anatomy:
    """Draw one subject's head (deterministic in the state of ``rng``)."""
    h = float(resolution_mm)
    shape, affine = tpl.padded_grid(h)
    ref = tpl.padded_template()
    _, taff = tpl.padded_grid(2.0)

    # ---- deformation: subject mm -> template mm
    scale = rng.uniform(0.88, 1.0) * rng.uniform(0.97, 1.03, size=3)
    amp = rng.uniform(1.5, 3.0)
    atrophy = float(np.clip(rng.normal(0.004 * (age - 55), 0.03), 0.0, 0.2))
    xs, ys, zs = tpl.mni_coordinates(shape, affine)
    disp = [amp * _smooth_field(rng, shape, affine=affine) for _ in range(3)]
    xt = CENTRE[0] + (xs - CENTRE[0]) / scale[0] + disp[0]
    yt = CENTRE[1] + (ys - CENTRE[1]) / scale[1] + disp[1]
    zt = CENTRE[2] + (zs - CENTRE[2]) / scale[2] + disp[2]
    # ventricle enlargement: sample the template closer to the ventricles' centres
    vent_gain = 0.15 + 1.6 * atrophy
    for cx in (-12.0, 12.0):
        dx, dy, dz = xt - cx, yt - (-8.0), zt - 14.0
        w = vent_gain * np.exp(-(dx**2 + (dy / 1.6) ** 2 + dz**2) / (2 * 14.0**2))
        xt, yt, zt = xt - w * dx, yt - w * dy, zt - w * dz
    xt, yt, zt = (np.broadcast_to(v, shape).astype(np.float32) for v in (xt, yt, zt))
    gm, wm, d_out, labels = _warp(ref, taff, xt, yt, zt)
    d_out = d_out * np.float32(np.mean(scale))

    # ---- brain tissues inside the cavity, with atrophy (cortical GM -> CSF)
    f_ic = _frac_interval(d_out, -1e4, 0.0, h).astype(np.float32)
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    near_csf = np.clip(ndimage.uniform_filter(csf, 3) * 2.5, 0, 1)
    cortical = (labels >= 1) & (labels <= 10)
    loss = np.where(cortical, atrophy * 1.5 * near_csf * gm, 0.0)
    gm = gm - loss
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    fr = {name: np.zeros(shape, dtype=np.float32) for name in CLASSES}
    fr["GM"] = (gm * f_ic).astype(np.float32)
    fr["WM"] = (wm * f_ic).astype(np.float32)
    fr["CSF"] = (csf * f_ic).astype(np.float32)

    # ---- skull and scalp layers
    ax = np.abs(xt)
    thick0 = rng.uniform(5.5, 7.5)
    regional = np.ones(shape, dtype=np.float32)
    temporal = (ax > 48) & (zt > -25) & (zt < 25) & (yt > -45) & (yt < 25)
    regional = np.where(temporal, 0.6, regional)
    regional = np.where(yt < -85, 1.3, regional)
    # occipital bone around the cerebellum (below the inion): on CT, midway between the
    # mastoid and the internal occipital protuberance, 7.98 +- 2.47 mm, against 7.04 mm
    # parietal and 8.02 mm frontal (100 adults; "Morphometric measurement of cranial
    # vault thickness: a tertiary hospital based study", Nepal), i.e. about the vault
    # mean, not the thin floor of the cerebellar fossae seen in dry skulls (Gray's
    # Anatomy).  Thickest at the external occipital protuberance, 15.4 mm (range 9-29)
    # and decreasing laterally and below the superior nuchal line (Zarghooni et al.
    # 2016, Acta Orthop Traumatol Turc 50:606, cadaveric map of the occipital bone);
    # the internal and external occipital crests run in the midline from the
    # protuberances to the foramen magnum (Gray's Anatomy, occipital bone).
    # Factors relative to this subject's vault thickness (mean ~6.5 mm): fossae 1.2
    # (~8 mm), midline crest 1.5 (~10 mm, an assumption between the fossae and the
    # protuberance), protuberance 2.3 (~15 mm).
    posterior_fossa = (zt < -12) & (yt < -45) & (ax < 60)
    regional = np.where(posterior_fossa, 1.2, regional)
    crest = (ax < 10) & (yt < -50) & (zt < -12) & (zt > -64)
    regional = np.where(crest, 1.5, regional)
    inion = ((xt / 18.0) ** 2 + ((yt + 96.0) / 14.0) ** 2 + ((zt + 14.0) / 12.0) ** 2) < 1.0
    regional = np.where(inion, 2.3, regional)
    regional = ndimage.gaussian_filter(regional, 6.0 / h)
    thickness = thick0 * regional * (1.0 + 0.15 * _smooth_field(rng, shape, affine=affine))
    thickness = np.clip(thickness, 2.5, 16.0)
    t_in = 0.25 * thickness
    t_dip = 0.45 * thickness
    fr["cortical_bone"] = (_frac_interval(d_out, 0.0, t_in, h)
                           + _frac_interval(d_out, t_in + t_dip, thickness, h)).astype(np.float32)
    fr["diploe"] = _frac_interval(d_out, t_in, t_in + t_dip, h).astype(np.float32)
    muscle = 1.5 + np.where(temporal & (zt < 20), 7.0, 0.0)
    muscle = ndimage.gaussian_filter(muscle.astype(np.float32), 4.0 / h)
    fat_t = rng.uniform(2.0, 5.0)
    s0 = thickness
    fr["soft"] = (_frac_interval(d_out, s0, s0 + muscle, h)
                  + _frac_interval(d_out, s0 + muscle + fat_t, s0 + muscle + fat_t + 2.0, h)
                  ).astype(np.float32)
    fr["fat"] = _frac_interval(d_out, s0 + muscle, s0 + muscle + fat_t, h).astype(np.float32)

    # ---- face, neck, sinuses, orbits (template-coordinate ellipsoids, soft edges)
    margin = 4.5 * amp + 2 * h + 6.0

    def box(centre, radii, turned=False):
        if turned:  # a turned ellipsoid fits in the sphere of its largest radius
            radii = (max(radii),) * 3
        sl = []
        for a in range(3):
            lo = CENTRE[a] + (centre[a] - radii[a] - margin - CENTRE[a]) * scale[a]
            hi = CENTRE[a] + (centre[a] + radii[a] + margin - CENTRE[a]) * scale[a]
            i0 = int(np.clip(np.floor((lo - affine[a, 3]) / h), 0, shape[a]))
            i1 = int(np.clip(np.ceil((hi - affine[a, 3]) / h) + 1, 0, shape[a]))
            sl.append(slice(i0, i1))
        return tuple(sl)

    def ell(centre, radii, bx=None, turn=(0.0, 0.0)):
        bx = bx or box(centre, radii, any(turn))
        return _soft_ellipsoid(xt[bx], yt[bx], zt[bx], centre, radii, h, *turn)

    def put(centre, radii, cls, factor=None, bx=None, turn=(0.0, 0.0)):
        bx = bx or box(centre, radii, any(turn))
        w = ell(centre, radii, bx, turn) * away[bx]
        if factor is not None:
            w = w * factor
        _override(fr, w, cls, bx)
        return bx, w

    outside_skull = np.clip((d_out - thickness) / h + 0.5, 0, 1).astype(np.float32)
    whole = (slice(None),) * 3
    face = np.maximum(ell((0, 48, -58), (58, 62, 48), whole), ell((0, 92, -48), (13, 22, 24),
                                                                  whole))
    neck = ell((0, -20, -110), (58, 62, 60), whole)
    body = np.maximum(face, neck) * outside_skull
    face_core = np.maximum(ell((0, 48, -58), (52, 56, 42), whole),
                           ell((0, -20, -110), (52, 56, 54), whole))
    _override(fr, body * (1 - face_core), "fat")
    _override(fr, body * face_core, "soft")
    away = np.clip((d_out - 1.0) / h + 0.5, 0, 1).astype(np.float32)  # not in the cavity

    # orbits: fat with the globe inside; bony walls
    for sx in (-1, 1):
        bx = box((sx * 31, 56, -36), (19, 20, 16))
        put((sx * 31, 56, -36), (19, 20, 16), "cortical_bone", bx=bx)
        put((sx * 31, 56, -36), (17, 18, 14), "fat", bx=bx)
        put((sx * 31, 62, -36), (11.5, 11.5, 11.5), "eye", bx=bx)
    # cervical spine with its canal
    bx = box((0, -40, -112), (16, 16, 46))
    put((0, -40, -112), (16, 16, 46), "cortical_bone", bx=bx)
    put((0, -40, -112), (12, 12, 46), "diploe", bx=bx)
    # hard palate and mandible
    put((0, 48, -70), (26, 30, 3.5), "cortical_bone")
    for sx in (-1, 1):
        put((sx * 40, 20, -96), (8, 40, 12), "cortical_bone")
    # petrous bone (dense) and mastoid air cells (honeycomb of air and bone)
    masks = {}
    # petrous pyramid: from the apex beside the clivus posterolaterally to its base at the
    # mastoid, its long axis about 45 deg to the midsagittal plane, about 5 cm long and
    # 2 cm across (Gray's Anatomy, temporal bone); the posterior surface is the anterior
    # wall of the cerebellar fossa.  Centre and radii an assumption of that size.
    petrous = np.zeros(shape, dtype=np.float32)
    for sx in (-1, 1):
        bx, w = put((sx * 31, -25, -35), (25, 9, 9), "cortical_bone", turn=(-sx * 42.0, 0.0))
        petrous[bx] = np.maximum(petrous[bx], w)
    # clivus (basisphenoid and basiocciput): a bony plate in front of the pons and medulla,
    # from the dorsum sellae down to the basion: length 45.7 mm (men) and 41.6 mm (women)
    # on CBCT (Caspian J Dent Res 2021, clivus anthropometry in 130 adults), 39.9 mm in
    # dry skulls (Thieme J Neurol Surg B, sella turcica and clivus in 35 skulls), inner
    # surface about 24 mm broad (Kumaran & Babu, J Res Med Dent Sci, 30 skulls); here
    # 45 x 24 mm, inclined ~56 deg to the horizontal along the template's prepontine
    # wall.  Thickness 12 mm (cortical shell over a cancellous core) is an assumption.
    clivus_c, clivus_r, clivus_t = (0.0, -19.5, -55.0), (12.0, 22.5, 6.0), (0.0, 56.0)
    bx = box(clivus_c, clivus_r, True)
    put(clivus_c, clivus_r, "cortical_bone", bx=bx, turn=clivus_t)
    put(clivus_c, tuple(r - 2.0 for r in clivus_r), "diploe", bx=bx, turn=clivus_t)
    # occipital condyles beside the front half of the foramen magnum, 21.3 mm long,
    # 10.5 mm wide, 7.4 mm high, long axes converging forwards (Thintharua & Chentanez
    # 2023, Anat Cell Biol 56(1), occipital condyle morphometry); below them the lateral
    # masses of the atlas and its posterior arch behind the spinal canal (Gray's Anatomy;
    # positions and sizes of the atlas an assumption of that order).
    for sx in (-1, 1):
        put((sx * 14, -38, -72), (5.25, 10.65, 3.7), "cortical_bone", turn=(sx * 25.0, 0.0))
        put((sx * 20, -40, -82), (8, 10, 6), "cortical_bone")
    put((0, -62, -82), (22, 5, 4), "cortical_bone")
    mastoid_mask = np.zeros(shape, dtype=bool)
    mastoid_size = rng.uniform(0.7, 1.2)
    for sx in (-1, 1):
        centre, radii = (sx * 54, -34, -44), (9 * mastoid_size, 12 * mastoid_size, 12)
        bx, w = put(centre, radii, "cortical_bone")
        _override(fr, w * 0.65, "air", bx)
        mastoid_mask[bx] |= w > 0.5
    masks["mastoid"] = mastoid_mask
    # air cavities: maxillary, frontal and sphenoid sinuses, nasal cavity (bony shells)
    air_mask = np.zeros(shape, dtype=bool)
    sinus = [((sx * 24, 46, -52), (13, 16, 15)) for sx in (-1, 1)]
    sinus += [((0, 74, 6), (18 * rng.uniform(0.5, 1.2), 6.5, 11)),
              ((0, 18, -44), (13, 11, 10)), ((0, 60, -46), (8, 30, 20))]
    for centre, radii in sinus:
        shell = tuple(r + 2.5 for r in radii)
        bx = box(centre, shell)
        w_air = ell(centre, radii, bx) * away[bx]
        w_shell = ell(centre, shell, bx) * away[bx] * (1 - w_air)
        _override(fr, w_shell, "cortical_bone", bx)
    for centre, radii in sinus:
        bx = box(centre, radii)
        w_air = ell(centre, radii, bx) * away[bx]
        _override(fr, w_air, "air", bx)
        air_mask[bx] |= w_air > 0.5
    masks["internal_air"] = air_mask

    # air outside the head
    total = sum(fr[name] for name in CLASSES if name != "air")
    fr["air"] = np.clip(1.0 - total, 0.0, 1.0).astype(np.float32)
    norm = fr["air"] + total
    for name in CLASSES:
        fr[name] = (fr[name] / np.maximum(norm, 1e-6)).astype(np.float32)

    # ---- labels, partial-volume region map, off-target locations
    labels[(fr["GM"] + fr["WM"] + fr["CSF"]) < 0.5] = 0
    grey = (labels >= 1) & (labels <= 17) | (labels >= 19) & (labels <= 20) | (labels >= 22) & (
        labels <= 23)
    idx = ndimage.distance_transform_edt(~grey, return_distances=False, return_indices=True)
    region = labels[tuple(idx)]
    masks["meninges"] = (d_out > -2.5 - h / 2) & (d_out <= 0.5) & (fr["CSF"] > 0.1)
    masks["choroid"] = (labels == tpl.LABELS["ventricles_csf"]) & (
        ((np.abs(xt) - 26) ** 2 + (yt + 38) ** 2 + (zt - 12) ** 2) <= 9.0**2)
    masks["head"] = fr["air"] < 0.5

    hu_bone = rng.uniform(1300, 1700)
    hu_dip = rng.uniform(350, 550)
    hu_vals = dict(HU, cortical_bone=hu_bone, diploe=hu_dip)
    hu = sum(fr[name] * np.float32(hu_vals[name]) for name in CLASSES).astype(np.float32)
    # the petrous temporal bone (otic capsule) is the densest bone of the skull, about
    # 2000 HU and more on CT, denser than the vault's cortical tables
    hu_petrous = rng.uniform(PETROUS_HU[0], PETROUS_HU[1])
    w_pet = np.clip(petrous, 0, 1) * fr["cortical_bone"]
    hu = (hu + w_pet * np.float32(hu_petrous - hu_bone)).astype(np.float32)
    masks["petrous"] = petrous > 0.5

    params = {
        "scale": [round(float(s), 4) for s in scale],
        "deformation_mm": round(float(amp), 3),
        "atrophy": round(atrophy, 4),
        "skull_thickness_mm": round(float(thick0), 3),
        "scalp_fat_mm": round(float(fat_t), 3),
        "bone_hu": round(float(hu_bone), 1),
        "diploe_hu": round(float(hu_dip), 1),
        "petrous_hu": round(float(hu_petrous), 1),
    }
    return Anatomy(shape=shape, affine=affine, fractions=fr, labels=labels, region=region,
                   masks=masks, hu=hu, params=params)


def t1w_image(anat: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """T1-weighted image: tissue mixture, smooth bias field, Rician noise (float32)."""
    signal = sum(anat.fractions[name] * np.float32(T1[name]) for name in CLASSES)
    bias = 1.0 + 0.12 * _smooth_field(rng, anat.shape, n_waves=3, scale_mm=250.0,
                                      affine=anat.affine)
    signal = signal * bias
    sigma = 0.02
    n1 = rng.normal(0, sigma, anat.shape).astype(np.float32)
    n2 = rng.normal(0, sigma, anat.shape).astype(np.float32)
    img = np.sqrt((signal + n1) ** 2 + n2**2)
    return (img * 1000.0).astype(np.float32)


def ct_image(anat: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """CT in HU as acquired: the tissue mixture plus a little quantum noise."""
    noise = ndimage.gaussian_filter(rng.normal(0, 8.0, anat.shape).astype(np.float32), 0.6)
    return np.clip(anat.hu + noise, -1024, 3071).astype(np.float32)
