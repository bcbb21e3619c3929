"""Patch sampling in DataLoader workers: same patches, same weights as on the training thread."""

from __future__ import annotations

import torch

from bids_harmonize.harmonizer.checkpoints import Checkpoints
from bids_harmonize.harmonizer.data import PatchDataset, prepare_pair, stage_keys
from bids_harmonize.harmonizer.engine import run_stage
from bids_harmonize.harmonizer.nets.harmonizer import ThreeStageHarmonizer
from bids_harmonize.harmonizer.runtime import Runtime, amp_dtype, default_data_workers
from bids_harmonize.harmonizer.stages import stage3_loss


def _train_stage3(config, pairs, workers, folder):
    rt = Runtime("cpu", False, data_workers=workers)
    assert rt.data_workers == workers and not rt.grad_scaling
    volumes = [prepare_pair(p, config.mask_dilation) for p in pairs]
    torch.manual_seed(config.seed)
    net = ThreeStageHarmonizer(config)
    for p in net.parameters():
        p.requires_grad_(False)
    s = config.stage3
    data = PatchDataset(volumes, stage_keys(3, config), config.anatomy.roi_size,
                        s.steps_per_epoch * s.batch_size, config.seed, 3, "mask", uptake_augment=0.3)
    ckpt = Checkpoints(folder, config, "workers-test", writer=True)
    report = run_stage("stage3", net.correction, lambda m, b: stage3_loss(net, b, config, m, 4),
                       data, s, rt, ckpt, False, config.seed)
    return net.correction.state_dict(), report["history"]


def test_workers_do_not_change_training(tiny_config, phantom_pairs, tmp_path):
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        w0, h0 = _train_stage3(tiny_config, phantom_pairs, 0, tmp_path / "w0")
        w2, h2 = _train_stage3(tiny_config, phantom_pairs, 2, tmp_path / "w2")
    finally:
        torch.use_deterministic_algorithms(previous)
    assert [h["loss"] for h in h0] == [h["loss"] for h in h2]
    for key, value in w0.items():
        assert torch.equal(value, w2[key]), key


def test_cpu_defaults():
    cpu = torch.device("cpu")
    assert default_data_workers(cpu) == 0 and amp_dtype(cpu) is None
