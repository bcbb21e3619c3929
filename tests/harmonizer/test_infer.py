import numpy as np
import pytest
import torch

from bids_harmonize.harmonizer.device import DeviceError, resolve_device
from bids_harmonize.harmonizer.infer import harmonize_volume
from bids_harmonize.harmonizer.phantom import phantom_pair
from bids_harmonize.harmonizer.weights import load_model


@pytest.fixture(scope="module")
def odd_subject():
    return phantom_pair(11, shape=(21, 26, 19), tracer="PiB")


def test_odd_shape_and_determinism(tiny_model_dir, odd_subject):
    model = load_model(tiny_model_dir)
    s = odd_subject
    a = harmonize_volume(
        s.pet_mr,
        s.t1w,
        s.brain_mask,
        model,
        tracer="PiB",
        device="cpu",
        sw_batch_size=2,
        overlap=0.5,
    )
    b = harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, model, tracer="PiB", device="cpu")
    for res in (a, b):
        assert res.harmonized.shape == s.pet_mr.shape
        assert res.pseudo_ct_hu.shape == s.pet_mr.shape
        assert np.isfinite(res.harmonized).all()
        assert np.abs(res.log_ratio).max() <= model.config.correction.max_abs_log_ratio
    assert a.notes == []  # PiB was in training
    np.testing.assert_allclose(a.harmonized, s.pet_mr * np.exp(a.log_ratio), rtol=1e-5)
    c = harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, model, tracer="PiB", device="cpu")
    np.testing.assert_array_equal(b.harmonized, c.harmonized)


def test_unseen_tracer_note(tiny_model_dir, odd_subject):
    s = odd_subject
    res = harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, tiny_model_dir, tracer="FPCIT", device="cpu")
    assert any("FPCIT" in n and "unseen" in n for n in res.notes)
    res = harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, tiny_model_dir, tracer="florbetapir", device="cpu")
    assert any("family (amyloid) was" in n for n in res.notes)


def test_other_spacing_is_resampled(tiny_model_dir, odd_subject):
    s = odd_subject
    res = harmonize_volume(
        s.pet_mr, s.t1w, s.brain_mask, tiny_model_dir, device="cpu", spacing=(2.5, 2.5, 2.5)
    )
    assert res.harmonized.shape == s.pet_mr.shape
    assert any("resampled" in n for n in res.notes)


def test_bad_inputs(tiny_model_dir, odd_subject):
    s = odd_subject
    with pytest.raises(ValueError, match="one grid"):
        harmonize_volume(s.pet_mr[:-1], s.t1w, s.brain_mask, tiny_model_dir, device="cpu")
    with pytest.raises(ValueError, match="empty"):
        harmonize_volume(s.pet_mr, s.t1w, np.zeros_like(s.brain_mask), tiny_model_dir, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_clear_error():
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="must be one of"):
        resolve_device("tpu")


def test_orientation_does_not_change_the_correction(tiny_model_dir, odd_subject):
    """A sagittal (PSR) copy of the same image with its affine gets the same correction,
    voxel for voxel, as the RAS original: the nets always see the model grid (issue 19:
    the participant level's T1w grid is PSR, the training volumes were RAS)."""
    s = odd_subject
    ras_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    # PSR array: axis 0 = posterior (A flipped), axis 1 = superior, axis 2 = right
    to_psr = lambda a: np.ascontiguousarray(np.transpose(a, (1, 2, 0))[::-1])  # noqa: E731
    n_a = s.pet_mr.shape[1]
    psr_affine = np.array([[0, 0, 2.0, 0], [-2.0, 0, 0, 2.0 * (n_a - 1)], [0, 2.0, 0, 0],
                           [0, 0, 0, 1]])
    a = harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, tiny_model_dir, device="cpu",
                         affine=ras_affine)
    b = harmonize_volume(to_psr(s.pet_mr), to_psr(s.t1w), to_psr(s.brain_mask), tiny_model_dir,
                         device="cpu", affine=psr_affine)
    assert any("reoriented PSR -> RAS" in n for n in b.notes)
    np.testing.assert_allclose(b.log_ratio, to_psr(a.log_ratio), atol=1e-5)


def test_correction_stays_in_the_brain(tiny_model_dir, odd_subject):
    """Outside the brain mask dilated by the support margin and fade, r is exactly 0."""
    from scipy import ndimage

    from bids_harmonize.harmonizer.infer import SUPPORT_FADE_MM, SUPPORT_MARGIN_MM

    s = odd_subject
    res = harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, tiny_model_dir, device="cpu")
    dist_mm = 2.0 * ndimage.distance_transform_edt(~(s.brain_mask > 0.5))
    far = dist_mm > SUPPORT_MARGIN_MM + SUPPORT_FADE_MM + 0.5
    assert far.any()
    assert np.all(res.log_ratio[far] == 0)
    np.testing.assert_array_equal(res.harmonized[far], s.pet_mr[far].astype(np.float32))
