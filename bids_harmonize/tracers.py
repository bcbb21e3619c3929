"""The tracer table (``data/tracers.yaml``): families, uptake windows, references.

>>> tracer = get_tracer("av45")
>>> tracer.name, tracer.family, tracer.window_min
('florbetapir', 'amyloid', (50.0, 60.0))
>>> round(get_tracer("PiB").centiloid_from_suvr(2.076), 1)
100.0
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import yaml

FAMILIES = ("amyloid", "tau", "fdg", "dat")


class UnknownTracerError(ValueError):
    """A tracer name that the tracer table does not know."""


@dataclass(frozen=True)
class Tracer:
    """One row of the tracer table."""

    name: str
    family: str
    radionuclide: str
    half_life_min: float
    window_min: tuple[float, float]
    reference: str
    centiloid: dict | None = None
    cutoff: dict | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def centiloid_from_suvr(self, suvr):
        """Centiloid from whole-cerebellum SUVR with the tracer's published equation."""
        if not self.centiloid:
            raise ValueError(f"tracer {self.name!r} has no Centiloid equation")
        return self.centiloid["slope"] * suvr + self.centiloid["intercept"]


@cache
def tracer_table() -> dict[str, Tracer]:
    """All tracers of the packaged table, keyed by their BIDS ``trc-`` label."""
    text = resources.files("bids_harmonize.data").joinpath("tracers.yaml").read_text()
    table = {}
    for name, row in yaml.safe_load(text).items():
        if row["family"] not in FAMILIES:
            raise ValueError(f"tracers.yaml: {name} has unknown family {row['family']!r}")
        table[name] = Tracer(
            name=name,
            family=row["family"],
            radionuclide=row["radionuclide"],
            half_life_min=float(row["half_life_min"]),
            window_min=tuple(float(v) for v in row["window_min"]),
            reference=row["reference"],
            centiloid=row.get("centiloid"),
            cutoff=row.get("cutoff"),
            aliases=tuple(row.get("aliases", ())),
        )
    return table


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def get_tracer(name: str) -> Tracer:
    """Look a tracer up by its label, or any alias, ignoring case and punctuation."""
    wanted = _key(name)
    for tracer in tracer_table().values():
        if wanted in {_key(tracer.name), *(_key(a) for a in tracer.aliases)}:
            return tracer
    known = ", ".join(tracer_table())
    raise UnknownTracerError(f"unknown tracer {name!r}; known tracers: {known}")
