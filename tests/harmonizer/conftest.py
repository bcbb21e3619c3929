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


@pytest.fixture(scope="session")
def ensemble_dir(tmp_path_factory, tiny_model_dir, phantom_pairs):
    """The tiny model with a 2-member ensemble, calibrated (scale and guard) on two held-out
    phantoms."""
    import shutil

    from bids_harmonize.harmonizer import uncertainty as unc

    out = tmp_path_factory.mktemp("ens") / "tiny"
    shutil.copytree(tiny_model_dir, out, ignore=shutil.ignore_patterns("checkpoints"))
    held_out = [phantom_pair(i, shape=(24, 28, 24), tracer="PiB") for i in (5, 6)]
    unc.fit_uncertainty(out, phantom_pairs, validation_pairs=held_out, n_members=2, device="cpu")
    return out
