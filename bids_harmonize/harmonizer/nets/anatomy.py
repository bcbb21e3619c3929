"""Stage 1 and 2 nets: a 3-D ViT encoder (MONAI blocks) and the CT autoencoder around it.

The encoder is MONAI's ``PatchEmbeddingBlock`` followed by ``TransformerBlock``s, as in
``monai.networks.nets.ViTAutoEnc``; its tokens, reshaped to the token grid, are the
anatomy representation. ``ViTAutoEnc`` itself is not used because it needs square-number
patch sizes (4, 16) and does not expose an encode/decode split.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock
from torch import nn


class ViTEncoder(nn.Module):
    """Patch embedding + transformer blocks: image patch -> token grid.

    Args:
        spatial_dims: number of spatial dimensions (3).
        in_channels: input channels.
        img_size: edge of the cubic input patch, voxels.
        patch_size: edge of a token, voxels.
        hidden_size, mlp_dim, num_layers, num_heads: transformer size.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        img_size: int = 32,
        patch_size: int = 8,
        hidden_size: int = 96,
        mlp_dim: int = 192,
        num_layers: int = 2,
        num_heads: int = 4,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.spatial_dims = spatial_dims
        self.grid = (img_size // patch_size,) * spatial_dims
        self.hidden_size = hidden_size
        self.patch_embedding = PatchEmbeddingBlock(
            in_channels=in_channels,
            img_size=img_size,
            patch_size=patch_size,
            hidden_size=hidden_size,
            num_heads=num_heads,
            proj_type="conv",
            spatial_dims=spatial_dims,
        )
        self.blocks = nn.ModuleList(
            [TransformerBlock(hidden_size, mlp_dim, num_heads) for _ in range(num_layers)]
        )
        for block in self.blocks:  # MONAI builds a cross-attention norm even when unused:
            if hasattr(block, "norm_cross_attn"):  # drop it so DDP sees no unused parameters
                block.norm_cross_attn = nn.Identity()
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S, S)`` -> token grid ``(B, hidden, S/p, S/p, S/p)``."""
        tokens = self.patch_embedding(x)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        d, h, w = self.grid
        return rearrange(tokens, "b (d h w) c -> b c d h w", d=d, h=h, w=w)


class TokenDecoder(nn.Module):
    """Token grid -> image: transposed convolutions doubling the resolution ``log2(p)`` times.

    Channels halve at each step from ``channels * 2**(steps-1)`` down to ``channels``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        hidden_size: int = 96,
        patch_size: int = 8,
        out_channels: int = 1,
        channels: int = 16,
    ) -> None:
        super().__init__()
        steps = int(round(math.log2(patch_size)))
        if 2**steps != patch_size:
            raise ValueError(f"patch_size must be a power of two, got {patch_size}")
        layers: list[nn.Module] = []
        c_in = hidden_size
        for i in range(steps):
            c_out = channels * 2 ** (steps - 1 - i)
            layers += [nn.ConvTranspose3d(c_in, c_out, kernel_size=2, stride=2), nn.GELU()]
            c_in = c_out
        layers.append(nn.Conv3d(c_in, out_channels, kernel_size=3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, hidden, g, g, g)`` -> ``(B, out_channels, g*p, g*p, g*p)``."""
        return self.layers(tokens)


class CTAutoEncoder(nn.Module):
    """Stage 1: reconstructs normalised 511 keV attenuation from CT patches.

    ``forward(x)`` takes ``(B, in_channels, S, S, S)`` and returns
    ``(reconstruction (B, out_channels, S, S, S), tokens (B, hidden, S/p, S/p, S/p))``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 1,
        img_size: int = 32,
        patch_size: int = 8,
        hidden_size: int = 96,
        mlp_dim: int = 192,
        num_layers: int = 2,
        num_heads: int = 4,
        decoder_channels: int = 16,
    ) -> None:
        super().__init__()
        self.encoder = ViTEncoder(
            spatial_dims,
            in_channels,
            img_size,
            patch_size,
            hidden_size,
            mlp_dim,
            num_layers,
            num_heads,
        )
        self.decoder = TokenDecoder(spatial_dims, hidden_size, patch_size, out_channels, decoder_channels)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(tokens)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.encoder(x)
        return self.decoder(tokens), tokens


def build_ct_autoencoder(cfg) -> CTAutoEncoder:
    """The CT autoencoder of an :class:`~bids_harmonize.harmonizer.config.AnatomyConfig`."""
    return CTAutoEncoder(
        img_size=cfg.roi_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.hidden_size,
        mlp_dim=cfg.mlp_dim,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        decoder_channels=cfg.decoder_channels,
    )


def build_mri_encoder(cfg) -> ViTEncoder:
    """The stage-2 MRI encoder: same token grid and width as the CT encoder."""
    return ViTEncoder(
        img_size=cfg.roi_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.hidden_size,
        mlp_dim=cfg.mlp_dim,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
    )
