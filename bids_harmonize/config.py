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
    atlas: str = "synth"
    atlas_labels: Path | None = None
    centiloid_vois: Path | None = None
    cutoffs: dict[str, float] = field(default_factory=dict)
    train_epochs: dict[str, int] = field(default_factory=dict)
    train_min_subjects: int = 2
    seed: int = 0

    @property
    def template_spaces(self) -> list[str]:
        """Output spaces that are templates (everything but ``T1w``)."""
        return [s for s in self.output_spaces if s not in ("T1w", "pet")]


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


def config_from_dict(data: dict) -> RunConfig:
    """Rebuild a :class:`RunConfig`, rejecting keys it does not know."""
    known = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown settings in config: {', '.join(unknown)}")
    kwargs = {k: (Path(v) if k in _PATH_FIELDS and v is not None else v) for k, v in data.items()}
    return RunConfig(**kwargs)


def save_config(config: RunConfig, path: Path) -> Path:
    """Write the settings as TOML (``[run]`` table) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps({"run": config_to_dict(config)}))
    return path


def load_config(path: Path) -> RunConfig:
    """Read settings written by :func:`save_config`."""
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    return config_from_dict(data.get("run", data))
