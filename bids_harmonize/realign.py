"""Rigid realignment of PET frames (head motion during a dynamic acquisition).

:func:`realign_frames` takes the frames as an array and returns them realigned, with
each frame's rigid motion; the ``PETStaticImage`` interface only reads and writes files
around it. Each selected frame is registered rigidly (ANTs, mutual information, in
process) to the mean of the selected frames, as PETPrep's ``init_pet_hmc_wf`` does with
its reference, and resampled onto the frame grid. ANTs works on files, so the frames
pass through a scratch folder (``workdir``, or a temporary one removed afterwards).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Realignment:
    """Result of :func:`realign_frames`.

    ``frames``: 4-D array, the selected frames realigned (others unchanged);
    ``indices``: the frames realigned, in order;
    ``translation_mm``: per realigned frame, the translation of its rigid transform
    (frame -> reference, ANTs/LPS axes, mm), shape ``(len(indices), 3)``;
    ``rotation_deg``: per realigned frame, the rotation angle of that transform (degrees).
    """

    frames: np.ndarray
    indices: list[int]
    translation_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    rotation_deg: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def motion_mm(self) -> list[float]:
        """Length of each realigned frame's translation (mm)."""
        return [float(v) for v in np.linalg.norm(self.translation_mm, axis=1)]


def rigid_parameters(matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """Translation (mm) and rotation angle (degrees) of a 3x4 ANTs rigid/affine matrix.

    The translation is the transform's offset of the point that the fixed parameters
    centre on (ANTs' convention); the angle is that of the rotation part.

    >>> m = np.hstack([np.eye(3), [[1.0], [2.0], [2.0]]])
    >>> t, a = rigid_parameters(m)
    >>> t.tolist(), round(a, 6)
    ([1.0, 2.0, 2.0], 0.0)
    >>> c, s = np.cos(np.pi / 18), np.sin(np.pi / 18)
    >>> round(rigid_parameters(np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0.]]))[1], 6)
    10.0
    """
    matrix = np.asarray(matrix, dtype=float).reshape(3, 4)
    rotation = matrix[:, :3]
    cos = np.clip((np.trace(rotation) - 1.0) / 2.0, -1.0, 1.0)
    return matrix[:, 3].copy(), float(np.degrees(np.arccos(cos)))


def realign_frames(data: np.ndarray, affine: np.ndarray, indices: Sequence[int] | None = None,
                   *, sloppy: bool = False, seed: int = 0,
                   workdir: str | Path | None = None) -> Realignment:
    """Rigidly realign the frames ``indices`` of a 4-D PET series to their mean.

    Parameters
    ----------
    data
        The series, shape ``(x, y, z, frames)``; not modified.
    affine
        Voxel-to-world affine of the frames (NIfTI).
    indices
        Frames to realign (default: all). With fewer than two there is nothing to do and
        the frames come back unchanged with zero motion.
    sloppy
        Fewer iterations, coarser levels (tests, demos).
    seed
        Seed of ANTs' metric sampling: the same inputs give the same result.
    workdir
        Where the frames and transforms are written (kept); default a temporary folder.

    Returns
    -------
    :class:`Realignment`
    """
    import nibabel as nb

    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 4:
        raise ValueError(f"realign_frames needs a 4-D series, got shape {data.shape}")
    indices = list(range(data.shape[3]) if indices is None else (int(i) for i in indices))
    if any(i < 0 or i >= data.shape[3] for i in indices):
        raise ValueError(f"frame indices {indices} outside 0..{data.shape[3] - 1}")
    out = data.copy()
    if len(indices) < 2:
        return Realignment(out, indices, np.zeros((len(indices), 3)), np.zeros(len(indices)))

    from bids_harmonize.registration import apply_transforms, register_rigid

    with tempfile.TemporaryDirectory(prefix="realign-") as tmp:
        cwd = Path(workdir) if workdir is not None else Path(tmp)
        cwd.mkdir(parents=True, exist_ok=True)
        reference = cwd / "window_mean.nii.gz"
        nb.save(nb.Nifti1Image(data[..., indices].mean(-1), affine), reference)
        translations, rotations = [], []
        for frame_index in indices:
            stem = f"frame{frame_index:03d}"
            frame_file = cwd / f"{stem}.nii.gz"
            nb.save(nb.Nifti1Image(data[..., frame_index], affine), frame_file)
            reg = register_rigid(str(frame_file), str(reference), cwd, prefix=f"{stem}_",
                                 profile="frames_sloppy" if sloppy else "frames", seed=seed)
            moved = apply_transforms(str(frame_file), str(reference), reg["forward"],
                                     str(cwd / f"{stem}_moved.nii.gz"))
            out[..., frame_index] = np.asarray(nb.load(moved).dataobj, dtype=np.float32)
            translation, angle = rigid_parameters(_ants_matrix(reg["forward"][0]))
            translations.append(translation)
            rotations.append(angle)
    return Realignment(out, indices, np.asarray(translations), np.asarray(rotations))


def _ants_matrix(transform_file: str) -> np.ndarray:
    """The 3x4 matrix (rotation | translation) of an ANTs rigid/affine ``.mat`` file."""
    from bids_harmonize.registration import _ants

    ants = _ants()

    params = np.asarray(ants.read_transform(transform_file).parameters, dtype=float)
    if params.size != 12:
        raise ValueError(f"{transform_file}: expected an affine/rigid matrix transform "
                         f"(12 parameters), got {params.size}")
    return np.hstack([params[:9].reshape(3, 3), params[9:12, None]])
