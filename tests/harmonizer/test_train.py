import json

import numpy as np
import pytest
import torch

from bids_harmonize.harmonizer.data import PatchDataset, crop, prepare_pair
from bids_harmonize.harmonizer.dataset import InsufficientDataError
from bids_harmonize.harmonizer.train import train_model
from bids_harmonize.harmonizer.weights import load_model


def test_trained_model_card(tiny_model_dir):
    card = json.loads((tiny_model_dir / "model.json").read_text())
    data = card["training_data"]
    assert data["tracers"] == ["FDG", "PiB"]
    assert data["tracer_families"] == ["amyloid", "fdg"]
    assert data["n_subjects"] == 3
    assert len(data["sha256_training_list"]) == 64
    for stage in ("stage1", "stage2", "stage3"):
        assert len(card["training"][stage]["history"]) == 2
        assert np.isfinite(card["training"][stage]["final_loss"])
    assert (tiny_model_dir / "checkpoints" / "state.json").exists()


def test_resume_skips_finished_stages(tiny_model_dir, phantom_pairs, tiny_config, caplog):
    caplog.set_level("INFO", logger="bids_harmonize.harmonizer")
    before = load_model(tiny_model_dir).net.state_dict()
    train_model(phantom_pairs, tiny_model_dir, tiny_config, device="cpu", progress=False)
    assert "complete in checkpoint" in caplog.text
    after = load_model(tiny_model_dir).net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_seeded_training_is_deterministic(tmp_path, phantom_pairs, tiny_config):
    cfg = tiny_config.replace(
        stage1={"epochs": 1, "steps_per_epoch": 2},
        stage2={"epochs": 1, "steps_per_epoch": 2},
        stage3={"epochs": 1, "steps_per_epoch": 2},
    )
    pairs = phantom_pairs[:2]
    a = load_model(train_model(pairs, tmp_path / "a", cfg, device="cpu", progress=False))
    b = load_model(train_model(pairs, tmp_path / "b", cfg, device="cpu", progress=False))
    sa, sb = a.net.state_dict(), b.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_each_stage_step_decreases_its_loss(phantom_pairs, tiny_config):
    from bids_harmonize.harmonizer import stages as T
    from bids_harmonize.harmonizer.nets.harmonizer import ThreeStageHarmonizer

    torch.manual_seed(0)
    net = ThreeStageHarmonizer(tiny_config)
    vols = [prepare_pair(p) for p in phantom_pairs]
    keys = ("t1w", "mu", "pet", "target", "mask", "labels")
    ds = PatchDataset(vols, keys, 16, 4, seed=0, stage=1, centre_key="mask")
    batch = {k: torch.stack([ds[i][k] for i in range(4)]) for k in keys}
    cases = [
        (net.ct_autoencoder, lambda: T.stage1_loss(net.ct_autoencoder, batch)),
        (net.mri_encoder, lambda: T.stage2_loss(net, batch, tiny_config, net.mri_encoder)),
        (net.correction, lambda: T.stage3_loss(net, batch, tiny_config, net.correction, 4)),
    ]
    for module, loss_fn in cases:
        opt = torch.optim.Adam(module.parameters(), lr=3e-3)
        first = float(loss_fn()[0].detach())
        for _ in range(5):
            opt.zero_grad()
            loss_fn()[0].backward()
            opt.step()
        assert float(loss_fn()[0].detach()) < first


def test_stage3_loss_is_zero_for_a_perfect_correction():
    from bids_harmonize.harmonizer.config import HarmonizerConfig
    from bids_harmonize.harmonizer.stages import stage3_terms

    pet = torch.rand(1, 1, 8, 8, 8) + 0.5
    target = pet * 1.2
    batch = {
        "pet": pet,
        "target": target,
        "mask": torch.ones_like(pet),
        "labels": torch.ones_like(pet, dtype=torch.long),
    }
    r = torch.full_like(pet, float(np.log(1.2)))
    loss, parts = stage3_terms(r, batch, HarmonizerConfig(), 1)
    assert parts["regional"] < 1e-5 and parts["smooth"] == 0.0
    assert parts["voxel"] < 0.05  # only the log offset eps remains


def test_crop_pads_outside():
    a = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    patch = crop(a, (0, 0, 0), 4)
    assert patch.shape == (4, 4, 4)
    assert patch[0, 0, 0] == 0 and patch[2, 2, 2] == a[0, 0, 0]


def test_no_pairs():
    with pytest.raises(InsufficientDataError):
        train_model([], "/nonexistent", device="cpu")


def test_uptake_augmentation_keeps_the_ratio(phantom_pairs):
    vols = [prepare_pair(p) for p in phantom_pairs]
    keys = ("pet", "target")
    plain = PatchDataset(vols, keys, 16, 2, seed=0, stage=3, centre_key="mask")
    augmented = PatchDataset(vols, keys, 16, 2, seed=0, stage=3, centre_key="mask", uptake_augment=0.3)
    a, b = plain[0], augmented[0]
    assert not torch.allclose(a["pet"], b["pet"])
    inside = a["pet"] > 0.1
    ratio_a = a["target"][inside] / a["pet"][inside]
    ratio_b = b["target"][inside] / b["pet"][inside]
    torch.testing.assert_close(ratio_a, ratio_b, rtol=1e-4, atol=1e-5)


def test_stage3_change_reuses_the_anatomy_stages(tmp_path, phantom_pairs, tiny_config, caplog):
    caplog.set_level("INFO", logger="bids_harmonize.harmonizer")
    one = {"epochs": 1, "steps_per_epoch": 1}
    cfg = tiny_config.replace(stage1=one, stage2=one, stage3=one)
    pairs = phantom_pairs[:2]
    ckpt = tmp_path / "ckpt"
    kw = {"device": "cpu", "progress": False, "checkpoint_dir": ckpt}
    a = load_model(train_model(pairs, tmp_path / "v1", cfg, **kw))
    caplog.clear()
    v2 = cfg.replace(correction={"inputs": ("pet", "t1w", "ac_error")}, stage3={"lr": 5e-4})
    b = load_model(train_model(pairs, tmp_path / "v2", v2, **kw))
    assert caplog.text.count("complete in checkpoint") == 2  # stages 1 and 2
    assert "stage3 epoch 1/1" in caplog.text
    for part in ("ct_autoencoder", "mri_encoder"):
        sa, sb = getattr(a.net, part).state_dict(), getattr(b.net, part).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
