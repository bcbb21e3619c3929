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


def test_train_config_steps_grow_with_training_subjects(caplog):
    """The site recipe keeps its 40 steps per epoch up to the demo model's 12 training
    subjects (the demo model's recipe is unchanged) and grows in proportion beyond them;
    --train-steps-scale, --train-epochs and the batch size apply on top."""
    import logging
    from pathlib import Path

    from bids_harmonize.app.train import train_config
    from bids_harmonize.config import RunConfig

    caplog.set_level(logging.INFO, logger="bids_harmonize")
    run = RunConfig(bids_dir=Path("/b"), output_dir=Path("/o"), analysis_level="train", seed=7)
    demo = train_config(run, subjects=12)
    assert [demo.stage1.steps_per_epoch, demo.stage2.steps_per_epoch,
            demo.stage3.steps_per_epoch] == [40, 40, 40]
    assert (demo.stage1.epochs, demo.stage2.epochs, demo.stage3.epochs, demo.seed) == (8, 8, 10, 7)
    assert train_config(run, subjects=3).stage3.steps_per_epoch == 40
    big = train_config(run, subjects=36)
    assert big.stage3.steps_per_epoch == 120 and big.stage3.batch_size == 8
    assert big.replace(stage1={"steps_per_epoch": 40}, stage2={"steps_per_epoch": 40},
                       stage3={"steps_per_epoch": 40}) == demo
    scaled = RunConfig(bids_dir=Path("/b"), output_dir=Path("/o"), analysis_level="train",
                       train_steps_scale=0.5, train_batch_size=4, train_epochs={"residual": 3})
    cfg = train_config(scaled, subjects=36)
    assert (cfg.stage3.steps_per_epoch, cfg.stage3.batch_size, cfg.stage3.epochs) == (60, 4, 3)
    assert "60 steps per epoch of 4 patches" in caplog.text and "36 training subject" in caplog.text
