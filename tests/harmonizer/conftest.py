"""Fixtures for the harmonizer tests: a tiny config, phantom pairs and a tiny trained model."""

from __future__ import annotations

import pytest
import torch

from bids_harmonize.harmonizer.config import HarmonizerConfig
from bids_harmonize.harmonizer.phantom import phantom_pair

TINY = HarmonizerConfig.tiny()


@pytest.fixture(autouse=True)
def _few_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_config():
    return TINY


@pytest.fixture(scope="session")
def phantom_pairs():
    return [phantom_pair(i, shape=(24, 28, 24), tracer="PiB") for i in range(2)] + [
        phantom_pair(2, shape=(24, 28, 24), tracer="FDG")
    ]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, phantom_pairs):
    from bids_harmonize.harmonizer.train import train_model

    out = tmp_path_factory.mktemp("model") / "tiny"
    return train_model(phantom_pairs, out, TINY, device="cpu", progress=False)
