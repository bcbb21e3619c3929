import json
import shutil

import pytest
import torch

from bids_harmonize.harmonizer.nets.harmonizer import ThreeStageHarmonizer
from bids_harmonize.harmonizer.weights import (
    FORMAT_VERSION,
    ModelError,
    load_model,
    save_model,
    sha256_file,
)


@pytest.fixture
def saved(tmp_path, tiny_config):
    torch.manual_seed(3)
    net = ThreeStageHarmonizer(tiny_config)
    out = save_model(tmp_path / "m", net, {"name": "t", "version": "1.2.3"})
    return out, net


def test_round_trip(saved):
    out, net = saved
    model = load_model(out)
    assert model.version == "1.2.3"
    assert model.config == net.config
    for a, b in zip(net.state_dict().values(), model.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    card = json.loads((out / "model.json").read_text())
    assert card["format_version"] == FORMAT_VERSION
    assert all(sha256_file(out / f) == h for f, h in card["files"].items())
    assert model.card_sha256 == sha256_file(out / "model.json")


def test_missing_dir(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nope")


def test_missing_and_corrupt_card(saved):
    out, _ = saved
    (out / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(out)
    (out / "model.json").unlink()
    with pytest.raises(ModelError, match="no model.json"):
        load_model(out)


def test_wrong_format_version(saved):
    out, _ = saved
    card = json.loads((out / "model.json").read_text())
    card["format_version"] = "0.9"
    (out / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="format version '0.9'"):
        load_model(out)


def test_hash_mismatch(saved):
    out, _ = saved
    path = out / "correction.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        load_model(out)


def test_missing_weight_file(saved):
    out, _ = saved
    (out / "mri_encoder.safetensors").unlink()
    with pytest.raises(ModelError, match="missing weight file mri_encoder.safetensors"):
        load_model(out)


def test_error_is_one_line(saved, tmp_path):
    out, _ = saved
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "ct_autoencoder.safetensors").write_bytes(b"0")
    with pytest.raises(ModelError) as err:
        load_model(broken)
    assert "\n" not in str(err.value)


def test_shipped_demo_model_loads():
    from bids_harmonize.harmonizer.weights import default_model_dir

    model = load_model(default_model_dir())
    card = model.card
    assert "simulated" in card["description"].lower()
    assert "python -m bids_harmonize.harmonizer.demo" in card["retrain_command"]
    assert card["training_data"]["tracers"]
