"""The model grid: how an image's voxels reach the nets and come back (pure numpy).

The nets are trained and applied on one grid convention, declared here once: **RAS+ axis
order** (axis 0 left to right, axis 1 posterior to anterior, axis 2 inferior to superior,
so that axis 2 is the scanner's axial direction for the physics map) and **2 mm voxels**
(:data:`~.config.MODEL_SPACING_MM`). Training (:func:`~.data.prepare_pair`) and inference
(:func:`~.infer.harmonize_volume`) both go through :class:`ModelGrid`, so the nets never
see an image in an orientation or voxel size they were not trained on.

Why it matters: the participant workflow's T1w grid is the T1w as acquired, e.g. a
sagittal PSR volume of 2 x 2 x 2.2 mm voxels; the simulator's in-memory volumes are RAS
2 mm. A model trained on one and applied to the other sees rotated anatomy (its patch
features and position embeddings do not rotate with it), and slices the physics map along
the left-right axis instead of the axial one: the vertical stripes of the demo's correction
map (issue 19).

Reorienting is exact (axis permutations and flips, no interpolation); only a voxel size
other than 2 mm is resampled (linear for images, nearest for masks and labels).

>>> import numpy as np
>>> psr = np.array([[0, 0, 2, 0], [-2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1]], float)
>>> g = ModelGrid.from_affine((3, 4, 5), psr)  # a sagittal T1w: axes P, S, R
>>> g.model_shape, g.axcodes
((5, 3, 4), ('P', 'S', 'R'))
>>> x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
>>> bool(np.array_equal(g.from_model(g.to_model(x)), x))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import MODEL_SPACING_MM

#: relative voxel-size difference under which an image counts as on the model's 2 mm grid
SPACING_TOLERANCE = 0.02
_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


def _zoom(array, factors, order):
    from scipy import ndimage

    return ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=True)


@dataclass(frozen=True)
class ModelGrid:
    """The map between an image grid and the model grid (RAS+, 2 mm).

    Build it with :meth:`from_affine` (an image's affine: orientation and voxel size) or
    :meth:`from_spacing` (an array known to be RAS+ already).
    """

    shape: tuple[int, ...]  #: the image's 3-D shape
    ornt: tuple[tuple[float, float], ...]  #: nibabel orientation of the image's axes
    spacing_ras: tuple[float, float, float]  #: voxel size (mm) along R, A, S

    @classmethod
    def from_affine(cls, shape, affine) -> ModelGrid:
        from nibabel.affines import voxel_sizes
        from nibabel.orientations import io_orientation

        affine = np.asarray(affine, dtype=float)
        ornt = io_orientation(affine)
        sizes = voxel_sizes(affine)
        ras = [0.0, 0.0, 0.0]
        for axis, (target, _) in enumerate(ornt):
            ras[int(target)] = float(sizes[axis])
        return cls(tuple(int(s) for s in shape[:3]), tuple(map(tuple, ornt.tolist())), tuple(ras))

    @classmethod
    def from_spacing(cls, shape, spacing=None) -> ModelGrid:
        """An array in RAS+ order; ``spacing`` ``None`` means 2 mm voxels."""
        spacing = (MODEL_SPACING_MM,) * 3 if spacing is None else tuple(float(s) for s in spacing[:3])
        return cls(tuple(int(s) for s in shape[:3]), tuple(map(tuple, _RAS.tolist())), spacing)

    @property
    def axcodes(self) -> tuple[str, ...]:
        from nibabel.orientations import ornt2axcodes

        return tuple(ornt2axcodes(np.asarray(self.ornt)))

    @property
    def reoriented(self) -> bool:
        return not np.array_equal(np.asarray(self.ornt), _RAS)

    @property
    def factors(self) -> tuple[float, float, float] | None:
        """Zoom factors from the RAS+ array to 2 mm (``None``: already 2 mm)."""
        spacing = np.asarray(self.spacing_ras)
        if np.all(np.abs(spacing - MODEL_SPACING_MM) <= SPACING_TOLERANCE * MODEL_SPACING_MM):
            return None
        return tuple(float(v) for v in spacing / MODEL_SPACING_MM)

    @property
    def ras_shape(self) -> tuple[int, int, int]:
        out = [0, 0, 0]
        for axis, (target, _) in enumerate(self.ornt):
            out[int(target)] = self.shape[axis]
        return tuple(out)

    @property
    def model_shape(self) -> tuple[int, int, int]:
        if self.factors is None:
            return self.ras_shape
        return tuple(int(round(n * f)) for n, f in zip(self.ras_shape, self.factors, strict=True))

    def describe(self) -> str | None:
        """One line for the notes when the grid is not the model's, else ``None``."""
        parts = []
        if self.reoriented:
            parts.append(f"reoriented {''.join(self.axcodes)} -> RAS")
        if self.factors is not None:
            parts.append("resampled " + " x ".join(f"{v:.3g}" for v in self.spacing_ras) + " mm -> 2 mm")
        return ("model grid: " + ", ".join(parts) + " (and back)") if parts else None

    def to_model(self, array, order: int = 1) -> np.ndarray:
        """An array of the image grid on the model grid (``order`` 0 for masks and labels)."""
        from nibabel.orientations import apply_orientation

        out = np.ascontiguousarray(apply_orientation(np.asarray(array), np.asarray(self.ornt)))
        if self.factors is not None:
            out = _zoom(out, self.factors, order)
        return out

    def from_model(self, array, order: int = 1) -> np.ndarray:
        """An array of the model grid back on the image grid (shape :attr:`shape`)."""
        from nibabel.orientations import apply_orientation, ornt_transform

        out = np.asarray(array)
        if self.factors is not None:
            ras = self.ras_shape
            back = [s / n for s, n in zip(ras, out.shape, strict=True)]
            out = _zoom(out, back, order)[tuple(slice(0, s) for s in ras)]
            pad = [(0, s - n) for s, n in zip(ras, out.shape, strict=True)]
            if any(p[1] for p in pad):
                out = np.pad(out, pad, mode="edge")
        back_ornt = ornt_transform(_RAS, np.asarray(self.ornt))
        return np.ascontiguousarray(apply_orientation(out, back_ornt))
