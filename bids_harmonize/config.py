"""Run settings as a dataclass that round-trips through TOML.

Nothing here reads the environment or the disk at import time: the CLI fills
a :class:`RunConfig`, writes it next to the logs with :func:`save_config`, and
``--config-file`` replays it through :func:`load_config`.

>>> cfg = RunConfig(bids_dir=Path("/data"), output_dir=Path("/out"), analysis_level="group")
>>> cfg2 = config_from_dict(config_to_dict(cfg))
>>> cfg2 == cfg
True
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import tomli_w

from bids_harmonize.safeio import atomic_write_text

ANALYSIS_LEVELS = ("participant", "group", "train")
DEFAULT_OUTPUT_SPACES = ("MNI152NLin2009cAsym", "T1w")


@dataclass
class RunConfig:
    """Every setting of one run of the BIDS App."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    participant_label: list[str] = field(default_factory=list)
    session_label: list[str] = field(default_factory=list)
    tracer_label: list[str] = field(default_factory=list)
    bids_filter_file: Path | None = None
    skip_bids_validation: bool = False
    platform_map: Path | None = None
    output_spaces: list[str] = field(default_factory=lambda: list(DEFAULT_OUTPUT_SPACES))
    model_dir: Path | None = None
    no_harmonization: bool = False
    device: str = "auto"
    ood_policy: str = "warn"
    nprocs: int = 1
    nipype_plugin: str | None = None
    plugin_args: dict = field(default_factory=dict)
    omp_nthreads: int = 1
    mem_gb: float | None = None
    work_dir: Path | None = None
    stop_on_first_crash: bool = False
    sloppy: bool = False
    write_graph: bool = False
    verbose: int = 0
    uptake_windows: dict[str, list[float]] = field(default_factory=dict)
    window_policy: str = "strict"
    common_resolution: float | None = None
    scanner_resolutions: dict[str, float] | None = None
    tracer_file: Path | None = None
    reference_regions: dict[str, str] = field(default_factory=dict)
    atlas: str = "synth"
    atlas_labels: Path | None = None
    centiloid_vois: Path | None = None
    cutoffs: dict[str, float] = field(default_factory=dict)
    train_epochs: dict[str, int] = field(default_factory=dict)
    train_min_subjects: int = 2
    train_steps_scale: float = 1.0
    train_batch_size: int = 8
    ensemble_members: int = 3
    calibration_subjects: int = 0
    calibrate_model: Path | None = None
    overwrite_model: bool = False
    seed: int = 0

    @property
    def template_spaces(self) -> list[str]:
        """Output spaces that are templates (everything but ``T1w``)."""
        return [s for s in self.output_spaces if s not in ("T1w", "pet")]

    def references(self) -> dict[str, str | None]:
        """``--reference-region`` settings, ``none`` as None (regional means only)."""
        return {k: (None if v.lower() == "none" else v)
                for k, v in self.reference_regions.items()}


_PATH_FIELDS = {
    f.name for f in dataclasses.fields(RunConfig) if "Path" in str(f.type)
}


def config_to_dict(config: RunConfig) -> dict:
    """A TOML-ready dict: paths as strings, ``None`` dropped."""
    out = {}
    for key, value in dataclasses.asdict(config).items():
        if value is None:
            continue
        out[key] = str(value) if isinstance(value, Path) else value
    return out


class ConfigError(ValueError):
    """A settings file that cannot be replayed; the message is one line naming the setting."""


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


#: what each annotation accepts in TOML (a type not listed here is not checked)
_CHECKS = {
    "Path": (lambda v: isinstance(v, str) and bool(v), "a path (text)"),
    "Path | None": (lambda v: v is None or (isinstance(v, str) and bool(v)), "a path (text)"),
    "str": (lambda v: isinstance(v, str), "text"),
    "str | None": (lambda v: v is None or isinstance(v, str), "text"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int": (_is_int, "an integer"),
    "float | None": (lambda v: v is None or _is_number(v), "a number"),
    "list[str]": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                  "a list of text"),
    "dict": (lambda v: isinstance(v, dict), "a table"),
    "dict[str, str]": (lambda v: isinstance(v, dict) and all(isinstance(x, str)
                                                             for x in v.values()),
                       "a table of text"),
    "dict[str, float]": (lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()),
                         "a table of numbers"),
    "dict[str, float] | None": (lambda v: v is None or (isinstance(v, dict) and all(
        _is_number(x) for x in v.values())), "a table of numbers"),
    "dict[str, int]": (lambda v: isinstance(v, dict) and all(_is_int(x) for x in v.values()),
                       "a table of integers"),
    "dict[str, list[float]]": (
        lambda v: isinstance(v, dict) and all(
            isinstance(x, list) and all(_is_number(y) for y in x) for x in v.values()),
        "a table of number lists"),
}
_CHOICES = {"analysis_level": ANALYSIS_LEVELS, "device": ("auto", "cpu", "cuda"),
            "window_policy": ("strict", "nearest"),
            "ood_policy": ("warn", "passthrough", "fail"),
            "nipype_plugin": (None, "Linear", "MultiProc", "SLURM", "SLURMGraph")}


def config_from_dict(data: dict, *, source: str = "config") -> RunConfig:
    """Rebuild a :class:`RunConfig`, rejecting unknown keys and values of the wrong type.

    >>> config_from_dict({"bids_dir": "/d", "output_dir": "/o", "analysis_level": "group",
    ...                   "nprocs": "two"})
    Traceback (most recent call last):
    ...
    bids_harmonize.config.ConfigError: config: setting 'nprocs' must be an integer, got 'two'
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table of settings")
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown settings: {', '.join(unknown)}")
    for key, value in data.items():
        check = _CHECKS.get(str(fields[key].type))
        if check and not check[0](value):
            raise ConfigError(f"{source}: setting {key!r} must be {check[1]}, got {value!r}"[:300])
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{source}: setting {key!r} must be one of "
                              f"{', '.join(map(str, _CHOICES[key]))}, got {value!r}")
    missing = [k for k in ("bids_dir", "output_dir", "analysis_level") if k not in data]
    if missing:
        raise ConfigError(f"{source}: missing settings: {', '.join(missing)}")
    kwargs = {k: (Path(v) if k in _PATH_FIELDS and v is not None else v) for k, v in data.items()}
    return RunConfig(**kwargs)


def save_config(config: RunConfig, path: Path) -> Path:
    """Write the settings as TOML (``[run]`` table) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, tomli_w.dumps({"run": config_to_dict(config)}))
    return path


def load_config(path: Path) -> RunConfig:
    """Read settings written by :func:`save_config`; :class:`ConfigError` names what is wrong."""
    from bids_harmonize.safeio import SMALL_FILE_LIMIT, UnsafeInputError, read_bytes_bounded

    try:
        data = tomllib.loads(read_bytes_bounded(path, SMALL_FILE_LIMIT).decode("utf-8"))
    except UnsafeInputError as exc:
        raise ConfigError(str(exc)) from None
    except RecursionError:
        raise ConfigError(f"{path}: TOML nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return config_from_dict(data.get("run", data), source=str(path))
