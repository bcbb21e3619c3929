import pytest
import torch

from bids_harmonize.harmonizer.nets.anatomy import CTAutoEncoder, ViTEncoder
from bids_harmonize.harmonizer.nets.correction import ResidualCorrectionNet
from bids_harmonize.harmonizer.nets.harmonizer import ThreeStageHarmonizer


def test_ct_autoencoder_shapes():
    net = CTAutoEncoder(
        img_size=16,
        patch_size=4,
        hidden_size=32,
        mlp_dim=64,
        num_layers=1,
        num_heads=2,
        decoder_channels=8,
    )
    recon, tokens = net(torch.rand(2, 1, 16, 16, 16))
    assert recon.shape == (2, 1, 16, 16, 16)
    assert tokens.shape == (2, 32, 4, 4, 4)
    assert net.decode(tokens).shape == recon.shape


def test_vit_encoder_token_grid():
    enc = ViTEncoder(img_size=32, patch_size=8, hidden_size=48, mlp_dim=96, num_layers=1, num_heads=4)
    assert enc(torch.rand(1, 1, 32, 32, 32)).shape == (1, 48, 4, 4, 4)


def test_bad_patch_size():
    with pytest.raises(ValueError, match="multiple"):
        ViTEncoder(img_size=30, patch_size=8)
    with pytest.raises(ValueError, match="power of two"):
        CTAutoEncoder(img_size=36, patch_size=9, num_heads=4)


@pytest.mark.parametrize("anatomy_in", [32, 0])
def test_correction_net_starts_at_identity(anatomy_in):
    net = ResidualCorrectionNet(anatomy_in=anatomy_in, anatomy_channels=4, channels=(8, 16))
    pet = torch.rand(2, 1, 16, 16, 16)
    tokens = torch.rand(2, 32, 4, 4, 4) if anatomy_in else None
    pmu = torch.rand(2, 1, 16, 16, 16) if anatomy_in else None
    r = net(pet, tokens, pmu)
    assert r.shape == (2, 1, 16, 16, 16)
    assert torch.count_nonzero(r) == 0  # zero-initialised head: r = 0


def test_correction_net_needs_anatomy():
    net = ResidualCorrectionNet(anatomy_in=32, channels=(8, 16))
    with pytest.raises(ValueError, match="anatomy"):
        net(torch.rand(1, 1, 16, 16, 16))


def test_three_stage_output(tiny_config):
    net = ThreeStageHarmonizer(tiny_config)
    x = torch.rand(1, 1, 16, 16, 16)
    assert net(x, x).shape == (1, 2, 16, 16, 16)
