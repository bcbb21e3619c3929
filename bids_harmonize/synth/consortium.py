"""Consortia for the simulator: sites with their own scanners, protocol and institution.

A consortium (``data/consortia.yaml``, preset ``paper``, or a YAML file of the same
schema) lists sites; each has a PET-CT model, the PET-MR attenuation-correction setups it
ran (which fix the PET-MR model), a protocol (the PET-MR delay after the PET-CT), count
levels and an ``InstitutionName``; and a cohort (amyloid status and Centiloid spread).
Subject ``i`` belongs to site ``sites[(i - 1) % n]`` and gets that site's setups in turn,
so a dataset of any size has every site and setup, and subject ``i`` is the same whatever
the dataset's size (``write_dataset(..., jobs=N)`` gives the same files for any N).

>>> c = load_consortium("paper")
>>> [s.name for s in c.sites], c.site_for(4).name, c.site_for(4).setup_for(4)
(['A', 'B', 'C'], 'A', 'dixon-bone')
>>> c.site_for(1).petmr_delay_for((40.0, 70.0)), c.site_for(3).petmr_delay_for((40.0, 70.0))
(30.0, 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

PRESETS_FILE = "bids_harmonize/data/consortia.yaml"


class ConsortiumError(ValueError):
    """A consortium description that cannot be used (message names the file and key)."""


@dataclass(frozen=True)
class Cohort:
    """Latent amyloid of a memory-clinic cohort (every number sourced in the YAML)."""

    amyloid_positive_fraction: float
    positive_centiloid_median: float
    positive_centiloid_iqr: float
    positive_centiloid_min: float
    negative_centiloid_mean: float
    negative_centiloid_sd: float

    def draw_amyloid(self, rng: np.random.Generator) -> tuple[bool, float]:
        """``(positive, centiloid)``: positive subjects normal(median, IQR / 1.349) above
        the positivity threshold, negatives normal(mean, sd) clipped to [-15, 20]."""
        positive = bool(rng.random() < self.amyloid_positive_fraction)
        if positive:
            sd = self.positive_centiloid_iqr / 1.349
            cl = float(rng.normal(self.positive_centiloid_median, sd))
            cl = float(np.clip(cl, self.positive_centiloid_min, 200.0))
        else:
            cl = float(np.clip(rng.normal(self.negative_centiloid_mean,
                                          self.negative_centiloid_sd), -15.0, 20.0))
        return positive, cl


@dataclass(frozen=True)
class Site:
    """One site of a consortium."""

    name: str
    institution: str
    petct_model: str
    petmr_setups: tuple[str, ...]
    petmr_delay: float | str  # minutes, or "sequential" (one standard window later)
    count_scale_petct: float = 1.0
    count_scale_petmr: float = 1.0
    session_sd: float = 0.0  # between-session SD of the log brain-to-reference ratio

    def setup_for(self, index: int, n_sites: int = 3) -> str:
        """The PET-MR setup of subject ``index`` (the site's setups in turn)."""
        k = (index - 1) // max(n_sites, 1)
        return self.petmr_setups[k % len(self.petmr_setups)]

    def petmr_delay_for(self, window_min: tuple[float, float]) -> float:
        """Minutes the PET-MR scan starts later after injection than the PET-CT scan.

        ``sequential``: the PET-MR starts when the PET-CT's standard window has been
        acquired, i.e. one window length later.
        """
        if self.petmr_delay == "sequential":
            return float(window_min[1] - window_min[0])
        return float(self.petmr_delay)

    def institution_fields(self) -> dict:
        """The ``Institution*`` sidecar fields of this site."""
        return {"InstitutionName": self.institution,
                "InstitutionAddress": "none (simulated data)",
                "InstitutionalDepartmentName": f"site {self.name} (simulated)"}


@dataclass(frozen=True)
class Consortium:
    """Sites and cohort of a consortium."""

    name: str
    sites: tuple[Site, ...]
    cohort: Cohort | None = None
    source: str = ""

    def site_for(self, index: int) -> Site:
        """The site of subject ``index`` (1-based): sites in turn."""
        return self.sites[(index - 1) % len(self.sites)]

    def setup_for(self, index: int) -> str:
        """The PET-MR setup of subject ``index``."""
        return self.site_for(index).setup_for(index, len(self.sites))


def _value(entry, where: str) -> float:
    if isinstance(entry, dict):
        if not str(entry.get("source") or "").strip():
            raise ConsortiumError(f"{where}: no source")
        entry = entry.get("value")
    if isinstance(entry, bool) or not isinstance(entry, int | float) or not math.isfinite(
            entry):
        raise ConsortiumError(f"{where}: not a number: {entry!r}")
    return float(entry)


def parse_consortium(name: str, spec: dict, where: str) -> Consortium:
    """A :class:`Consortium` from its YAML mapping (checked; errors name ``where``)."""
    from bids_harmonize.acsetups import get_setup
    from bids_harmonize.synth.physics import SCANNERS
    from bids_harmonize.synth.uptake import MAX_SESSION_SD

    if not isinstance(spec, dict) or not isinstance(spec.get("sites"), list) or \
            not spec["sites"]:
        raise ConsortiumError(f"{where}: {name}: needs a non-empty list 'sites'")
    sites = []
    for i, raw in enumerate(spec["sites"]):
        w = f"{where}: {name}: site {i + 1}"
        if not isinstance(raw, dict):
            raise ConsortiumError(f"{w}: not a mapping")
        sname = str(raw.get("name") or "").strip()
        if not sname or not sname.isalnum():
            raise ConsortiumError(f"{w}: 'name' must be letters/digits")
        petct = (raw.get("petct") or {}).get("model")
        if petct not in SCANNERS or SCANNERS[petct].platform != "PET-CT":
            raise ConsortiumError(f"{w}: petct model {petct!r} is not a simulated PET-CT "
                                  f"({', '.join(k for k, v in SCANNERS.items() if v.platform == 'PET-CT')})")
        setups = tuple((raw.get("petmr") or {}).get("setups") or ())
        if not setups:
            raise ConsortiumError(f"{w}: petmr.setups is empty")
        for s in setups:
            try:
                setup = get_setup(s)
            except (KeyError, ValueError) as exc:
                raise ConsortiumError(f"{w}: {exc}") from None
            if setup.platform != "PET-MR":
                raise ConsortiumError(f"{w}: setup {s!r} is not a PET-MR setup")
        protocol = raw.get("protocol") or {}
        delay = protocol.get("petmr_delay", 0)
        if delay != "sequential":
            delay = _value(delay, f"{w}: protocol.petmr_delay")
            if not 0.0 <= delay <= 120.0:
                raise ConsortiumError(f"{w}: protocol.petmr_delay must be 0-120 min")
        session_sd = _value(protocol.get("session_sd", 0.0), f"{w}: protocol.session_sd")
        if not 0.0 <= session_sd <= MAX_SESSION_SD:
            raise ConsortiumError(f"{w}: protocol.session_sd must be 0-{MAX_SESSION_SD:g}")
        counts = raw.get("count_scale") or {}
        scales = [_value(counts.get(k, 1.0), f"{w}: count_scale.{k}") for k in
                  ("petct", "petmr")]
        if min(scales) <= 0:
            raise ConsortiumError(f"{w}: count_scale must be positive")
        sites.append(Site(name=sname, institution=str(raw.get("institution") or
                                                      f"Site {sname} (simulated)"),
                          petct_model=petct, petmr_setups=setups, petmr_delay=delay,
                          count_scale_petct=scales[0], count_scale_petmr=scales[1],
                          session_sd=session_sd))
    if len({s.name for s in sites}) != len(sites):
        raise ConsortiumError(f"{where}: {name}: site names must differ")
    cohort = None
    if spec.get("cohort") is not None:
        raw = spec["cohort"]
        fields = Cohort.__dataclass_fields__
        unknown = set(raw) - set(fields)
        if unknown or set(fields) - set(raw):
            raise ConsortiumError(f"{where}: {name}: cohort needs exactly "
                                  f"{', '.join(fields)}")
        cohort = Cohort(**{k: _value(raw[k], f"{where}: {name}: cohort.{k}") for k in fields})
        if not 0.0 <= cohort.amyloid_positive_fraction <= 1.0:
            raise ConsortiumError(f"{where}: {name}: amyloid_positive_fraction not in [0, 1]")
    return Consortium(name=name, sites=tuple(sites), cohort=cohort,
                      source=str(spec.get("source") or ""))


def preset_names() -> list[str]:
    """Names of the built-in consortia."""
    return list(_presets())


def _presets() -> dict:
    text = resources.files("bids_harmonize.data").joinpath("consortia.yaml").read_text()
    return yaml.safe_load(text)


def load_consortium(name_or_path: str | Path) -> Consortium:
    """A built-in preset by name, or the (single) consortium of a YAML file."""
    presets = _presets()
    if str(name_or_path) in presets:
        return parse_consortium(str(name_or_path), presets[str(name_or_path)], PRESETS_FILE)
    path = Path(name_or_path)
    if not path.is_file():
        raise ConsortiumError(f"unknown consortium {str(name_or_path)!r}: not a preset "
                              f"({', '.join(presets)}) nor a YAML file")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConsortiumError(f"{path}: not YAML: {exc}".splitlines()[0]) from None
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConsortiumError(f"{path}: one consortium (a mapping NAME: {{sites: ...}}) "
                              "expected")
    (name, body), = spec.items()
    return parse_consortium(str(name), body, str(path))
