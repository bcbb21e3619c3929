"""Collect the participant quantification tables (MRIQC ``generate_tsv`` style).

Reads only participant outputs, found by the one reader
:func:`bids_harmonize.derivatives.collect_derivatives` (kinds ``suvr``, ``measures`` and
the ``pet_preproc`` sidecar of ``data/io_spec.json``)::

    sub-<s>/ses-<ses>/pet/sub-<s>_ses-<ses>_trc-<T>[_rec-<R>][_run-<N>]_seg-<atlas>_desc-<d>_suvr.tsv
    sub-<s>/ses-<ses>/pet/sub-<s>_ses-<ses>_trc-<T>[_rec-<R>][_run-<N>]_seg-<atlas>_desc-<d>_measures.tsv
    sub-<s>/ses-<ses>/pet/sub-<s>_ses-<ses>_trc-<T>[_rec-<R>][_run-<N>]_space-T1w_desc-preproc_pet.json

Entities come from the file names (``series`` is the PET series' label, e.g.
``ses-petmr_trc-PiB_run-2``, so two runs of one session are two images),
``Platform`` / ``TracerName`` / ``ManufacturersModelName`` from the PET sidecar.
``desc-preproc`` tables are the ``raw`` image version, ``desc-harmonized`` the
``harmonized`` one.

A participant with a missing or malformed table or sidecar is reported (logged and
listed in :attr:`Collection.problems`) and all of its tables are skipped, so that
comparisons before and after harmonization use the same participants. Nothing found
at all raises :class:`NoParticipantTablesError`.

Speed: tables are parsed with plain Python (one ``split`` per file) and stored as
"layouts" (the tuple of region or measure names, shared by all tables of an atlas and
tracer) plus value arrays, so 10,000s of tables cost little more than opening them.
Large folders are parsed by ``n_procs`` worker processes, split by participant.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bids_harmonize.derivatives import Derivative, collect_derivatives, series_label
from bids_harmonize.runstatus import incomplete_participants

LOGGER = logging.getLogger(__name__)

KEYS = ("subject", "session", "tracer", "platform", "version", "seg", "series")
VERSIONS = {"preproc": "raw", "harmonized": "harmonized"}
_TABLES = ("suvr", "measures")
_NA = {"n/a", "", "nan", "NaN"}
#: Below this many participants, parse in-process (workers cost more than they save).
PARALLEL_ABOVE = 2000


class NoParticipantTablesError(FileNotFoundError):
    """No participant quantification tables under an output folder."""


@dataclass
class Collection:
    """Everything the group level knows, as DataFrames.

    ``images``: one row per PET image and atlas (:data:`KEYS` + ``tracer_name``, ``model``);
    ``measures``: long, one row per image and measure (``image`` is the row of ``images``;
    ``measure`` categorical, ``value``);
    ``regions``: long, one row per image and region (``region``, ``kind`` categorical, ``suvr``);
    ``problems``: list of ``{"participant", "path", "reason"}``;
    ``units``: measure -> units (from the first table that names it).
    """

    images: pd.DataFrame
    measures: pd.DataFrame
    regions: pd.DataFrame
    problems: list[dict] = field(default_factory=list)
    units: dict[str, str] = field(default_factory=dict)


class _Malformed(ValueError):
    pass


def _read_text(path: str) -> str:
    """A small file's text (``os.read``: cheaper than ``open`` for 10,000s of files)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8")


def _read_columns(path: str, wanted: tuple[str, ...]) -> list[list[str]]:
    """Columns of a TSV as lists of strings."""
    try:
        text = _read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise _Malformed(f"unreadable: {exc}") from exc
    head, _, body = text.partition("\n")
    header = head.rstrip("\r").split("\t")
    missing = [c for c in wanted if c not in header]
    if missing:
        raise _Malformed(f"missing columns {missing} (header: {header})")
    width = len(header)
    body = body.replace("\r\n", "\n").strip("\n")
    if not body:
        raise _Malformed("no data rows")
    n_rows = body.count("\n") + 1
    # One split for the whole file; a row with a wrong field count changes the total.
    flat = body.replace("\n", "\t").split("\t")
    if len(flat) != n_rows * width:
        for num, line in enumerate(body.split("\n"), start=1):
            if line.count("\t") != width - 1:
                raise _Malformed(f"data row {num} has {line.count(chr(9)) + 1} fields, "
                                 f"header has {width}")
        raise _Malformed("inconsistent number of fields")
    return [flat[header.index(c)::width] for c in wanted]


def _floats(values, what: str) -> list[float]:
    try:
        return list(map(float, values))  # fast path; float() also reads 'nan'
    except ValueError:
        pass
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


def _list_dirs(path: str, prefix: str) -> list[str]:
    with os.scandir(path) as it:
        return sorted(e.name for e in it if e.name.startswith(prefix) and e.is_dir())


def window_text(window) -> str:
    """The sidecar's ``TimeWindow`` (the minutes actually averaged) as ``start-end``.

    >>> window_text([90.0, 110.0]), window_text(None), window_text(["a"])
    ('90-110', 'n/a', 'n/a')
    """
    try:
        start, end = (float(v) for v in window)
    except (TypeError, ValueError):
        return "n/a"
    return f"{start:g}-{end:g}"


def _sidecar(candidates: list[Derivative]) -> dict | str:
    """The PET sidecar of a series (``space-T1w`` first), or the reason it is unusable."""
    if not candidates:
        return "PET sidecar *_space-T1w_desc-preproc_pet.json not found"
    chosen = min(candidates, key=lambda d: d.get("space") != "T1w")
    try:
        meta = chosen.metadata()
    except ValueError as exc:
        return f"PET sidecar {exc}"
    if meta.get("Platform") not in ("PET-MR", "PET-CT", "PET"):
        return (f"PET sidecar {chosen.path.name}: Platform is {meta.get('Platform')!r}, "
                "not PET-MR/PET-CT/PET")
    return meta


class _Parsed:
    """Parsed tables of some participants, in the compact layout form."""

    def __init__(self):
        self.images: list[tuple] = []
        self.layouts: dict[tuple, int] = {}
        self.r_layout: list[int] = []
        self.m_layout: list[int] = []
        self.r_values: list[float] = []
        self.m_values: list[float] = []
        self.problems: list[dict] = []
        self.units: dict[str, str] = {}
        self.n_tables = 0

    def layout(self, key: tuple) -> int:
        return self.layouts.setdefault(key, len(self.layouts))


def _parse_subject(root: str, sub: str, out: _Parsed, seen: set) -> None:
    """Parse one participant into ``out``; on any problem, report it and keep nothing."""
    staged, reason = [], None
    found = collect_derivatives(root, subject=sub[4:], kinds=(*_TABLES, "pet_preproc"))
    sidecars: dict[tuple, list[Derivative]] = {}
    metas: dict[tuple, dict | str] = {}
    by_image: dict[tuple, dict[str, Derivative]] = {}
    for deriv in found:
        if deriv.kind == "pet_preproc":
            if deriv.get("extension") == ".json":
                sidecars.setdefault(deriv.series, []).append(deriv)
        elif deriv.get("extension") == ".tsv":
            out.n_tables += 1
            image = (deriv.series, deriv.get("seg"), deriv.get("desc"))
            by_image.setdefault(image, {})[deriv.kind] = deriv
    for (series, seg, desc), tables in sorted(by_image.items()):
        some = next(iter(tables.values()))
        stem = str(some.path).rsplit("_", 1)[0]
        if len(tables) != 2:
            (have,) = tables
            other = "measures" if have == "suvr" else "suvr"
            reason = (f"{os.path.basename(stem)}_{have}.tsv has no matching _{other}.tsv", stem)
            break
        ent = some.entities
        if "tracer" not in ent:
            reason = (f"{os.path.basename(stem)}: file name lacks a trc- entity", stem)
            break
        if series not in metas:
            metas[series] = _sidecar(sidecars.get(series, []))
        meta = metas[series]
        if isinstance(meta, str):
            reason = (meta, stem)
            break
        label = series_label(ent)
        key = (ent["subject"], ent.get("session"), ent["tracer"], VERSIONS.get(desc, desc), seg,
               label)
        if key in seen or any(s[0][0] == key for s in staged):
            out.problems.append({"participant": sub, "path": stem,
                                 "reason": "duplicate image (same series/desc/seg); "
                                           "kept the first"})
            LOGGER.warning("%s: duplicate %s, kept the first", sub, stem)
            continue
        try:
            mname, mval, munit = _read_columns(str(tables["measures"].path),
                                               ("measure", "value", "units"))
            mvals = _floats(mval, "value")
            rname, rkind, rval = _read_columns(str(tables["suvr"].path),
                                               ("region", "kind", "suvr"))
            rvals = _floats(rval, "suvr")
        except _Malformed as exc:
            reason = (f"malformed table: {exc}", stem)
            break
        image = (key, meta["Platform"], meta.get("TracerName", "n/a"),
                 meta.get("ManufacturersModelName", "n/a"), window_text(meta.get("TimeWindow")))
        staged.append((image, ("m", tuple(mname)), mvals, ("r", tuple(rname), tuple(rkind)),
                       rvals, dict(zip(mname, munit, strict=True))))
    if reason is None and not staged:
        reason = ("no quantification tables (*_seg-*_desc-*_{suvr,measures}.tsv)", sub)
    if reason is not None:
        out.problems.append({"participant": sub, "path": reason[1], "reason": reason[0]})
        LOGGER.warning("skipping participant %s: %s (%s)", sub, reason[0], reason[1])
        return
    for image, mkey, mvals, rkey, rvals, units in staged:
        seen.add(image[0])
        (s, ses, trc, version, seg, label), platform, tracer_name, model, window = image
        out.images.append((s, ses, trc, platform, version, seg, label, tracer_name, model,
                           window))
        out.m_layout.append(out.layout(mkey))
        out.m_values.extend(mvals)
        out.r_layout.append(out.layout(rkey))
        out.r_values.extend(rvals)
        for k, v in units.items():
            out.units.setdefault(k, v)


def _parse_subjects(root: str, subjects: list[str]) -> _Parsed:
    out, seen = _Parsed(), set()
    for sub in subjects:
        _parse_subject(root, sub, out, seen)
    return out


def _long(images: int, layout_ids: list[int], layouts: list[tuple], values: list[float],
          name_col: str, value_col: str, kind: bool) -> pd.DataFrame:
    """Expand per-image layouts and values into a long table with categorical names."""
    vocab: dict[str, int] = {}
    kinds: dict[str, int] = {}
    codes, kcodes, lengths = {}, {}, {}
    for lid in set(layout_ids):
        lay = layouts[lid]
        codes[lid] = np.array([vocab.setdefault(n, len(vocab)) for n in lay[1]], dtype=np.int32)
        lengths[lid] = len(lay[1])
        if kind:
            kcodes[lid] = np.array([kinds.setdefault(k, len(kinds)) for k in lay[2]],
                                   dtype=np.int8)
    n_per = np.array([lengths[lid] for lid in layout_ids], dtype=np.int64)
    frame = {
        "image": np.repeat(np.arange(images, dtype=np.int64), n_per),
        name_col: pd.Categorical.from_codes(
            np.concatenate([codes[lid] for lid in layout_ids]) if layout_ids
            else np.zeros(0, np.int32), categories=list(vocab)),
    }
    if kind:
        frame["kind"] = pd.Categorical.from_codes(
            np.concatenate([kcodes[lid] for lid in layout_ids]) if layout_ids
            else np.zeros(0, np.int8), categories=list(kinds))
    frame[value_col] = np.asarray(values, dtype=float)
    return pd.DataFrame(frame)


def collect_participant_tables(output_dir: str | Path, *, n_procs: int | None = None
                               ) -> Collection:
    """Find, parse, sort and de-duplicate the participant tables under ``output_dir``.

    ``n_procs``: worker processes for large folders (default: the CPUs this process may
    use, at most 2 ... 8; in-process below :data:`PARALLEL_ABOVE` participants).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise NoParticipantTablesError(f"output folder {output_dir} does not exist")
    root = str(output_dir)
    # participants a run started and never finished (runstatus marker) are left out
    incomplete = {f"sub-{s}" for s in incomplete_participants(output_dir)}
    subjects = [s for s in _list_dirs(root, "sub-") if s not in incomplete]
    if n_procs is None:
        n_procs = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else (os.cpu_count() or 1), 8)
    if n_procs > 1 and len(subjects) > PARALLEL_ABOVE:
        chunks = [subjects[i::n_procs] for i in range(n_procs)]
        # fork is cheapest, but not after torch has started its threads
        method = "fork" if "torch" not in sys.modules else "forkserver"
        if method not in mp.get_all_start_methods():
            method = None
        with ProcessPoolExecutor(max_workers=n_procs,
                                 mp_context=mp.get_context(method)) as pool:
            parts = list(pool.map(_parse_subjects, [root] * n_procs, chunks))
    else:
        parts = [_parse_subjects(root, subjects)]

    # Merge the parts (each with its own layout numbering).
    images, layouts, r_lay, m_lay, r_vals, m_vals = [], [], [], [], [], []
    problems, units, n_tables, index = [], {}, 0, {}
    for part in parts:
        remap = {}
        for key, lid in part.layouts.items():
            remap[lid] = index.setdefault(key, len(index))
        images.extend(part.images)
        r_lay.extend(remap[i] for i in part.r_layout)
        m_lay.extend(remap[i] for i in part.m_layout)
        r_vals.append(np.asarray(part.r_values, dtype=float))
        m_vals.append(np.asarray(part.m_values, dtype=float))
        problems.extend(part.problems)
        n_tables += part.n_tables
        for k, v in part.units.items():
            units.setdefault(k, v)
    layouts = list(index)
    problems.sort(key=lambda p: (p["participant"], str(p["path"])))

    if not images:
        detail = "; ".join(f"{p['participant']}: {p['reason']}" for p in problems[:5])
        raise NoParticipantTablesError(
            f"no usable participant quantification tables under {output_dir} "
            f"({len(subjects)} sub-* folders, {n_tables} tables). Expected "
            "sub-*/ses-*/pet/*_seg-<atlas>_desc-<preproc|harmonized>_{suvr,measures}.tsv "
            "with a *_space-T1w_desc-preproc_pet.json sidecar; run the participant level "
            "first." + (f" Problems: {detail}" if detail else "")
        )

    image_df = pd.DataFrame(images, columns=[*KEYS, "tracer_name", "model", "time_window"])
    measures = _long(len(images), m_lay, layouts, np.concatenate(m_vals), "measure", "value",
                     kind=False)
    regions = _long(len(images), r_lay, layouts, np.concatenate(r_vals), "region", "suvr",
                    kind=True)
    # Sort images by their keys; renumber so that ``image`` follows the sorted order.
    order = image_df.sort_values(list(KEYS), kind="stable").index.to_numpy()
    if not np.array_equal(order, np.arange(order.size)):
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        image_df = image_df.loc[order].reset_index(drop=True)
        measures["image"] = rank[measures["image"].to_numpy()]
        regions["image"] = rank[regions["image"].to_numpy()]
        measures = measures.sort_values("image", kind="stable").reset_index(drop=True)
        regions = regions.sort_values("image", kind="stable").reset_index(drop=True)
    image_df = add_harmonization_columns(image_df, output_dir)
    LOGGER.info("collected %d images of %d participants (%d skipped)", len(image_df),
                image_df["subject"].nunique(), len({p["participant"] for p in problems}))
    return Collection(images=image_df, measures=measures, regions=regions,
                      problems=problems, units=units)


#: Image-table columns from the PET sidecars (harmonized images: the harmonized sidecar,
#: which holds the harmonizer's out-of-distribution decision; raw: the preproc sidecar).
HARMONIZATION_COLUMNS = {"ac_setup": "AttenuationCorrectionSetup",
                         "ood_decision": "OODDecision", "ood_score": "OODScore"}


def add_harmonization_columns(images: pd.DataFrame, output_dir) -> pd.DataFrame:
    """``images`` with :data:`HARMONIZATION_COLUMNS` (n/a where a sidecar has no such field).

    Only the ``space-T1w`` sidecars are read, one per series and version.
    """
    kinds = {"raw": "pet_preproc", "harmonized": "pet_harmonized"}
    values: dict[tuple, dict] = {}
    for sub in images["subject"].unique():
        for deriv in collect_derivatives(output_dir, subject=str(sub), kinds=tuple(kinds.values())):
            if deriv.get("extension") != ".json" or deriv.get("space") != "T1w":
                continue
            try:
                meta = deriv.metadata()
            except ValueError:
                continue
            version = "harmonized" if deriv.kind == "pet_harmonized" else "raw"
            values[(str(sub), series_label(deriv.entities), version)] = meta
    out = images.copy()
    keys = list(zip(out["subject"].astype(str), out["series"].astype(str),
                    out["version"].astype(str), strict=True))
    for column, field_name in HARMONIZATION_COLUMNS.items():
        col = [values.get(k, {}).get(field_name) for k in keys]
        out[column] = pd.to_numeric(pd.Series(col, dtype=object), errors="coerce") \
            if column == "ood_score" else pd.Series(col, dtype=object)
    return out
