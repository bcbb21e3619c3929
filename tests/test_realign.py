"""realign_frames recovers a known rigid motion between PET frames."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bids_harmonize.realign import realign_frames

VOXEL_MM = 4.0


def _phantom() -> np.ndarray:
    """A small brain-like PET frame: a skull-less head, a hot cortical ribbon, two hot
    striata and a cold ventricle, off-centre so that every axis is constrained."""
    x, y, z = np.meshgrid(*(np.arange(n) - c for n, c in ((28, 13.0), (32, 15.0), (26, 12.0))),
                          indexing="ij")
    r = np.sqrt((x / 10) ** 2 + (y / 12.5) ** 2 + (z / 9.5) ** 2)
    img = np.where(r < 1.0, 1.0, 0.05)
    img += np.where((r > 0.8) & (r < 1.0), 1.5, 0.0)  # cortex
    for cx in (-3, 3):  # striata
        img += 2.5 * (((x - cx) / 2.0) ** 2 + ((y + 2) / 3.0) ** 2 + (z / 2.5) ** 2 < 1)
    img -= 0.8 * ((x / 1.5) ** 2 + ((y - 3) / 4.0) ** 2 + ((z - 2) / 2.0) ** 2 < 1)
    img += 1.2 * (((x - 5) / 2.0) ** 2 + ((y - 7) / 2.0) ** 2 + ((z + 4) / 2.0) ** 2 < 1)
    return ndimage.gaussian_filter(img, 1.0).astype(np.float32)


def test_recovers_a_known_shift(tmp_path):
    base = _phantom()
    shift_vox = np.array([1.5, 0.0, -1.0])  # 6 mm along x, -4 mm along z
    moved = ndimage.shift(base, shift_vox, order=1, mode="nearest")
    data = np.stack([base, base, moved, np.zeros_like(base)], axis=-1)
    affine = np.diag([VOXEL_MM] * 3 + [1.0])

    result = realign_frames(data, affine, [0, 1, 2], seed=0, workdir=tmp_path)

    assert result.indices == [0, 1, 2]
    # frame 3 (outside the selection) is untouched; the input is not modified
    assert np.array_equal(result.frames[..., 3], data[..., 3])
    assert np.array_equal(data[..., 2], moved)
    # the motion between the two positions is the known shift, to a quarter voxel
    # (the transform maps reference points into the frame; ANTs' LPS axes flip x and y)
    relative = result.translation_mm[2] - result.translation_mm[0]
    expected = shift_vox * VOXEL_MM * np.array([-1, -1, 1])
    assert np.abs(relative - expected).max() < 1.0, relative
    assert np.linalg.norm(result.translation_mm[0] - result.translation_mm[1]) < 0.2
    assert max(result.rotation_deg) < 2.0
    # after realignment the moved frame matches the others far better than before
    inside = base > 0.5
    before = np.abs(moved - base)[inside].mean()
    after = np.abs(result.frames[..., 2] - result.frames[..., 0])[inside].mean()
    assert after < 0.35 * before, (before, after)
    assert result.motion_mm[2] == pytest.approx(np.linalg.norm(result.translation_mm[2]))


def test_nothing_to_realign_and_bad_input():
    data = np.ones((4, 4, 4, 2), np.float32)
    single = realign_frames(data, np.eye(4), [1])
    assert np.array_equal(single.frames, data) and single.motion_mm == [0.0]
    with pytest.raises(ValueError, match="4-D"):
        realign_frames(data[..., 0], np.eye(4))
    with pytest.raises(ValueError, match="outside"):
        realign_frames(data, np.eye(4), [0, 5])


def test_interface_realigns_and_records_motion(tmp_path):
    """PETStaticImage moves files around realign_frames and records each frame's motion."""
    import nibabel as nb

    from bids_harmonize.interfaces.pet import PETStaticImage

    base = _phantom()
    moved = ndimage.shift(base, (1.5, 0.0, -1.0), order=1, mode="nearest")
    path = tmp_path / "sub-01_ses-a_trc-FDG_pet.nii.gz"
    nb.Nifti1Image(np.stack([base, moved], -1), np.diag([VOXEL_MM] * 3 + [1.0])).to_filename(path)
    meta = {"FrameTimesStart": [0, 300], "FrameDuration": [300, 300], "Units": "Bq/mL"}
    node = PETStaticImage(in_file=str(path), metadata=meta, window_min=(0.0, 10.0),
                          half_life_min=109.77, realign=True, sloppy=True, seed=0)
    (tmp_path / "work").mkdir()
    result = node.run(cwd=str(tmp_path / "work"))
    info = result.outputs.info
    assert info["FrameRealignment"] is True and info["FramesUsed"] == [0, 1]
    # both frames moved half way to their mean: about 3.6 mm each (6 and 4 mm apart)
    assert info["FrameTranslationMM"] == pytest.approx([3.6, 3.6], abs=0.6)
    static = np.asarray(nb.load(result.outputs.out_file).dataobj)
    naive = (base + moved) / 2
    # the realigned average is sharper: its peak is higher than the blurred naive average's
    assert static.max() > naive.max() + 0.05
