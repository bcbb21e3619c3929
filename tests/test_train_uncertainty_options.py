"""Train-level ensemble options: parsing and the calibration hold-out."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bids_harmonize.app.common import UsageError
from bids_harmonize.app.train import split_calibration
from bids_harmonize.cli.parser import build_parser


def test_parser_defaults_and_bounds(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args([str(tmp_path), str(tmp_path / "o"), "train"])
    assert (args.ensemble_members, args.calibration_subjects, args.ood_policy) == (3, 0, "warn")
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([str(tmp_path), str(tmp_path / "o"), "participant", "--ood-policy", "x"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        parser.parse_args([str(tmp_path), str(tmp_path / "o"), "train", "--ensemble-members", "-1"])
    assert "must be 0 or more" in capsys.readouterr().err


def test_split_calibration():
    pairs = [SimpleNamespace(subject=s, tracer=t) for s in ("01", "02", "03", "04") for t in ("PiB", "FDG")]
    train, held = split_calibration(pairs, 1)
    assert {p.subject for p in held} == {"04"} and len(train) == 6
    assert split_calibration(pairs, 0) == (pairs, [])
    with pytest.raises(UsageError, match="leaves 1 of 4 subjects"):
        split_calibration(pairs, 3)


def test_calibrate_model_option(tmp_path, capsys):
    from bids_harmonize.harmonizer.weights import default_model_dir

    parser = build_parser()
    args = parser.parse_args([str(tmp_path), str(tmp_path / "o"), "train", "--calibrate-model", "demo"])
    assert args.calibrate_model == default_model_dir()
    assert parser.parse_args([str(tmp_path), str(tmp_path / "o"), "train"]).calibrate_model is None
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([str(tmp_path), str(tmp_path / "o"), "train", "--calibrate-model",
                           str(tmp_path)])
    assert exc.value.code == 2
    assert "is not a model folder (no model.json)" in capsys.readouterr().err
