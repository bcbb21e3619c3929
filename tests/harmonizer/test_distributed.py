"""DistributedDataParallel training under torchrun (2 CPU processes, gloo backend)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)
    sys.path.insert(0, {tests!r})
    from conftest import TINY
    from bids_harmonize.harmonizer.phantom import phantom_pair
    from bids_harmonize.harmonizer.train import train_model
    pairs = [phantom_pair(i, shape=(24, 28, 24)) for i in range(2)]
    cfg = TINY.replace(stage1={{"epochs": 1}}, stage2={{"epochs": 1}}, stage3={{"epochs": 1}})
    train_model(pairs, sys.argv[1], cfg, device="cpu", progress=False)
    """
)


@pytest.mark.slow
def test_torchrun_two_processes(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29531",
        str(script),
        str(tmp_path / "model"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert card["training"]["world_size"] == 2
