"""Template space: nilearn's MNI152 2009a template, its tissue maps and the synth label map.

Everything here is computed from files that nilearn ships (no download) and cached
per process.  The *template grid* is nilearn's 2 mm MNI152NLin2009aSym grid
(99 x 117 x 95, RAS, origin -98, -134, -72 mm); the *padded grid* adds
``PAD_VOXELS_2MM`` voxels so a whole head (face, skull base, upper neck) fits.

The label map follows ``data/atlas-synth_dseg.tsv`` and is made of geometric rules
on MNI coordinates applied to the grey/white/CSF maps (see :func:`label_rules`).

>>> img = template_labels()
>>> img.shape
(99, 117, 95)
>>> sorted(set(np.unique(np.asarray(img.dataobj)).tolist()) - {0}) == list(range(1, 25))
True
"""

from __future__ import annotations

import logging
from functools import cache

import nibabel as nib
import numpy as np
from scipy import ndimage

LOGGER = logging.getLogger(__name__)

#: Voxels added to the 2 mm template grid (before, after) per axis (x, y, z).
PAD_VOXELS_2MM = ((0, 0), (0, 14), (18, 0))

#: Label indices by name (mirrors ``data/atlas-synth_dseg.tsv``).
LABELS = {
    "frontal_cortex": 1,
    "parietal_cortex": 2,
    "lateral_temporal_cortex": 3,
    "occipital_cortex": 4,
    "posterior_cingulate_precuneus": 5,
    "anterior_cingulate": 6,
    "entorhinal_cortex": 7,
    "hippocampus_parahippocampal": 8,
    "inferior_temporal_fusiform": 9,
    "insula": 10,
    "caudate_left": 11,
    "caudate_right": 12,
    "putamen_anterior_left": 13,
    "putamen_anterior_right": 14,
    "putamen_posterior_left": 15,
    "putamen_posterior_right": 16,
    "thalamus": 17,
    "cerebral_white_matter": 18,
    "superior_cerebellar_grey": 19,
    "inferior_cerebellar_grey": 20,
    "cerebellar_white_matter": 21,
    "pons": 22,
    "midbrain_medulla": 23,
    "ventricles_csf": 24,
}
CORTICAL = tuple(range(1, 11))
DEEP_GREY = tuple(range(11, 18))


@cache
def _nilearn_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """T1, GM, WM of nilearn's MNI152 2009a template at 2 mm, and the affine."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=2)
    gm = datasets.load_mni152_gm_template(resolution=2)
    wm = datasets.load_mni152_wm_template(resolution=2)
    affine = np.asarray(t1.affine, dtype=float)
    for img in (gm, wm):
        if not np.allclose(img.affine, affine) or img.shape != t1.shape:
            raise RuntimeError("nilearn's MNI152 tissue maps are not on the template grid")
    maps = [np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32) for img in (t1, gm, wm)]
    return (*maps, affine)


def template_affine() -> np.ndarray:
    """Affine of nilearn's 2 mm MNI152 2009a grid."""
    return _nilearn_maps()[3].copy()


def mni_coordinates(shape, affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World coordinates (x, y, z) of every voxel of an axis-aligned grid, float32."""
    axes = [
        (np.arange(n, dtype=np.float32) * affine[a, a] + affine[a, 3]).astype(np.float32)
        for a, n in enumerate(shape)
    ]
    return np.meshgrid(*axes, indexing="ij", sparse=True)


def _ellipsoid(x, y, z, centre, radii) -> np.ndarray:
    cx, cy, cz = centre
    rx, ry, rz = radii
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0


@cache
def template_tissues() -> dict[str, np.ndarray]:
    """Tissue maps on the template grid: ``GM``, ``WM``, ``CSF`` (probabilities),
    ``brain`` (bool: GM+WM+ventricles), ``intracranial`` (bool)."""
    t1, gm, wm, _ = _nilearn_maps()
    gm = np.clip(gm, 0, 1)
    wm = np.clip(wm, 0, 1)
    head = ndimage.binary_fill_holes(ndimage.binary_closing(t1 > 0.1, iterations=2))
    # keep the largest component
    lab, n = ndimage.label(head)
    if n > 1:
        sizes = ndimage.sum(head, lab, range(1, n + 1))
        head = lab == (1 + int(np.argmax(sizes)))
    intracranial = ndimage.binary_dilation(head, iterations=1)
    tissue = np.clip(gm + wm, 0, 1)
    scale = np.where(gm + wm > 1, 1 / np.maximum(gm + wm, 1e-6), 1.0)
    gm, wm = gm * scale, wm * scale
    csf = np.where(intracranial, 1.0 - tissue, 0.0).astype(np.float32)
    brain = (tissue >= 0.5) & intracranial
    return {
        "GM": gm.astype(np.float32),
        "WM": wm.astype(np.float32),
        "CSF": csf,
        "brain": brain,
        "intracranial": intracranial,
    }


def label_rules(x, y, z, gm, wm, csf, intracranial) -> np.ndarray:
    """Synth atlas labels from tissue maps and MNI coordinates (mm), geometric rules.

    ``x, y, z`` broadcast to the shape of the tissue maps.  Tissue = argmax of
    GM/WM/CSF inside ``intracranial``.  Rules (left = negative x):

    - cerebellum: below the tentorium ``z < -10 + (y + 50) / 3`` and ``y < -38``;
      cerebellar WM where WM dominates, grey split at ``z = -36`` (superior/inferior);
    - brainstem: ``|x| < 14``, ``-46 < y < -8``, ``z < -6``: midbrain above -20 mm,
      pons -20..-42 mm, medulla below (midbrain and medulla share label 23);
    - deep grey (ellipsoids, any GM/WM voxel): thalamus, caudate, putamen split at
      ``y = 2`` into anterior/posterior, each side;
    - cortex (GM voxels): insula, entorhinal, hippocampus/parahippocampal, cingulate
      (anterior ``y > 2``; posterior cingulate/precuneus), temporal lobe below the
      Sylvian line ``z < -0.3 y``, split into inferior temporal/fusiform
      (``z < -16`` or medial) and lateral temporal, occipital ``y < -72``,
      parietal behind the central line ``y < -16 - 0.2 (z - 40)``, frontal in front;
    - ventricles: CSF voxels within the central box (|x| < 34, -48 < y < 36,
      -14 < z < 34) that are surrounded by brain (not sulcal CSF);
    - cerebral WM: the other WM voxels.
    """
    shape = np.broadcast_shapes(gm.shape, np.shape(x), np.shape(y), np.shape(z))
    x, y, z = (np.broadcast_to(v, shape) for v in (x, y, z))
    ax = np.abs(x)
    stack = np.stack([gm, wm, csf])
    tissue = np.argmax(stack, axis=0)  # 0 GM, 1 WM, 2 CSF
    parenchyma = intracranial & (gm + wm >= 0.35)
    is_gm = parenchyma & (tissue == 0)
    is_wm = parenchyma & (tissue != 0)
    is_csf = intracranial & ~parenchyma
    labels = np.zeros(shape, dtype=np.int16)
    left = x < 0

    def side(left_label, right_label):
        return np.where(left, left_label, right_label).astype(np.int16)

    # cortex lobes
    central = -16.0 - 0.2 * (z - 40.0)
    temporal = (ax >= 26) & (y > -72) & (y < 28) & (z < -0.3 * y)
    cortex = np.full(shape, LABELS["frontal_cortex"], dtype=np.int16)
    cortex[y < central] = LABELS["parietal_cortex"]
    cortex[temporal] = LABELS["lateral_temporal_cortex"]
    cortex[temporal & ((z < -16) | (ax < 36) & (z < -8))] = LABELS["inferior_temporal_fusiform"]
    cortex[y < -72] = LABELS["occipital_cortex"]
    pcp = (ax < 15) & (((y > -52) & (y < -8) & (z > 8) & (z < 46))
                       | ((y >= -80) & (y <= -52) & (z > 16) & (z < 70)))
    cortex[pcp] = LABELS["posterior_cingulate_precuneus"]
    acc = (ax < 13) & (y >= -8) & (y < 48) & (z > -8) & (z < 36)
    cortex[acc & ~pcp] = LABELS["anterior_cingulate"]
    insula = (ax >= 27) & (ax <= 43) & (y > -30) & (y < 26) & (z > -14) & (z < 24)
    cortex[insula & (ax < 40 - 0.0 * y)] = LABELS["insula"]
    hippo = (ax >= 16) & (ax <= 38) & (y > -42) & (y < -6) & (z > -28) & (z < 2)
    cortex[hippo] = LABELS["hippocampus_parahippocampal"]
    ento = (ax >= 16) & (ax <= 32) & (y >= -24) & (y < 2) & (z > -42) & (z <= -20)
    cortex[ento & ~(hippo & (z > -20))] = LABELS["entorhinal_cortex"]
    labels[is_gm] = cortex[is_gm]
    labels[is_wm] = LABELS["cerebral_white_matter"]

    # deep grey
    tha = _ellipsoid(ax, y, z, (11, -18, 6), (10, 15, 10))
    caud = _ellipsoid(ax, y, z, (13, 10, 10), (6, 12, 9)) | _ellipsoid(
        ax, y, z, (17, -8, 20), (4, 12, 5)
    )
    put = _ellipsoid(ax, y, z, (25, 2, 1), (7, 17, 10))
    deep = parenchyma
    labels[deep & put & (y >= 2)] = side(LABELS["putamen_anterior_left"],
                                         LABELS["putamen_anterior_right"])[deep & put & (y >= 2)]
    labels[deep & put & (y < 2)] = side(LABELS["putamen_posterior_left"],
                                        LABELS["putamen_posterior_right"])[deep & put & (y < 2)]
    labels[deep & caud] = side(LABELS["caudate_left"], LABELS["caudate_right"])[deep & caud]
    labels[deep & tha] = LABELS["thalamus"]

    # cerebellum and brainstem
    cereb = (y < -38) & (z < -10 + (y + 50) / 3.0) & parenchyma
    labels[cereb & is_wm] = LABELS["cerebellar_white_matter"]
    labels[cereb & is_gm & (z >= -36)] = LABELS["superior_cerebellar_grey"]
    labels[cereb & is_gm & (z < -36)] = LABELS["inferior_cerebellar_grey"]
    stem = parenchyma & (ax < 14) & (y > -46) & (y < -8) & (z < -6)
    labels[stem & ((z >= -20) | (z < -42))] = LABELS["midbrain_medulla"]
    labels[stem & (z < -20) & (z >= -42)] = LABELS["pons"]

    # ventricles: CSF of the central box that is not connected to the brain surface
    box = (ax < 34) & (y > -48) & (y < 36) & (z > -14) & (z < 34)
    vent = is_csf & box & (ndimage.uniform_filter(parenchyma.astype(np.float32), 7) > 0.45)
    labels[vent] = LABELS["ventricles_csf"]
    return labels


@cache
def _template_labels_array() -> np.ndarray:
    t = template_tissues()
    x, y, z = mni_coordinates(t["GM"].shape, template_affine())
    labels = label_rules(x, y, z, t["GM"], t["WM"], t["CSF"], t["intracranial"])
    labels.setflags(write=False)
    return labels


@cache
def template_labels() -> nib.Nifti1Image:
    """The synth atlas (24 labels) on nilearn's 2 mm MNI152NLin2009aSym grid.

    Deterministic, computed only from nilearn's packaged files, cached per process.
    Quantification uses it as the ``synth`` atlas for data in ``MNI152NLin2009aSym``.
    """
    labels = np.array(_template_labels_array(), dtype=np.int16)
    return make_nifti(labels, template_affine())


def make_nifti(data: np.ndarray, affine: np.ndarray, *, zooms_t: float | None = None,
               xyzt_units=("mm", "sec"), intent: str | None = None) -> nib.Nifti1Image:
    """A NIfTI-1 image with a deterministic header (q/sform code 1, fixed descrip)."""
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    hdr.set_qform(affine, code=1)
    hdr.set_sform(affine, code=1)
    hdr.set_xyzt_units(*xyzt_units)
    hdr["descrip"] = b"bids_harmonize.synth"
    if zooms_t is not None and data.ndim == 4:
        hdr.set_zooms(hdr.get_zooms()[:3] + (float(zooms_t),))
    if intent:
        hdr.set_intent(intent)
    return img


def padded_grid(resolution_mm: float = 2.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the padded template grid at ``resolution_mm`` (RAS).

    The grid covers the same field as the 2 mm grid padded by ``PAD_VOXELS_2MM``.

    >>> shape, affine = padded_grid(2.0)
    >>> shape, affine[:3, 3].tolist()
    ((99, 131, 113), [-98.0, -134.0, -108.0])
    """
    base = np.array([99, 117, 95])
    pad = np.array(PAD_VOXELS_2MM)
    n2 = base + pad.sum(axis=1)
    origin = np.array([-98.0, -134.0, -72.0]) - 2.0 * pad[:, 0]
    extent = (n2 - 1) * 2.0
    n = tuple(int(v) for v in np.floor(extent / resolution_mm + 1e-6).astype(int) + 1)
    affine = np.diag([resolution_mm, resolution_mm, resolution_mm, 1.0])
    affine[:3, 3] = origin
    return n, affine


@cache
def padded_template() -> dict[str, np.ndarray]:
    """Template maps on the 2 mm padded grid: ``GM, WM, CSF, intracranial, labels,
    d_out`` (mm outside the intracranial cavity, negative inside)."""
    t = template_tissues()
    pad = PAD_VOXELS_2MM
    out = {k: np.pad(t[k], pad) for k in ("GM", "WM", "CSF")}
    intracranial = np.pad(t["intracranial"], pad)
    # spinal canal below the template's field
    shape, affine = padded_grid(2.0)
    x, y, z = mni_coordinates(shape, affine)
    canal = ((x / 7.0) ** 2 + ((y + 42) / 7.0) ** 2 <= 1.0) & (z < -62)
    intracranial = intracranial | canal
    out["CSF"] = np.where(canal & (out["GM"] + out["WM"] < 0.5), 1.0, out["CSF"]).astype(
        np.float32)
    out["intracranial"] = intracranial
    out["labels"] = np.pad(_template_labels_array(), pad)
    inside = ndimage.distance_transform_edt(intracranial, sampling=2.0)
    outside = ndimage.distance_transform_edt(~intracranial, sampling=2.0)
    out["d_out"] = (outside - inside).astype(np.float32)
    return out
