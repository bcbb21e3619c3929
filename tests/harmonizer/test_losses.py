import torch

from bids_harmonize.harmonizer.losses import (
    cosine_distance,
    masked_l1,
    patch_info_nce,
    regional_log_bias,
    smoothness,
)


def test_info_nce_prefers_aligned_tokens():
    torch.manual_seed(0)
    ct = torch.randn(2, 16, 3, 3, 3)
    aligned = patch_info_nce(ct + 0.01 * torch.randn_like(ct), ct, temperature=0.1)
    shuffled = patch_info_nce(ct.roll(1, dims=2), ct, temperature=0.1)
    assert aligned < shuffled
    assert cosine_distance(ct, ct) < 1e-6


def test_regional_bias_zero_for_identical_and_positive_for_scaled():
    img = torch.rand(1, 1, 8, 8, 8) + 0.5
    labels = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    labels[..., :4] = 1
    labels[..., 4:] = 2
    assert float(regional_log_bias(img, img, labels, 2)) < 1e-6
    biased = regional_log_bias(img * 1.1, img, labels, 2)
    assert abs(float(biased) - float(torch.log(torch.tensor(1.1)))) < 1e-4


def test_smoothness_and_masked_l1():
    assert float(smoothness(torch.ones(1, 1, 4, 4, 4))) == 0.0
    a, b = torch.zeros(1, 1, 2, 2, 2), torch.ones(1, 1, 2, 2, 2)
    mask = torch.zeros_like(a)
    mask[..., 0] = 1
    assert float(masked_l1(a, b, mask)) == 1.0
