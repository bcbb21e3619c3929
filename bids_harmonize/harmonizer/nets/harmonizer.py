"""The three stages put together for stage-3 training and inference."""

from __future__ import annotations

import torch
from torch import nn

from .anatomy import build_ct_autoencoder, build_mri_encoder
from .correction import build_correction_net


class ThreeStageHarmonizer(nn.Module):
    """CT autoencoder (stage 1), MRI encoder (stage 2), residual correction (stage 3).

    ``forward(voxel, t1w)`` takes the stacked voxel channels of the configured layout
    ``(B, C, S, S, S)`` (brain-mean normalised PET-MR first; see
    :func:`~bids_harmonize.harmonizer.config.stage3_channels`) and the brain-mean
    normalised T1w ``(B, 1, S, S, S)``, and returns ``(B, 2, S, S, S)``: channel 0 the log
    ratio ``r``, channel 1 the pseudo attenuation (mu / mu_water) decoded from MRI tokens
    by the CT decoder.
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.ct_autoencoder = build_ct_autoencoder(config.anatomy)
        self.mri_encoder = build_mri_encoder(config.anatomy)
        self.correction = build_correction_net(config.anatomy, config.correction)

    def anatomy(self, t1w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """MRI tokens ``(B, hidden, g, g, g)`` and pseudo-mu ``(B, 1, S, S, S)``."""
        tokens = self.mri_encoder(t1w)
        return tokens, self.ct_autoencoder.decode(tokens)

    def pseudo_mu(self, t1w: torch.Tensor) -> torch.Tensor:
        """Pseudo attenuation (mu / mu_water) ``(B, 1, S, S, S)`` from T1w patches."""
        return self.ct_autoencoder.decode(self.mri_encoder(t1w))

    def forward(self, voxel: torch.Tensor, t1w: torch.Tensor, anatomy=None) -> torch.Tensor:
        """``anatomy``: :meth:`anatomy` of ``t1w`` when the caller has it already (an
        ensemble shares it between its members), else computed here."""
        if self.config.correction.use_anatomy:
            tokens, pseudo_mu = anatomy if anatomy is not None else self.anatomy(t1w)
            r = self.correction(voxel, tokens, pseudo_mu)
        else:
            pseudo_mu = torch.zeros_like(voxel[:, :1])
            r = self.correction(voxel)
        return torch.cat([r, pseudo_mu], dim=1)
