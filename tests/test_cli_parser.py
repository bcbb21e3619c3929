"""The command line: validators exit 2, settings round-trip through TOML."""

from __future__ import annotations

import pytest

from bids_harmonize.cli.parser import build_parser
from bids_harmonize.cli.run import config_from_args, main
from bids_harmonize.config import load_config, save_config


def _parse(tmp_path, *extra):
    bids = tmp_path / "bids"
    bids.mkdir(exist_ok=True)
    return build_parser().parse_args([str(bids), str(tmp_path / "out"), "participant", *extra])


def test_labels_accept_prefixes(tmp_path):
    args = _parse(tmp_path, "--participant-label", "sub-01", "02", "--session-label", "ses-petmr")
    assert args.participant_label == ["01", "02"]
    assert args.session_label == ["petmr"]


@pytest.mark.parametrize("bad", [
    ["--participant-label", "sub-0_1"],
    ["--uptake-window", "PiB=70-50"],
    ["--uptake-window", "PiB"],
    ["--nprocs", "0"],
    ["--device", "tpu"],
    ["--platform-map", "/does/not/exist.tsv"],
])
def test_bad_arguments_exit_2(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        _parse(tmp_path, *bad)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_missing_bids_dir_exits_2(tmp_path):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([str(tmp_path / "nope"), str(tmp_path / "o"), "group"])
    assert exc.value.code == 2


def test_version(capsys):
    from bids_harmonize import __version__

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert __version__ in capsys.readouterr().out


def test_config_round_trip_and_replay(tmp_path):
    args = _parse(tmp_path, "--participant-label", "01", "--uptake-window", "PiB=40-60",
                  "--sloppy", "--cutoff", "PiB=20", "--train-epochs", "ct=3")
    config = config_from_args(args)
    assert config.uptake_windows == {"PiB": [40.0, 60.0]}
    assert config.train_epochs == {"ct": 3}
    path = save_config(config, tmp_path / "logs" / "config.toml")
    assert load_config(path) == config
    replay = config_from_args(_parse(tmp_path, "--config-file", str(path)))
    assert replay == config


def test_output_inside_input_is_refused(tmp_path, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    assert main([str(bids), str(bids / "derivatives" / "x"), "participant"]) == 1
    err = capsys.readouterr().err
    assert "must not be inside" in err and err.count("\n") == 1
    assert not (bids / "derivatives").exists()


def test_not_a_bids_dataset(tmp_path, templateflow_home, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    code = main([str(bids), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "--output-spaces", "MNI152NLin2009aSym", "--no-harmonization"])
    assert code == 1
    assert "not a BIDS dataset" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_template_is_a_clear_error(tmp_path, templateflow_home, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    code = main([str(bids), str(tmp_path / "out"), "participant", "--output-spaces",
                 "MNI152NLin6Asym", "T1w"])
    assert code == 1
    err = capsys.readouterr().err
    assert "MNI152NLin6Asym" in err and "TemplateFlow cache" in err and "tf.get" in err
    # the offline route too
    assert "bids_harmonize-templates" in err and "--output-spaces MNI152NLin2009aSym T1w" in err


def test_group_without_participant_results(tmp_path, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    (tmp_path / "out").mkdir()
    assert main([str(bids), str(tmp_path / "out"), "group"]) == 1
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("option, values, expected", [
    ("--participant-label", (["01", "02"], ["03"]), ["01", "02", "03"]),
    ("--output-spaces", (["T1w"], ["MNI152NLin2009aSym"]), ["T1w", "MNI152NLin2009aSym"]),
    ("--uptake-window", (["PiB=50-70", "AZ-10419369=20-60"], ["ses-a:FDG=30-60"]),
     [("PiB", [50.0, 70.0]), ("AZ-10419369", [20.0, 60.0]), ("ses-a:FDG", [30.0, 60.0])]),
    ("--reference-region", (["[11C]UCB-J=centrum_semiovale", "DASB=none"], ["X=cerebellum"]),
     [("[11C]UCB-J", "centrum_semiovale"), ("DASB", "none"), ("X", "cerebellum")]),
    ("--cutoff", (["PiB=24.1", "18F-AV45=1.11"], ["FBB=1.08"]),
     [("PiB", 24.1), ("18F-AV45", 1.11), ("FBB", 1.08)]),
    ("--train-epochs", (["ct=2", "mri=3"], ["residual=4"]), ["ct=2", "mri=3", "residual=4"]),
])
def test_list_options_behave_one_way(tmp_path, option, values, expected):
    """Several values after one flag, the flag repeated, or both: the same list."""
    dest = option.lstrip("-").replace("-", "_")
    one_flag = _parse(tmp_path, option, *values[0], *values[1])
    repeated = _parse(tmp_path, *[a for v in (*values[0], *values[1]) for a in (option, v)])
    mixed = _parse(tmp_path, option, *values[0], option, *values[1])
    assert getattr(one_flag, dest) == getattr(repeated, dest) == getattr(mixed, dest) == expected


def test_list_option_default_is_replaced_not_extended(tmp_path):
    default = build_parser().get_default("output_spaces")
    assert _parse(tmp_path).output_spaces == default and "T1w" in default
    assert _parse(tmp_path, "--output-spaces", "T1w").output_spaces == ["T1w"]
    # parsing twice does not change the parser's default
    assert _parse(tmp_path).output_spaces == build_parser().get_default("output_spaces")


def test_help_says_how_list_options_take_values(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "space-separated after one flag, or the flag repeated" in text
    assert "'--uptake-window PiB=50-70 --uptake-window AZ-10419369=20-60'" in text
