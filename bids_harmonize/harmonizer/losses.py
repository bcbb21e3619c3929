"""Losses of the three stages.

>>> import torch
>>> a = torch.randn(2, 8, 2, 2, 2)
>>> float(patch_info_nce(a, a, temperature=0.05)) < float(patch_info_nce(a, a.flip(0), 0.05))
True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None):
    """Mean absolute error, inside ``mask`` when given (weights in [0, 1])."""
    err = (pred - target).abs()
    if mask is None:
        return err.mean()
    return (err * mask).sum() / mask.sum().clamp_min(1.0)


def patch_info_nce(mri_tokens: torch.Tensor, ct_tokens: torch.Tensor, temperature: float = 0.1):
    """Patch-wise InfoNCE between two token grids ``(B, C, g, g, g)``.

    The positive of an MRI token is the CT token at the same location of the same patch;
    negatives are every other location of every patch in the batch (other subjects
    included). Symmetric (MRI->CT and CT->MRI), cosine similarity over ``temperature``.
    """
    m = F.normalize(mri_tokens.flatten(2).transpose(1, 2).reshape(-1, mri_tokens.shape[1]), dim=1)
    c = F.normalize(ct_tokens.flatten(2).transpose(1, 2).reshape(-1, ct_tokens.shape[1]), dim=1)
    logits = m @ c.t() / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def cosine_distance(a: torch.Tensor, b: torch.Tensor):
    """Mean ``1 - cos`` between token grids along the channel axis."""
    return (1.0 - F.cosine_similarity(a, b, dim=1)).mean()


def log_l1(harmonized_log: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, eps: float):
    """L1 between ``log(harmonized)`` (given in the log domain) and ``log(target + eps)``."""
    return masked_l1(harmonized_log, torch.log(target.clamp_min(0) + eps), mask)


def _regional_log_ratios(harmonized, target, labels, n_labels: int, min_voxels: float):
    """``log(mean_harmonized / mean_target)`` per patch and label ``(B, L)``, and which of
    them count (at least ``min_voxels`` voxels in the patch, positive target)."""
    b = harmonized.shape[0]
    onehot = F.one_hot(labels.long().flatten(1).clamp_min(0), n_labels + 1).to(harmonized.dtype)
    onehot = onehot[..., 1:]  # (B, V, L), background dropped
    counts = onehot.sum(1)  # (B, L)
    sum_h = torch.einsum("bv,bvl->bl", harmonized.reshape(b, -1), onehot)
    sum_t = torch.einsum("bv,bvl->bl", target.reshape(b, -1), onehot)
    valid = (counts >= min_voxels) & (sum_t > 0)
    ratio = torch.log(sum_h.clamp_min(1e-6) / sum_t.clamp_min(1e-6))
    return ratio, valid


def _mean_abs(ratio, valid, centred: bool, like):
    """Mean ``|ratio|`` over the valid entries; ``centred``: each patch's ratios minus their
    mean over its valid regions, patches with fewer than two regions left out."""
    if centred:
        n = valid.sum(1, keepdim=True)
        keep = (n >= 2).expand_as(valid) & valid
        if not bool(keep.any()):
            return like.sum() * 0.0
        mean = (ratio * valid).sum(1, keepdim=True) / n.clamp_min(1)
        return (ratio - mean).abs()[keep].mean()
    if not bool(valid.any()):
        return like.sum() * 0.0
    return ratio.abs()[valid].mean()


def regional_log_bias(
    harmonized: torch.Tensor,
    target: torch.Tensor,
    labels: torch.Tensor,
    n_labels: int,
    min_voxels: float = 8.0,
    centred: bool = False,
):
    """Mean ``|log(mean_harmonized / mean_target)|`` over the regions present in each patch.

    ``labels`` is an integer map ``(B, 1, ...)``; 0 is background (ignored). A region counts
    when it has at least ``min_voxels`` voxels in the patch. ``centred``: the log ratios of
    a patch minus their mean over its regions, so that a common scale factor costs nothing
    and only the regional pattern counts, as in SUVR, where the reference region divides
    every region (patches with fewer than two regions give nothing).

    >>> lab = torch.zeros(1, 1, 4, 4, 4, dtype=torch.long); lab[..., :2] = 1; lab[..., 2:] = 2
    >>> t = torch.ones(1, 1, 4, 4, 4)
    >>> round(float(regional_log_bias(1.1 * t, t, lab, 2)), 4)
    0.0953
    >>> float(regional_log_bias(1.1 * t, t, lab, 2, centred=True))
    0.0
    """
    ratio, valid = _regional_log_ratios(harmonized, target, labels, n_labels, min_voxels)
    return _mean_abs(ratio, valid, centred, harmonized)


def regional_bias_and_pattern(harmonized, target, labels, n_labels: int, min_voxels: float = 8.0):
    """:func:`regional_log_bias` plain and centred from one pass over the labels (the
    stage-3 loss needs both every step)."""
    ratio, valid = _regional_log_ratios(harmonized, target, labels, n_labels, min_voxels)
    return (_mean_abs(ratio, valid, False, harmonized),
            _mean_abs(ratio, valid, True, harmonized))


def smoothness(r: torch.Tensor):
    """Mean squared finite-difference gradient of ``r`` (a first-order smoothness prior)."""
    total = r.new_zeros(())
    for dim in range(2, r.ndim):
        total = total + torch.diff(r, dim=dim).pow(2).mean()
    return total
