"""The physics map (expected attenuation-correction error) and physics-guided models."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from bids_harmonize.harmonizer.config import PhysicsConfig
from bids_harmonize.harmonizer.infer import harmonize_volume
from bids_harmonize.harmonizer.nets.correction import ResidualCorrectionNet
from bids_harmonize.harmonizer.phantom import phantom_pair
from bids_harmonize.harmonizer.physics import ac_error_for, expected_ac_error, setup_mu_map
from bids_harmonize.harmonizer.weights import load_model
from bids_harmonize.synth.physics import hu_to_mu


@pytest.fixture(scope="module")
def head():
    p = phantom_pair(3, shape=(40, 48, 40))
    return p, hu_to_mu(p.ct_hu)


def test_no_missing_bone_gives_no_correction(head):
    pair, mu = head
    for setup in ("dixon-bone", "zte", "atlas", "ct"):
        for activity in (None, pair.pet_mr):
            e = expected_ac_error(mu, setup_mu_map(mu, setup), activity=activity)
            assert np.abs(e).max() < 1e-6, setup


@pytest.mark.parametrize("with_activity", [False, True])
def test_dixon_without_bone_is_corrected_upwards_most_near_the_skull(head, with_activity):
    pair, mu = head
    activity = pair.pet_mr if with_activity else None
    e = expected_ac_error(mu, setup_mu_map(mu, "dixon-nobone"), activity=activity)
    brain = pair.brain_mask
    assert e[brain].min() > 0.0
    depth = ndimage.distance_transform_edt(brain)
    near, centre = e[(depth > 0) & (depth <= 2)].mean(), e[depth >= 6].mean()
    assert near > centre > 0.02  # a few % in the middle, more next to the bone
    # missing more bone gives more correction
    less_bone = np.where(mu > 0.11, 0.5 * (mu + 0.1), mu)
    e_less = expected_ac_error(less_bone, setup_mu_map(mu, "dixon-nobone"), activity=activity)
    assert e_less[brain].mean() < e[brain].mean()


def test_extra_attenuation_in_the_scanner_map_is_negative(head):
    pair, mu = head
    e = expected_ac_error(mu, mu * 1.05)
    assert e[pair.brain_mask].max() < 0.0


def test_axial_axis_and_bad_shapes(head):
    _, mu = head
    dixon = setup_mu_map(mu, "dixon-nobone")
    a = expected_ac_error(mu, dixon, axial_axis=2)
    b = expected_ac_error(np.moveaxis(mu, 2, 0), np.moveaxis(dixon, 2, 0), axial_axis=0)
    np.testing.assert_allclose(np.moveaxis(b, 0, 2), a, atol=1e-6)
    with pytest.raises(ValueError, match="one grid"):
        expected_ac_error(mu, dixon[:-1])


def test_sources_of_the_channel(head):
    _, mu = head
    cfg = PhysicsConfig()
    scanner = setup_mu_map(mu, "dixon-nobone")
    e1, s1 = ac_error_for(mu, scanner, "unknown", cfg)
    e2, s2 = ac_error_for(mu, None, "dixon-nobone", cfg)
    e3, s3 = ac_error_for(mu, None, "unknown", cfg)
    assert (s1, s2, s3) == ("scanner mu-map", "setup dixon-nobone", "none")
    np.testing.assert_allclose(e1, e2)
    assert not e3.any()
    # prefer the setup: a known setup wins over the scanner's map (here: one with bone)
    e4, s4 = ac_error_for(mu, scanner, "zte", replace(cfg, prefer="setup"))
    assert s4 == "setup zte" and not e4.any()
    assert ac_error_for(mu, scanner, "unknown", replace(cfg, prefer="setup"))[1] == "scanner mu-map"


def test_cards_without_prefer_keep_the_scanner_map():
    """A model trained before ``prefer`` existed compared the pseudo-CT with the scanner's
    map; reading its card must not switch it to the new default."""
    from bids_harmonize.harmonizer.config import HarmonizerConfig

    data = HarmonizerConfig().to_dict()
    assert data["physics"]["prefer"] == "setup"
    del data["physics"]["prefer"]
    assert HarmonizerConfig.from_dict(data).physics.prefer == "scanner"


def test_offset_channel_passes_through_at_initialisation():
    net = ResidualCorrectionNet(in_channels=2, anatomy_in=0, channels=(8, 16), offset_channel=1)
    x = torch.rand(1, 2, 16, 16, 16)
    x[:, 1] = 0.1
    r = net(x)
    torch.testing.assert_close(r, torch.tanh(x[:, 1:2]))  # max_abs 1: r = tanh(offset)
    with pytest.raises(ValueError, match="offset_channel"):
        ResidualCorrectionNet(in_channels=1, anatomy_in=0, offset_channel=1)


@pytest.fixture(scope="module")
def physics_model_dir(tmp_path_factory, phantom_pairs, tiny_config):
    from bids_harmonize.harmonizer.train import train_model

    cfg = tiny_config.replace(correction={"inputs": ("pet", "t1w", "ac_error")})
    pairs = [replace(p, ac_setup="dixon-nobone") for p in phantom_pairs]
    out = tmp_path_factory.mktemp("physics") / "v2"
    return train_model(pairs, out, cfg, device="cpu", progress=False)


def test_physics_model_card_and_inference(physics_model_dir, tiny_model_dir):
    card = json.loads((physics_model_dir / "model.json").read_text())
    assert list(card["inputs"])[:3] == ["pet", "t1w", "ac_error"]
    assert card["inputs"]["ac_error"]["required"] is False and "mu_map" in card["inputs"]
    assert card["stages"]["stage3"]["voxel_inputs"] == ["pet", "ac_error"]
    assert card["training_data"]["ac_setups"] == ["dixon-nobone"]
    model = load_model(physics_model_dir)
    s = phantom_pair(12, shape=(24, 28, 24))
    mu = hu_to_mu(s.ct_hu)
    by_map = harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, model, device="cpu",
                              mu_map=setup_mu_map(mu, "dixon-nobone"))
    by_setup = harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, model, device="cpu", ac_setup="dixon-nobone")
    bone_aware = harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, model, device="cpu", ac_setup="zte")
    nothing = harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, model, device="cpu")
    assert by_map.ac_error_source == "scanner mu-map" and by_setup.ac_error_source == "setup dixon-nobone"
    assert not bone_aware.ac_error.any()
    assert nothing.ac_error_source == "none" and any("physics map is 0" in n for n in nothing.notes)
    brain = s.brain_mask
    # the physics map enters r: more correction where the setup lacks bone
    assert by_setup.log_ratio[brain].mean() > bone_aware.log_ratio[brain].mean() + 0.01
    # a model trained without the channel ignores a mu-map (and says so)
    v1 = harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, tiny_model_dir, device="cpu", mu_map=mu)
    plain = harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, tiny_model_dir, device="cpu")
    np.testing.assert_array_equal(v1.harmonized, plain.harmonized)
    assert any("no mu-map channel" in n for n in v1.notes) and v1.ac_error is None
    with pytest.raises(ValueError, match="mu-map"):
        harmonize_volume(s.pet_mr, s.t1w, s.brain_mask, model, device="cpu", mu_map=mu[:-1])
