"""Which platform a PET series was acquired on: PET-MR, PET-CT or a PET-only scanner.

From the scanner model (``data/scanners.tsv``), the ``AttenuationCorrection`` text, a CT in
the session, and the user's ``--platform-map``. Pure functions over sidecar metadata: used
by discovery (:mod:`bids_harmonize.bids`) and by the attenuation-correction setups
(:mod:`bids_harmonize.acsetups`), neither of which it imports.
"""

from __future__ import annotations

import csv
import logging
import re
from functools import cache
from importlib import resources

LOGGER = logging.getLogger("bids_harmonize.bids")
#: ``PET``: a PET-only scanner with measured (transmission) attenuation correction (HRRT,
#: ECAT HR+, GE Advance): preprocessed and quantified, never harmonized, and a reference
#: like PET-CT where one is needed.
PLATFORMS = ("PET-MR", "PET-CT", "PET")
#: Where the scanner models live, for messages that say how to add one.
SCANNER_TABLE = "bids_harmonize/data/scanners.tsv"


def _norm(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


@cache
def scanner_table() -> dict[str, str]:
    """Known scanner models (normalised name or alias) -> platform."""
    path = resources.files("bids_harmonize.data").joinpath("scanners.tsv")
    table = {}
    with path.open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            names = [row["model"], *filter(None, (row.get("aliases") or "").split(";"))]
            for name in names:
                table[_norm(name)] = row["platform"]
    return table


def platform_from_model(model: str | None) -> str | None:
    """Platform of a known scanner model, or None.

    The whole name first; else a word of it that names one model of the table and no
    other platform (``High-Resolution Research Tomograph (HRRT, CTI/Siemens)`` -> HRRT).

    >>> platform_from_model("Biograph mMR"), platform_from_model("Discovery MI")
    ('PET-MR', 'PET-CT')
    >>> platform_from_model("SIGNA PET/MR"), platform_from_model("Unknown 3000") is None
    ('PET-MR', True)
    >>> platform_from_model("Siemens HR+"), platform_from_model("HRRT (CTI)")
    ('PET', 'PET')
    """
    if not model:
        return None
    table = scanner_table()
    if _norm(model) in table:
        return table[_norm(model)]
    words = {_norm(w) for w in re.split(r"[\s(),/;]+", str(model))}
    found = {table[w] for w in words if len(w) >= 3 and w in table}
    return found.pop() if len(found) == 1 else None


def platform_from_ac_text(text: str | None) -> str | None:
    """Platform implied by an ``AttenuationCorrection`` text, or None.

    >>> platform_from_ac_text("MR-based Dixon 4-class segmentation")
    'PET-MR'
    >>> platform_from_ac_text("CT-based attenuation correction")
    'PET-CT'
    >>> platform_from_ac_text("10-min transmission scan")
    'PET'
    >>> platform_from_ac_text("measured") is None
    True
    """
    if not text:
        return None
    words = text.lower()
    if "transmission" in words:  # a rod or point source: a PET-only scanner
        return "PET"
    if any(k in words for k in ("dixon", "mr-based", "mrac", "mr based", "ute", "zte", "mri")):
        return "PET-MR"
    if any(k in words for k in ("ct-based", "ct based", "ctac", "computed tomography", " ct")) or (
        words.startswith("ct")
    ):
        return "PET-CT"
    return None


def infer_platform(
    metadata: dict,
    *,
    subject: str,
    session: str | None,
    has_ct: bool,
    platform_map: dict[str, str] | None = None,
) -> tuple[str | None, str]:
    """Decide PET-MR or PET-CT for one PET series; return ``(platform, how)``.

    Order: the user's map, the scanner model, the attenuation-correction text,
    a CT in the session. A model that disagrees with the text wins, with a warning.

    >>> infer_platform({"ManufacturersModelName": "Biograph mMR",
    ...                 "AttenuationCorrection": "CT-based"}, subject="01", session="a",
    ...                has_ct=False)
    ('PET-MR', 'ManufacturersModelName "Biograph mMR" (conflicting AttenuationCorrection text ignored)')
    >>> infer_platform({}, subject="01", session="a", has_ct=True)
    ('PET-CT', 'a CT image in the same session')
    """
    platform_map = platform_map or {}
    model = metadata.get("ManufacturersModelName")
    keys = [f"sub-{subject}_ses-{session}", f"ses-{session}"] if session else []
    keys += [f"sub-{subject}", str(model)] if model else [f"sub-{subject}"]
    for key in keys:
        if key in platform_map:
            return platform_map[key], f"--platform-map entry {key!r}"
    by_model = platform_from_model(model)
    by_text = platform_from_ac_text(metadata.get("AttenuationCorrection"))
    if by_model:
        how = f'ManufacturersModelName "{model}"'
        if by_text and by_text != by_model:
            LOGGER.warning(
                "sub-%s ses-%s: scanner %r is %s but AttenuationCorrection says %r; trusting the "
                "scanner model", subject, session, model, by_model, metadata["AttenuationCorrection"],
            )
            how += " (conflicting AttenuationCorrection text ignored)"
        return by_model, how
    if by_text:
        return by_text, f'AttenuationCorrection "{metadata["AttenuationCorrection"]}"'
    if has_ct:
        return "PET-CT", "a CT image in the same session"
    if model:
        return None, (f'scanner model "{model}" is not in {SCANNER_TABLE}, and no '
                      "AttenuationCorrection text or CT decides")
    return None, "no scanner model, attenuation text or CT to decide from"
