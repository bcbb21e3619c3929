"""Attenuation-correction setups of PET scanners: the table, inference from metadata, μ-maps.

One place declares the setups: ``bids_harmonize/data/acsetups.tsv``, one row per number or
text of a setup (columns ``setup``, ``key``, ``value``, ``unit``, ``source``), every number
next to its literature source.  Setup names are a contract other modules build on:

- ``ct``: PET-CT, CT-based attenuation (Carney et al. 2006 bilinear conversion);
- ``dixon-nobone``: Siemens Biograph mMR, VB18/VB20-era Dixon 4-class map, bone as soft tissue;
- ``dixon-bone``: Biograph mMR, VE11-era Dixon with a model-based bone atlas;
- ``zte``: GE SIGNA PET/MR (MP26), zero-echo-time bone and air;
- ``atlas``: GE SIGNA PET/MR (MP24) head atlas (a CT template registered to the MR).
  GE is another vendor than the Siemens Dixon setups; its head atlas is the atlas method
  with the most published brain evaluations (Wollenweber et al. 2013, Sekine et al. 2016).

``infer_ac_setup`` tells the setup of a PET series from ``ManufacturersModelName``,
``SoftwareVersions`` and the ``AttenuationCorrection`` text; ``mumap_path`` says where the
scanner's own μ-map of a PET series lives.

The scanner μ-map convention (what ``bids_harmonize-synth`` writes, and what real users
export): next to the PET series, same entities, suffix ``mumap``::

    sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_pet.nii.gz
    sub-01/ses-petmr/pet/sub-01_ses-petmr_trc-PiB_mumap.nii.gz   (+ _mumap.json)

BIDS 1.10 has no suffix for an attenuation map (the PET datatype knows only ``pet``
and ``blood``; BEP023's PET derivatives do not name one either), so the dataset's
``.bidsignore`` lists ``*_mumap.nii.gz`` and ``*_mumap.json`` and the validator accepts
it.  The image holds linear attenuation coefficients at 511 keV in 1/cm, patient only
(no MR hardware), on the grid the scanner exported it on.  Its sidecar says so:
``"Units": "cm^-1"``, ``"PhotonEnergyKeV": 511``, ``"AttenuationCorrectionSetup"`` (a
name of this table, or absent if unknown), ``"AttenuationCorrection"`` (method text),
``"IntendedFor"`` (BIDS URI of the PET series it corrected) and ``"HardwareIncluded"``.

This module is pure (no simulator import); the app uses it at run time.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

#: Keys every setup row set must have, and those every PET-MR setup must have.
REQUIRED_KEYS = ("platform", "method", "ac_text", "ac_keywords", "reference", "bone_model",
                 "mu_soft")
PETMR_KEYS = ("manufacturer", "model", "software_versions", "coil_missing_fraction",
              "ac_motion_deg", "ac_motion_mm")
#: Keys holding text (everything else is a number).
TEXT_KEYS = ("platform", "manufacturer", "model", "software_versions", "ac_text",
             "ac_keywords", "method", "reference", "bone_model")
BONE_MODELS = ("ct", "none", "model", "zte", "atlas")
#: Bound on any attenuation coefficient of a head at 511 keV (1/cm): dense cortical bone
#: is ~0.17-0.19 1/cm (Carney et al. 2006); 0.3 is far above any tissue.
MU_MAX = 0.3
MUMAP_SUFFIX = "_mumap"


class ACSetupError(ValueError):
    """The setup table is malformed (names the file, setup and key)."""


@dataclass(frozen=True)
class ACSetup:
    """One attenuation-correction setup (see the module docstring)."""

    name: str
    platform: str
    method: str
    ac_text: str
    ac_keywords: tuple[str, ...]
    reference: str
    bone_model: str
    manufacturer: str = ""
    model: str = ""
    software_versions: tuple[str, ...] = ()
    params: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: float | None = None) -> float:
        """A numeric parameter (``default`` when absent; KeyError without a default)."""
        if key in self.params:
            return self.params[key]
        if default is None:
            raise KeyError(f"setup {self.name!r} has no parameter {key!r}")
        return default


def _check_setup(path, name: str, values: dict[str, str]) -> None:
    for key in REQUIRED_KEYS:
        if not values.get(key, "").strip():
            raise ACSetupError(f"{path}: setup {name!r}: missing value for {key!r}")
    if values["platform"] not in ("PET-CT", "PET-MR"):
        raise ACSetupError(f"{path}: setup {name!r}: platform must be PET-CT or PET-MR, "
                           f"not {values['platform']!r}")
    if values["bone_model"] not in BONE_MODELS:
        raise ACSetupError(f"{path}: setup {name!r}: bone_model {values['bone_model']!r} "
                           f"is not one of {', '.join(BONE_MODELS)}")
    if values["platform"] == "PET-MR":
        for key in PETMR_KEYS:
            if not values.get(key, "").strip():
                raise ACSetupError(f"{path}: setup {name!r}: missing value for {key!r}")
        if values["bone_model"] in ("none", "model") and "mu_fat" not in values:
            raise ACSetupError(f"{path}: setup {name!r}: missing value for 'mu_fat'")
        if values["bone_model"] in ("model", "atlas") and "mu_bone" not in values:
            raise ACSetupError(f"{path}: setup {name!r}: missing value for 'mu_bone'")


def _number(path, name, key, text) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ACSetupError(f"{path}: setup {name!r}: {key} = {text!r} is not a number") \
            from None
    if not math.isfinite(value):
        raise ACSetupError(f"{path}: setup {name!r}: {key} = {text!r} is not finite")
    if value < 0:
        raise ACSetupError(f"{path}: setup {name!r}: {key} = {value} is negative")
    if key.startswith("mu_") and value > MU_MAX:
        raise ACSetupError(f"{path}: setup {name!r}: {key} = {value} 1/cm is not physical "
                           f"(above {MU_MAX})")
    if (key.endswith("_probability") or key.endswith("_fraction") or key.startswith(
            "sinus_air_found") or key.endswith("_extent")) and value > 1:
        raise ACSetupError(f"{path}: setup {name!r}: {key} = {value} is above 1")
    return value


def read_setups(path) -> dict[str, ACSetup]:
    """Read and check a setup table (raises :class:`ACSetupError` naming what is wrong).

    >>> from importlib import resources
    >>> table = read_setups(resources.files("bids_harmonize.data").joinpath("acsetups.tsv"))
    >>> sorted(table)
    ['atlas', 'ct', 'dixon-bone', 'dixon-nobone', 'zte']
    """
    rows: dict[str, dict[str, tuple[str, str, str]]] = {}
    if isinstance(path, str):
        path = Path(path)
    with path.open() as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing_cols = {"setup", "key", "value", "unit", "source"} - set(reader.fieldnames or ())
        if missing_cols:
            raise ACSetupError(f"{path}: missing column(s) {', '.join(sorted(missing_cols))}")
        for line, row in enumerate(reader, start=2):
            name, key = (row.get("setup") or "").strip(), (row.get("key") or "").strip()
            if not name or not key:
                raise ACSetupError(f"{path}: line {line}: empty setup or key")
            if key in rows.setdefault(name, {}):
                raise ACSetupError(f"{path}: setup {name!r}: {key!r} given twice")
            rows[name][key] = ((row.get("value") or "").strip(), (row.get("unit") or "").strip(),
                               (row.get("source") or "").strip())
    if not rows:
        raise ACSetupError(f"{path}: no setups")
    out = {}
    for name, items in rows.items():
        values = {k: v[0] for k, v in items.items()}
        for key, (value, _unit, source) in items.items():
            if not value:
                raise ACSetupError(f"{path}: setup {name!r}: missing value for {key!r}")
            if key not in TEXT_KEYS and not source:
                raise ACSetupError(f"{path}: setup {name!r}: {key} has no source")
        _check_setup(path, name, values)
        params = {k: _number(path, name, k, v) for k, v in values.items() if k not in TEXT_KEYS}
        if "mu_bone" in params and params["mu_bone"] <= params["mu_soft"]:
            raise ACSetupError(f"{path}: setup {name!r}: mu_bone {params['mu_bone']} is not "
                               f"above mu_soft {params['mu_soft']}")
        if "mu_fat" in params and params["mu_fat"] > params["mu_soft"]:
            raise ACSetupError(f"{path}: setup {name!r}: mu_fat {params['mu_fat']} is above "
                               f"mu_soft {params['mu_soft']}")
        lo, hi = params.get("sinus_air_found_min"), params.get("sinus_air_found_max")
        if lo is not None and hi is not None and lo > hi:
            raise ACSetupError(f"{path}: setup {name!r}: sinus_air_found_min > _max")
        out[name] = ACSetup(
            name=name, platform=values["platform"], method=values["method"],
            ac_text=values["ac_text"],
            ac_keywords=tuple(k.strip().lower() for k in values["ac_keywords"].split(";")
                              if k.strip()),
            reference=values["reference"], bone_model=values["bone_model"],
            manufacturer=values.get("manufacturer", ""), model=values.get("model", ""),
            software_versions=tuple(v.strip() for v in values.get("software_versions", "")
                                    .split(";") if v.strip()),
            params=params, units={k: v[1] for k, v in items.items() if k in params},
            sources={k: v[2] for k, v in items.items()})
    return out


@cache
def load_setups() -> dict[str, ACSetup]:
    """The documented setup table of the package (``data/acsetups.tsv``), checked.

    >>> s = load_setups()["dixon-nobone"]
    >>> s.model, s.bone_model, s.get("mu_soft")
    ('Biograph mMR', 'none', 0.1)
    """
    return read_setups(resources.files("bids_harmonize.data").joinpath("acsetups.tsv"))


def get_setup(name: str) -> ACSetup:
    """A setup by name; an unknown name is a ``ValueError`` naming the known ones."""
    table = load_setups()
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown attenuation-correction setup {name!r}; known: "
                         f"{', '.join(sorted(table))}") from None


def _norm(text: str | None) -> str:
    return "".join(ch for ch in (text or "").lower() if ch.isalnum())


def _version_tokens(text) -> str:
    if isinstance(text, (list, tuple)):
        text = " ".join(str(t) for t in text)
    return _norm(str(text or ""))


def _text_matches(setup: ACSetup, ac_text: str) -> bool:
    low = ac_text.lower()
    return any(re.search(r"(?<![a-z])" + re.escape(k) + r"(?![a-z])", low)
               for k in setup.ac_keywords)


def infer_ac_setup(model: str | None, software_versions=None, ac_text: str | None = None
                   ) -> tuple[str | None, str]:
    """The attenuation-correction setup of a PET series, and how it was told.

    Order: a PET-CT scanner model (``data/scanners.tsv``) is ``ct``; among the setups of
    the scanner model, a specific ``AttenuationCorrection`` text wins (``zte``, ``atlas``,
    ``model-based bone`` ...), then the software version, then a generic MR-AC text; a
    model without known setups falls back to the text alone.  ``None`` when nothing fits.

    >>> infer_ac_setup("Biograph mMR", "syngo MR B20P", "MR-based Dixon")
    ('dixon-nobone', 'software version "syngo MR B20P" of Biograph mMR')
    >>> infer_ac_setup("Biograph mMR", "syngo MR E11", "Dixon with model-based bone")[0]
    'dixon-bone'
    >>> infer_ac_setup("SIGNA PET/MR", "MP26", "ZTE")[0], infer_ac_setup("Discovery MI")[0]
    ('zte', 'ct')
    >>> infer_ac_setup("Unknown 3000", None, None)
    (None, 'no scanner model, software version or AttenuationCorrection text matches a known setup')
    """
    from bids_harmonize.platforms import platform_from_model

    table = load_setups()
    text = (ac_text or "").strip()
    platform = platform_from_model(model)
    if platform == "PET-CT":
        return "ct", f'PET-CT scanner model "{model}"'
    names = tuple(n for n in scanner_setups(model) if n != "ct") if model else ()
    candidates = [table[n] for n in names if n in table] or [
        s for s in table.values() if s.platform == "PET-MR"]
    what = f"{model}" if names else "any PET-MR"
    # a specific text: keywords of exactly one candidate (generic Dixon words excluded
    # when a more specific candidate matches)
    if text:
        hits = [s for s in candidates if _text_matches(s, text)]
        specific = [s for s in hits if s.bone_model != "none"]
        if len(specific) == 1:
            return specific[0].name, f'AttenuationCorrection "{text}" ({what})'
    version = _version_tokens(software_versions)
    if version and names:
        hits = [s for s in candidates
                if any(_norm(v) and _norm(v) in version for v in s.software_versions)]
        # the longest matching version string wins ("MP26.1" over "MP26")
        if hits:
            best = max(hits, key=lambda s: max(len(_norm(v)) for v in s.software_versions
                                              if _norm(v) in version))
            shown = software_versions if isinstance(software_versions, str) else \
                ", ".join(software_versions)
            return best.name, f'software version "{shown}" of {model}'
    if text:
        hits = [s for s in candidates if _text_matches(s, text)]
        if len(hits) == 1:
            return hits[0].name, f'AttenuationCorrection "{text}" ({what})'
    if text and platform is None and not names:
        ct = table.get("ct")
        if ct is not None and _text_matches(ct, text):
            return "ct", f'AttenuationCorrection "{text}"'
    return None, ("no scanner model, software version or AttenuationCorrection text matches "
                  "a known setup" if not names else
                  f"scanner {model} has several setups ({', '.join(names)}); neither the "
                  "software version nor the AttenuationCorrection text tells which")


@cache
def _scanner_setups_table() -> dict[str, tuple[str, ...]]:
    path = resources.files("bids_harmonize.data").joinpath("scanners.tsv")
    table = {}
    with path.open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            setups = tuple(s.strip() for s in (row.get("ac_setups") or "").split(";")
                           if s.strip())
            for name in [row["model"], *filter(None, (row.get("aliases") or "").split(";"))]:
                table[_norm(name)] = setups
    return table


def scanner_setups(model: str | None) -> tuple[str, ...]:
    """Setup names a scanner model can run (``ac_setups`` column of ``data/scanners.tsv``).

    >>> scanner_setups("Biograph mMR"), scanner_setups("Biograph Vision")
    (('dixon-nobone', 'dixon-bone'), ('ct',))
    """
    return _scanner_setups_table().get(_norm(model), ())


def mumap_path(pet_path) -> Path:
    """Where the scanner's own μ-map of a PET series lives (see the module docstring).

    >>> mumap_path("/d/sub-01/ses-mr/pet/sub-01_ses-mr_trc-PiB_rec-acdyn_pet.nii.gz").name
    'sub-01_ses-mr_trc-PiB_rec-acdyn_mumap.nii.gz'
    >>> mumap_path("sub-01_ses-mr_trc-PiB_pet.json").name
    'sub-01_ses-mr_trc-PiB_mumap.nii.gz'
    """
    p = Path(pet_path)
    name = p.name
    for ext in (".nii.gz", ".nii", ".json"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    if not name.endswith("_pet"):
        raise ValueError(f"{pet_path}: not a PET series file (no _pet suffix)")
    return p.with_name(name[: -len("_pet")] + MUMAP_SUFFIX + ".nii.gz")


def mumap_sidecar(setup: ACSetup, pet_uri: str, *, software_versions: str = "",
                  hardware_included: bool = False) -> dict:
    """The JSON sidecar of a scanner μ-map (``pet_uri``: BIDS URI of the corrected PET).

    >>> d = mumap_sidecar(load_setups()["zte"], "bids::sub-01/ses-mr/pet/x_pet.nii.gz")
    >>> d["Units"], d["PhotonEnergyKeV"], d["AttenuationCorrectionSetup"]
    ('cm^-1', 511, 'zte')
    """
    return {
        "Description": "attenuation map (linear attenuation coefficients at 511 keV) the "
                       "scanner used to correct the PET series in IntendedFor",
        "Units": "cm^-1",
        "PhotonEnergyKeV": 511,
        "AttenuationCorrectionSetup": setup.name,
        "AttenuationCorrection": setup.ac_text,
        "AttenuationCorrectionMethod": setup.method,
        "AttenuationCorrectionMethodReference": setup.reference,
        "Manufacturer": setup.manufacturer,
        "ManufacturersModelName": setup.model,
        "SoftwareVersions": software_versions or (setup.software_versions[-1]
                                                  if setup.software_versions else ""),
        "HardwareIncluded": bool(hardware_included),
        "IntendedFor": [pet_uri],
    }
