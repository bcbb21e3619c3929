"""Stage 3 net: PET-MR + anatomy features -> residual log-ratio map ``r``.

``harmonized = PET-MR * exp(r)``: the correction is multiplicative, so it does not depend
on the tracer's uptake level, and the subject's own uptake pattern is kept. The net never
sees the tracer identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetResBlock
from torch import nn

NORM = ("instance", {"affine": True})


def _res_block(spatial_dims, c_in, c_out, stride, norm: str):
    """MONAI ``UnetResBlock``; ``norm="none"`` drops its instance norms.

    Without normalisation the absolute amount of bone or uptake in a patch reaches the
    output (instance norm rescales every patch to the same statistics).
    """
    block = UnetResBlock(spatial_dims, c_in, c_out, 3, stride, NORM)
    if norm == "none":
        for name in ("norm1", "norm2", "norm3"):
            if hasattr(block, name):
                setattr(block, name, nn.Identity())
    elif norm != "instance":
        raise ValueError(f"norm must be 'instance' or 'none', not {norm!r}")
    return block


class ResidualCorrectionNet(nn.Module):
    """A two-level 3-D residual U-Net with anatomy gating.

    Args:
        spatial_dims: 3.
        in_channels: voxel input channels (the configured layout,
            :func:`~bids_harmonize.harmonizer.config.stage3_channels` with route "voxel":
            the brain-mean normalised PET-MR first, then e.g. the physics map).
        out_channels: 1 (the log-ratio map).
        anatomy_in: width of the anatomy token features (the encoders' hidden size);
            0 turns the anatomy branch off (the image-to-image ablation).
        anatomy_channels: token features are projected to this many channels, upsampled to
            the voxel grid and concatenated with the pseudo attenuation map.
        channels: feature channels at full and half resolution.
        max_abs_log_ratio: ``r = m * tanh(raw / m)`` bounds the correction to ``exp(+-m)``.
        downsample: the net works on inputs average-pooled by this factor and ``r`` is
            upsampled back (trilinear): ``r`` is then low-frequency by construction (the
            attenuation error is smooth), and the net costs ``downsample**3`` times less.
            1 keeps full resolution, where ``r`` may also match the two scanners' PSFs.
        offset_channel: index of an input channel added to ``r`` at full resolution (the
            physics map ``ac_error``): the net then learns only the residual. None: off.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        anatomy_in: int = 96,
        anatomy_channels: int = 8,
        channels: tuple[int, int] = (16, 32),
        max_abs_log_ratio: float = 1.0,
        downsample: int = 2,
        norm: str = "none",
        offset_channel: int | None = None,
    ) -> None:
        super().__init__()
        if offset_channel is not None and not 0 <= offset_channel < in_channels:
            raise ValueError(f"offset_channel {offset_channel} is not one of {in_channels} input channels")
        self.offset_channel = offset_channel
        self.downsample = int(downsample)
        c0, c1 = channels
        self.use_anatomy = anatomy_in > 0
        self.max_abs = float(max_abs_log_ratio)
        self.pet_in = _res_block(spatial_dims, in_channels, c0, 1, norm)
        if self.use_anatomy:
            self.anat_proj = nn.Conv3d(anatomy_in, anatomy_channels, kernel_size=1)
            self.anat_in = _res_block(spatial_dims, anatomy_channels + 1, c0, 1, norm)
            self.gate = nn.Conv3d(c0, c0, kernel_size=3, padding=1)
            self.fuse = _res_block(spatial_dims, 2 * c0, c0, 1, norm)
        else:
            self.fuse = _res_block(spatial_dims, c0, c0, 1, norm)
        self.down = _res_block(spatial_dims, c0, c1, 2, norm)
        self.bottom = _res_block(spatial_dims, c1, c1, 1, norm)
        self.up = nn.Conv3d(c1, c0, kernel_size=1)
        self.decode = _res_block(spatial_dims, 2 * c0, c0, 1, norm)
        self.head = nn.Conv3d(c0, out_channels, kernel_size=1)
        nn.init.zeros_(self.head.weight)  # starts as the identity correction (r = 0)
        nn.init.zeros_(self.head.bias)

    def forward(
        self,
        pet: torch.Tensor,
        tokens: torch.Tensor | None = None,
        pseudo_mu: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Log-ratio map.

        Args:
            pet: ``(B, in_channels, S, S, S)``: PET-MR divided by its brain mean, then the
                other configured voxel channels.
            tokens: ``(B, hidden, g, g, g)`` MRI token features (needed when the anatomy
                branch is on).
            pseudo_mu: ``(B, 1, S, S, S)`` pseudo attenuation (normalised mu).

        Returns:
            ``(B, 1, S, S, S)`` log ratio ``r``.
        """
        full = pet.shape[2:]
        offset = None
        if self.offset_channel is not None:
            offset = pet[:, self.offset_channel : self.offset_channel + 1]
        if self.downsample > 1:
            pet = F.avg_pool3d(pet, self.downsample)
            if pseudo_mu is not None:
                pseudo_mu = F.avg_pool3d(pseudo_mu, self.downsample)
        x = self.pet_in(pet)
        if self.use_anatomy:
            if tokens is None or pseudo_mu is None:
                raise ValueError("this correction net needs anatomy tokens and pseudo-mu")
            anat = F.interpolate(
                self.anat_proj(tokens), size=pet.shape[2:], mode="trilinear", align_corners=False
            )
            anat = self.anat_in(torch.cat([anat, pseudo_mu], dim=1))
            x = self.fuse(torch.cat([x * torch.sigmoid(self.gate(anat)), anat], dim=1))
        else:
            x = self.fuse(x)
        low = self.bottom(self.down(x))
        low = F.interpolate(self.up(low), size=x.shape[2:], mode="trilinear", align_corners=False)
        raw = self.head(self.decode(torch.cat([x, low], dim=1)))
        if self.downsample > 1:
            raw = F.interpolate(raw, size=full, mode="trilinear", align_corners=False)
        if offset is not None:
            raw = raw + offset.to(raw.dtype)
        return self.max_abs * torch.tanh(raw / self.max_abs)


def build_correction_net(anatomy_cfg, correction_cfg) -> ResidualCorrectionNet:
    """The stage-3 net of a configuration (its inputs from the configured channel layout)."""
    from ..config import stage3_channels

    voxel = [c.name for c in stage3_channels(correction_cfg, route="voxel")]
    offset = voxel.index("ac_error") if "ac_error" in voxel and correction_cfg.physics_offset else None
    return ResidualCorrectionNet(
        in_channels=len(voxel),
        offset_channel=offset,
        anatomy_in=anatomy_cfg.hidden_size if correction_cfg.use_anatomy else 0,
        anatomy_channels=correction_cfg.anatomy_channels,
        channels=tuple(correction_cfg.channels),
        max_abs_log_ratio=correction_cfg.max_abs_log_ratio,
        downsample=correction_cfg.downsample,
        norm=correction_cfg.norm,
    )
