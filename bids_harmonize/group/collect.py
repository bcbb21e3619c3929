"""Collect the participant quantification tables (MRIQC ``generate_tsv`` style).

Reads only participant outputs (CONTRIBUTING.md, "Participant outputs")::

    sub-<s>/ses-<ses>/pet/sub-<s>_ses-<ses>_trc-<T>_seg-<atlas>_desc-<d>_suvr.tsv
    sub-<s>/ses-<ses>/pet/sub-<s>_ses-<ses>_trc-<T>_seg-<atlas>_desc-<d>_measures.tsv
    sub-<s>/ses-<ses>/pet/sub-<s>_ses-<ses>_trc-<T>_space-T1w_desc-preproc_pet.json

Entities come from the file names, ``Platform`` / ``TracerName`` /
``ManufacturersModelName`` from the PET sidecar. ``desc-preproc`` tables are the
``raw`` image version, ``desc-harmonized`` the ``harmonized`` one.

A participant with a missing or malformed table or sidecar is reported (logged and
listed in :attr:`Collection.problems`) and all of its tables are skipped, so that
comparisons before and after harmonization use the same participants. Nothing found
at all raises :class:`NoParticipantTablesError`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

LOGGER = logging.getLogger(__name__)

KEYS = ("subject", "session", "tracer", "platform", "version", "seg")
VERSIONS = {"preproc": "raw", "harmonized": "harmonized"}
_SUFFIXES = ("_suvr.tsv", "_measures.tsv")
_NA = {"n/a", "", "nan", "NaN"}


class NoParticipantTablesError(FileNotFoundError):
    """No participant quantification tables under an output folder."""


@dataclass
class Collection:
    """Everything the group level knows, as DataFrames.

    ``images``: one row per PET image and atlas (:data:`KEYS` + ``model``, ``tracer_name``);
    ``measures``: long, one row per image and measure (``image`` is the row of ``images``);
    ``regions``: long, one row per image and region (``suvr``, ``kind``);
    ``problems``: list of ``{"participant", "path", "reason"}``.
    """

    images: pd.DataFrame
    measures: pd.DataFrame
    regions: pd.DataFrame
    problems: list[dict] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)


def _entities(name: str) -> dict[str, str]:
    stem = name.split(".")[0]
    return dict(part.split("-", 1) for part in stem.split("_") if "-" in part)


class _Malformed(ValueError):
    pass


def _read_columns(path: str, wanted: tuple[str, ...]) -> list[list[str]]:
    """Columns of a TSV as lists of strings (plain Python: much faster than pandas here)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise _Malformed(f"unreadable: {exc}") from exc
    lines = text.splitlines()
    if not lines:
        raise _Malformed("empty file")
    header = lines[0].split("\t")
    missing = [c for c in wanted if c not in header]
    if missing:
        raise _Malformed(f"missing columns {missing} (header: {header})")
    pos = [header.index(c) for c in wanted]
    width = len(header)
    cols: list[list[str]] = [[] for _ in wanted]
    for num, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != width:
            raise _Malformed(f"line {num} has {len(fields)} fields, header has {width}")
        for col, p in zip(cols, pos, strict=True):
            col.append(fields[p])
    if not cols[0]:
        raise _Malformed("no data rows")
    return cols


def _floats(values: list[str], what: str) -> list[float]:
    out = []
    for v in values:
        if v in _NA:
            out.append(np.nan)
            continue
        try:
            out.append(float(v))
        except ValueError as exc:
            raise _Malformed(f"non-numeric {what} {v!r}") from exc
    return out


def find_tables(output_dir: str | Path) -> dict[str, dict[str, list[str]]]:
    """File names per participant, per PET folder: ``{sub: {pet_dir: [names]}}`` (os.scandir)."""
    found: dict[str, dict[str, list[str]]] = {}
    root = str(output_dir)
    with os.scandir(root) as top:
        subjects = sorted(e.name for e in top if e.is_dir() and e.name.startswith("sub-"))
    for sub in subjects:
        found[sub] = {}
        sub_dir = os.path.join(root, sub)
        with os.scandir(sub_dir) as it:
            sessions = sorted(e.name for e in it if e.is_dir() and e.name.startswith("ses-"))
        for ses in sessions:
            pet_dir = os.path.join(sub_dir, ses, "pet")
            if os.path.isdir(pet_dir):
                with os.scandir(pet_dir) as it:
                    found[sub][pet_dir] = sorted(e.name for e in it)
    return found


def collect_participant_tables(output_dir: str | Path) -> Collection:
    """Find, parse, sort and de-duplicate the participant tables under ``output_dir``."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise NoParticipantTablesError(f"output folder {output_dir} does not exist")
    listing = find_tables(output_dir)

    images: list[dict] = []
    m_image, m_name, m_value = [], [], []
    r_image, r_name, r_kind, r_value = [], [], [], []
    problems: list[dict] = []
    units: dict[str, str] = {}
    seen: set[tuple] = set()
    n_tables = 0

    for sub, pet_dirs in listing.items():
        p_images, p_measures, p_regions, p_units = [], [], [], {}
        reason = None
        for pet_dir, names in pet_dirs.items():
            tables = [n for n in names if n.endswith(_SUFFIXES) and "_seg-" in n]
            n_tables += len(tables)
            by_image: dict[str, set[str]] = {}
            for name in tables:
                stem, suffix = name.rsplit("_", 1)
                by_image.setdefault(stem, set()).add(suffix)
            sidecars = {}
            for stem, suffixes in sorted(by_image.items()):
                if len(suffixes) != 2:
                    have = next(iter(suffixes))
                    other = "measures.tsv" if have == "suvr.tsv" else "suvr.tsv"
                    reason = (f"{stem}_{have} has no matching _{other}", stem)
                    break
                ent = _entities(stem)
                if not {"sub", "ses", "trc", "seg", "desc"} <= set(ent):
                    reason = (f"{stem}: file name lacks sub/ses/trc/seg/desc entities", stem)
                    break
                prefix = "_".join(f"{k}-{ent[k]}" for k in ("sub", "ses", "trc", "rec", "run")
                                  if k in ent)
                if prefix not in sidecars:
                    sidecars[prefix] = _sidecar(pet_dir, prefix, names)
                meta = sidecars[prefix]
                if isinstance(meta, str):
                    reason = (meta, stem)
                    break
                version = VERSIONS.get(ent["desc"], ent["desc"])
                key = (ent["sub"], ent["ses"], ent["trc"], version, ent["seg"])
                if key in seen:
                    problems.append({"participant": sub, "path": os.path.join(pet_dir, stem),
                                     "reason": "duplicate image (same sub/ses/trc/desc/seg); "
                                               "kept the first"})
                    LOGGER.warning("%s: duplicate %s, kept the first", sub, stem)
                    continue
                base = os.path.join(pet_dir, stem)
                try:
                    mcols = _read_columns(base + "_measures.tsv", ("measure", "value", "units"))
                    mvals = _floats(mcols[1], "value")
                    rcols = _read_columns(base + "_suvr.tsv", ("region", "kind", "suvr"))
                    rvals = _floats(rcols[2], "suvr")
                except _Malformed as exc:
                    reason = (f"malformed table: {exc}", stem)
                    break
                seen.add(key)
                p_images.append({
                    "subject": ent["sub"], "session": ent["ses"], "tracer": ent["trc"],
                    "platform": meta["Platform"], "version": version, "seg": ent["seg"],
                    "tracer_name": meta.get("TracerName", "n/a"),
                    "model": meta.get("ManufacturersModelName", "n/a"),
                })
                p_measures.append((mcols[0], mvals))
                p_regions.append((rcols[0], rcols[1], rvals))
                p_units.update(zip(mcols[0], mcols[2], strict=True))
            if reason:
                break
        if reason is None and not p_images:
            reason = ("no quantification tables (*_seg-*_desc-*_{suvr,measures}.tsv)", sub)
        if reason is not None:
            problems.append({"participant": sub, "path": reason[1], "reason": reason[0]})
            LOGGER.warning("skipping participant %s: %s (%s)", sub, reason[0], reason[1])
            continue
        for img, (mn, mv), (rn, rk, rv) in zip(p_images, p_measures, p_regions, strict=True):
            idx = len(images)
            images.append(img)
            m_image.extend([idx] * len(mn))
            m_name.extend(mn)
            m_value.extend(mv)
            r_image.extend([idx] * len(rn))
            r_name.extend(rn)
            r_kind.extend(rk)
            r_value.extend(rv)
        for k, v in p_units.items():
            units.setdefault(k, v)

    if not images:
        detail = "; ".join(f"{p['participant']}: {p['reason']}" for p in problems[:5])
        raise NoParticipantTablesError(
            f"no usable participant quantification tables under {output_dir} "
            f"({len(listing)} sub-* folders, {n_tables} tables). Expected "
            "sub-*/ses-*/pet/*_seg-<atlas>_desc-<preproc|harmonized>_{suvr,measures}.tsv "
            "with a *_space-T1w_desc-preproc_pet.json sidecar; run the participant level "
            "first." + (f" Problems: {detail}" if detail else "")
        )

    image_df = pd.DataFrame(images)
    measures = pd.DataFrame({"image": np.asarray(m_image, dtype=np.int64),
                             "measure": pd.Categorical(m_name),
                             "value": np.asarray(m_value, dtype=float)})
    regions = pd.DataFrame({"image": np.asarray(r_image, dtype=np.int64),
                            "region": pd.Categorical(r_name),
                            "kind": pd.Categorical(r_kind),
                            "suvr": np.asarray(r_value, dtype=float)})
    # Sort images by their keys; renumber so that ``image`` follows the sorted order.
    order = image_df.sort_values(list(KEYS), kind="stable").index.to_numpy()
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    image_df = image_df.loc[order].reset_index(drop=True)
    measures["image"] = rank[measures["image"].to_numpy()]
    regions["image"] = rank[regions["image"].to_numpy()]
    measures = measures.sort_values("image", kind="stable").reset_index(drop=True)
    regions = regions.sort_values("image", kind="stable").reset_index(drop=True)
    LOGGER.info("collected %d images of %d participants (%d skipped)", len(image_df),
                image_df["subject"].nunique(), len({p["participant"] for p in problems}))
    return Collection(images=image_df, measures=measures, regions=regions,
                      problems=problems, units=units)


def _sidecar(pet_dir: str, prefix: str, names: list[str]) -> dict | str:
    """The PET sidecar of an image (``..._space-T1w_desc-preproc_pet.json``), or a reason."""
    wanted = f"{prefix}_space-T1w_desc-preproc_pet.json"
    if wanted not in names:
        alts = [n for n in names if n.startswith(prefix + "_") and n.endswith("_pet.json")
                and "_desc-preproc_" in n]
        if not alts:
            return f"PET sidecar {wanted} not found"
        wanted = alts[0]
    try:
        with open(os.path.join(pet_dir, wanted), encoding="utf-8") as handle:
            meta = json.load(handle)
    except (OSError, ValueError) as exc:
        return f"PET sidecar {wanted} unreadable: {exc}"
    if meta.get("Platform") not in ("PET-MR", "PET-CT"):
        return f"PET sidecar {wanted}: Platform is {meta.get('Platform')!r}, not PET-MR/PET-CT"
    return meta
