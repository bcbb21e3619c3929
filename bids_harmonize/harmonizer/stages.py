"""The loss of each training stage, on one batch of patches (the maths is in :mod:`.losses`).

- stage 1: bone-weighted L1 of the CT autoencoder's reconstruction;
- stage 2: patch-wise InfoNCE + cosine of MRI tokens to the frozen CT tokens, plus L1 of
  the pseudo attenuation decoded by the frozen CT decoder;
- stage 3: log-domain voxel L1, regional log bias, regional pattern (the regional log bias
  with the patch's common scale removed, as SUVR removes it) and smoothness of ``r``.

Each function returns ``(loss, parts)`` with ``parts`` a dict of floats for the log.
"""

from __future__ import annotations

PET_EPS = 0.05  #: added to brain-mean normalised PET before taking logs
BONE_NORM_MU = 1.1  #: normalised mu above which stage 1 weights a voxel as bone
BONE_WEIGHT = 4.0  #: extra L1 weight of bone voxels in stage 1 (bone drives attenuation)


def stage1_loss(trained, batch):
    """Bone-weighted L1 of the CT reconstruction."""
    mu = batch["mu"]
    recon, _ = trained(mu)
    weight = 1.0 + BONE_WEIGHT * (mu > BONE_NORM_MU).float()
    return (weight * (recon.float() - mu).abs()).mean(), {}


def stage2_loss(net, batch, config, trained):
    """Contrastive alignment of MRI tokens to the frozen CT tokens, plus pseudo-CT L1."""
    import torch

    from .losses import cosine_distance, masked_l1, patch_info_nce

    with torch.no_grad():
        ct_tokens = net.ct_autoencoder.encode(batch["mu"])
    mri_tokens = trained(batch["t1w"])
    nce = patch_info_nce(mri_tokens, ct_tokens, config.loss.temperature)
    cos = cosine_distance(mri_tokens, ct_tokens)
    pseudo = masked_l1(net.ct_autoencoder.decode(mri_tokens), batch["mu"])
    loss = nce + config.loss.cosine_weight * cos + config.loss.pseudo_ct_weight * pseudo
    return loss, {
        "nce": float(nce.detach()),
        "cos": float(cos.detach()),
        "pseudo_ct": float(pseudo.detach()),
    }


def stage3_terms(r, batch, config, n_labels):
    """Stage-3 loss terms from a log-ratio patch ``r`` (also used by the benchmark)."""
    import torch

    from .losses import log_l1, regional_bias_and_pattern, smoothness

    pet, target = batch["pet"], batch["target"]
    log_h = torch.log(pet + PET_EPS) + r
    voxel = log_l1(log_h, target, batch["mask"], PET_EPS)
    regional, pattern = regional_bias_and_pattern(pet * torch.exp(r), target, batch["labels"],
                                                  n_labels)
    smooth = smoothness(r)
    lw = config.loss
    loss = lw.voxel_weight * voxel + lw.regional_weight * regional + lw.smooth_weight * smooth
    parts = {
        "voxel": float(voxel.detach()),
        "regional": float(regional.detach()),
        "smooth": float(smooth.detach()),
    }
    if lw.pattern_weight > 0:
        loss = loss + lw.pattern_weight * pattern
        parts["pattern"] = float(pattern.detach())
    return loss, parts


def voxel_inputs(batch, config):
    """The correction net's voxel channels stacked in the configured order ``(B, C, ...)``."""
    import torch

    from .config import stage3_channels

    return torch.cat([batch[c.name] for c in stage3_channels(config.correction, route="voxel")], dim=1)


def stage3_loss(net, batch, config, trained, n_labels):
    """Stage-3 loss of the correction net ``trained`` with the anatomy stages frozen."""
    import torch

    x = voxel_inputs(batch, config)
    if config.correction.use_anatomy:
        with torch.no_grad():
            tokens, pseudo_mu = net.anatomy(batch["t1w"])
        r = trained(x, tokens, pseudo_mu)
    else:
        r = trained(x)
    return stage3_terms(r.float(), batch, config, n_labels)
