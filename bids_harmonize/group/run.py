"""The group level: tables and PET-MR vs PET-CT agreement from participant outputs only.

:func:`run_group` reads the participant tables (:mod:`bids_harmonize.group.collect`),
never images, and writes under ``<output_dir>/group/``:

==================================  ===================================================
``measures.tsv``                    one row per subject, session, tracer, platform,
                                    version (raw/harmonized) and atlas: all measures
``regions_suvr.tsv``                same rows, one column per region: SUVR
``pairs.tsv``                       per subject, tracer, atlas, measure: PET-CT,
                                    PET-MR raw and PET-MR harmonized values
``agreement_measures.tsv``          PET-MR (raw, harmonized) vs PET-CT per measure
``agreement_regions.tsv``           the same per region (regional SUVR)
``cutoff_agreement.tsv``            classification agreement at the PET-CT cut-off
``cutoff_changes.tsv``              subjects whose class changes
``correlation_similarity.tsv``      inter-regional correlation structure vs PET-CT
``correlations/*_corr.tsv``         the regional SUVR correlation matrices
``group_summary.json``              counts, settings, skipped participants, notes
``group_report.html``               (:mod:`bids_harmonize.reports.group`)
==================================  ===================================================

Every TSV has a JSON data dictionary next to it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from bids_harmonize.group import agreement as ag
from bids_harmonize.group.collect import KEYS, Collection, collect_participant_tables
from bids_harmonize.safeio import atomic_write_json, atomic_write_table, atomic_write_text

LOGGER = logging.getLogger(__name__)

#: Paired conditions: PET-CT (the reference), PET-MR before and after harmonization.
#: A PET-only scanner's measured (transmission) attenuation correction is a reference like
#: CT-based correction (a subject with both: the first session, sorted, with a warning).
CONDITIONS = {("PET-CT", "raw"): "petct", ("PET", "raw"): "petct",
              ("PET-MR", "raw"): "petmr_raw", ("PET-MR", "harmonized"): "petmr_harmonized"}
COMPARISONS = ("petmr_raw", "petmr_harmonized")
#: Measures that are flags, not quantities: left out of the agreement statistics.
FLAGS = ("positive", "centiloid_standard_vois")

STAT_DICTIONARY = {
    "comparison": {"Description": "PET-MR image compared with PET-CT",
                   "Levels": {"petmr_raw": "PET-MR before harmonization",
                              "petmr_harmonized": "PET-MR after harmonization"}},
    "n": {"Description": "Subjects with both values (PET-CT and this PET-MR version)"},
    "mean_diff": {"Description": "Mean of PET-MR - PET-CT (the Bland-Altman bias)",
                  "Units": "units of the measure"},
    "sd_diff": {"Description": "Sample SD (ddof=1) of PET-MR - PET-CT",
                "Units": "units of the measure"},
    "mean_abs_diff": {"Description": "Mean of |PET-MR - PET-CT| (for centiloid: mean "
                                     "absolute Centiloid difference)",
                      "Units": "units of the measure"},
    "percent_bias": {"Description": "Mean over subjects of 100 * (PET-MR - PET-CT) / PET-CT; "
                                    "n/a for measures not on a ratio scale (Centiloid, "
                                    "asymmetry) or with a PET-CT value <= 0",
                     "Units": "%"},
    "loa_lower": {"Description": "Bland-Altman lower 95% limit of agreement: "
                                 "mean_diff - 1.96 sd_diff", "Units": "units of the measure"},
    "loa_upper": {"Description": "Bland-Altman upper 95% limit of agreement: "
                                 "mean_diff + 1.96 sd_diff", "Units": "units of the measure"},
    "icc_2_1": {"Description": "ICC(2,1): two-way random effects, absolute agreement, single "
                               "measurement (Shrout & Fleiss 1979; McGraw & Wong ICC(A,1)). "
                               "Penalises a constant bias."},
    "icc_3_1": {"Description": "ICC(3,1): two-way mixed effects, consistency, single "
                               "measurement (ICC(C,1)). Blind to a constant bias."},
    "pearson_r": {"Description": "Pearson correlation of PET-MR with PET-CT"},
    "spearman_rho": {"Description": "Spearman rank correlation of PET-MR with PET-CT"},
}
KEY_DICTIONARY = {
    "subject": {"Description": "Participant label (sub-)"},
    "session": {"Description": "Session label (ses-)"},
    "tracer": {"Description": "Tracer label (trc-)"},
    "platform": {"Description": "PET-CT or PET-MR (PET sidecar 'Platform')"},
    "version": {"Description": "Image version",
                "Levels": {"raw": "desc-preproc image", "harmonized": "desc-harmonized image"}},
    "seg": {"Description": "Atlas (seg-) the tables were computed with"},
    "series": {"Description": "The PET series' entities (ses-, task-, acq-, trc-, rec-, run-) as "
                         "in its file names: two runs of one session are two series"},
    "tracer_name": {"Description": "PET sidecar 'TracerName'"},
    "model": {"Description": "PET sidecar 'ManufacturersModelName'"},
    "ac_setup": {"Description": "PET-MR attenuation-correction setup (PET sidecar "
                                "'AttenuationCorrectionSetup'; n/a for PET-CT)"},
    "ood_decision": {"Description": "Harmonized images: the harmonizer's out-of-distribution "
                                    "decision (sidecar 'OODDecision')",
                     "Levels": {"apply": "in distribution", "warn": "out of distribution, "
                                "corrected", "passthrough": "out of distribution, input "
                                "written unchanged"}},
    "ood_score": {"Description": "Harmonized images: out-of-distribution score, 0-1 (sidecar "
                                 "'OODScore')"},
    "measure": {"Description": "Summary measure (see the participant *_measures.json)"},
    "region": {"Description": "Atlas region or composite"},
    "petct": {"Description": "Value on PET-CT (reference)"},
    "petmr_raw": {"Description": "Value on PET-MR before harmonization"},
    "petmr_harmonized": {"Description": "Value on PET-MR after harmonization"},
}


#: Group tables keep 10 significant digits (participant tables are far less precise).
_FLOAT = "{:.10g}"


def _column_text(values: pd.Series) -> list[str]:
    if pd.api.types.is_float_dtype(values.dtype):
        arr = values.to_numpy(dtype=float)
        text = list(map(_FLOAT.format, arr.tolist()))
        for i in np.flatnonzero(~np.isfinite(arr)):
            text[i] = "n/a" if np.isnan(arr[i]) else text[i]
        return text
    objs = values.to_numpy(dtype=object)
    missing = pd.isna(objs)
    text = [str(v) for v in objs.tolist()]
    for i in np.flatnonzero(missing):
        text[i] = "n/a"
    return text


def write_tsv(df: pd.DataFrame, path: Path) -> Path:
    """A BIDS TSV (``n/a`` for missing), written column-wise: faster than ``to_csv``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [_column_text(df[c]) for c in df.columns]
    lines = ["\t".join(map(str, df.columns))]
    lines += ["\t".join(row) for row in zip(*cols, strict=True)] if cols else []
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _write(df: pd.DataFrame, path: Path, extra: dict | None = None) -> Path:
    write_tsv(df, path)
    dictionary = {**KEY_DICTIONARY, **STAT_DICTIONARY, **(extra or {})}
    described = {c: dictionary[c] for c in df.columns if c in dictionary}
    atomic_write_json(path.with_suffix(".json"), described)
    return path


def measures_table(col: Collection) -> pd.DataFrame:
    """One row per image (and atlas) with every summary measure as a column."""
    wide = col.measures.pivot_table(index="image", columns="measure", values="value",
                                    aggfunc="first", observed=True, dropna=False)
    wide = wide.reindex(range(len(col.images)))
    wide.columns = [str(c) for c in wide.columns]
    return pd.concat([col.images.reset_index(drop=True), wide.reset_index(drop=True)], axis=1)


def regional_wide_table(col: Collection) -> pd.DataFrame:
    """One row per image (and atlas) with each region's SUVR as a column."""
    reg = col.regions
    cat = reg["region"].astype("category")
    codes, names = cat.cat.codes.to_numpy(), [str(c) for c in cat.cat.categories]
    out = np.full((len(col.images), len(names)), np.nan)
    out[reg["image"].to_numpy(), codes] = reg["suvr"].to_numpy()
    wide = pd.DataFrame(out, columns=[str(n) for n in names])
    return pd.concat([col.images.reset_index(drop=True), wide], axis=1)


def _conditions(images: pd.DataFrame) -> pd.DataFrame:
    """Images that take part in pairing, with their condition; one per subject/tracer/seg."""
    label = images["platform"].astype(str) + "|" + images["version"].astype(str)
    cond = label.map({f"{p}|{v}": c for (p, v), c in CONDITIONS.items()})
    img = images.assign(image=np.arange(len(images)), condition=cond)
    img = img.loc[img["condition"].notna()]
    dup = img.duplicated(["subject", "tracer", "seg", "condition"], keep="first")
    if dup.any():
        LOGGER.warning("%d images share subject/tracer/platform/version with an earlier "
                       "session; the first session (sorted) is used for pairing", dup.sum())
    return img.loc[~dup, ["image", "subject", "tracer", "seg", "condition"]]


def paired(col: Collection, long: pd.DataFrame, item: str, value: str) -> pd.DataFrame:
    """Per tracer, seg, ``item`` and subject: the PET-CT and PET-MR values side by side.

    Columns ``tracer, seg, <item>, subject`` and one per condition present
    (``petct``, ``petmr_raw``, ``petmr_harmonized``); sorted in that key order.
    """
    img = _conditions(col.images)
    names = list(dict.fromkeys(CONDITIONS.values()))  # PET-CT and PET share "petct"
    found = set(img["condition"].unique().tolist())
    present = [c for c in names if c in found]
    n_img = len(col.images)
    cond_of = np.full(n_img, -1, dtype=np.int64)
    cond_of[img["image"].to_numpy()] = img["condition"].map(
        {c: i for i, c in enumerate(names)}).to_numpy(dtype=np.int64)
    ts_codes, ts_uniq = pd.factorize(img["tracer"] + "/" + img["seg"], sort=True)
    sub_codes, sub_uniq = pd.factorize(img["subject"], sort=True)
    n_sub = max(len(sub_uniq), 1)
    group_of = np.full(n_img, -1, dtype=np.int64)
    group_of[img["image"].to_numpy()] = ts_codes * n_sub + sub_codes

    cat = long[item] if isinstance(long[item].dtype, pd.CategoricalDtype) \
        else long[item].astype("category")
    items = np.asarray(cat.cat.categories, dtype=object)
    n_items = max(len(items), 1)
    image = long["image"].to_numpy()
    sel = cond_of[image] >= 0
    key = (group_of[image[sel]] * n_items) + cat.cat.codes.to_numpy()[sel]
    table = np.full((max(len(ts_uniq), 1) * n_sub * n_items, len(names)), np.nan)
    table[key, cond_of[image[sel]]] = long[value].to_numpy()[sel]
    rows = np.unique(key)
    group, it = np.divmod(rows, n_items)
    ts, subj = np.divmod(group, n_sub)
    item_rank = np.empty(len(items), dtype=np.int64)
    item_rank[np.argsort(items.astype(str), kind="stable")] = np.arange(len(items))
    order = np.lexsort((subj, item_rank[it], ts))
    rows, it, ts, subj = rows[order], it[order], ts[order], subj[order]
    split = [t.split("/") for t in ts_uniq]
    out = pd.DataFrame({
        "tracer": np.asarray([s[0] for s in split], dtype=object)[ts] if split else [],
        "seg": np.asarray([s[1] for s in split], dtype=object)[ts] if split else [],
        item: items[it].astype(str),
        "subject": np.asarray(sub_uniq, dtype=object)[subj],
    })
    for c in present:
        out[c] = table[rows, names.index(c)]
    return out


def mark_window_differences(col: Collection, pairs: pd.DataFrame) -> pd.DataFrame:
    """``pairs`` with the uptake windows of the PET-CT and PET-MR images of each pair and
    ``windows_differ`` (1/0; n/a when a window is unknown), e.g. a same-day pair whose
    second scan ran later after one injection."""
    images = col.images
    if "time_window" not in images.columns or pairs.empty:
        return pairs.assign(window_petct="n/a", window_petmr="n/a", windows_differ=np.nan)
    img = _conditions(images)
    img = img.assign(time_window=images["time_window"].to_numpy()[img["image"].to_numpy()])
    wide = {}
    for cond, column in (("petct", "window_petct"), ("petmr_raw", "window_petmr")):
        part = img.loc[img["condition"] == cond, ["subject", "tracer", "seg", "time_window"]]
        wide[column] = part.rename(columns={"time_window": column})
    out = pairs
    for column, part in wide.items():
        out = out.merge(part, on=["subject", "tracer", "seg"], how="left")
        out[column] = out[column].fillna("n/a")
    known = (out["window_petct"] != "n/a") & (out["window_petmr"] != "n/a")
    out["windows_differ"] = np.where(known, (out["window_petct"] != out["window_petmr"])
                                     .astype(float), np.nan)
    differ = out.loc[out["windows_differ"] == 1, ["subject", "tracer"]].drop_duplicates()
    if len(differ):
        LOGGER.warning("pairs whose PET-CT and PET-MR uptake windows differ (SUVR drifts with "
                       "time): %s", ", ".join(f"sub-{s} {t}" for s, t in differ.to_numpy()))
    return out


def left_out_lines(left_out: pd.DataFrame) -> list[str]:
    """One warning line per subject left out of the paired comparisons (all its tracers,
    atlases and reasons on that line): the group level still exits 0, but loudly.

    >>> left = pd.DataFrame({"subject": ["02", "02", "05"], "tracer": ["PiB", "PiB", "FBB"],
    ...                      "seg": ["synth", "schaefer", "synth"],
    ...                      "reason": ["no harmonized PET-MR value"] * 2 + ["no PET-CT value"]})
    >>> for line in left_out_lines(left): print(line)
    group comparisons leave out sub-02: PiB seg-synth, seg-schaefer: no harmonized PET-MR value
    group comparisons leave out sub-05: FBB seg-synth: no PET-CT value
    """
    lines = []
    for subject, rows in left_out.groupby("subject", sort=True):
        parts = []
        for (tracer, reason), group in rows.groupby(["tracer", "reason"], sort=False):
            segs = ", ".join(f"seg-{seg}" for seg in group["seg"])
            parts.append(f"{tracer} {segs}: {reason}")
        lines.append(f"group comparisons leave out sub-{subject}: " + "; ".join(parts))
    return lines


def paired_set(pairs: pd.DataFrame, status: dict[str, str] | None = None
               ) -> tuple[pd.Series, pd.DataFrame]:
    """Which rows of ``pairs`` take part in the before/after comparison, and who is left out.

    Per tracer and atlas, a subject is in the paired set when it has a PET-CT value and a
    value of every PET-MR version found for that tracer and atlas (raw and harmonized
    when any subject has harmonized tables), so that "before" and "after" are computed on
    the same subjects. Returns the row mask and one row per subject left out
    (``subject, tracer, seg, reason``); ``status`` (participant -> one-line run status, e.g.
    ``failed: node ... failed``) is added to the reason.

    >>> pairs = pd.DataFrame({"tracer": "PiB", "seg": "s", "measure": "centiloid",
    ...                       "subject": ["01", "02"], "petct": [1.0, 2.0],
    ...                       "petmr_raw": [1.5, 2.5], "petmr_harmonized": [1.1, np.nan]})
    >>> mask, left = paired_set(pairs)
    >>> mask.tolist(), left[["subject", "reason"]].to_numpy().tolist()
    ([True, False], [['02', 'no harmonized PET-MR value']])
    """
    comps = [c for c in COMPARISONS if c in pairs.columns]
    columns = ["subject", "tracer", "seg", "reason"]
    if pairs.empty or "petct" not in pairs.columns or not comps:
        return pd.Series(False, index=pairs.index), pd.DataFrame(columns=columns)
    conds = ["petct", *comps]
    has = pairs[conds].notna().groupby([pairs["tracer"], pairs["seg"], pairs["subject"]]).any()
    present = has.groupby(level=["tracer", "seg"]).any()  # versions found per tracer/atlas
    required = present.reindex(has.index.droplevel("subject")).to_numpy(copy=True)
    required[:, 0] = True  # a PET-CT value always
    complete = (has.to_numpy() | ~required).all(axis=1) & required.any(axis=1)
    keep = pd.Series(complete, index=has.index)
    mask = pd.Series(keep.reindex(pd.MultiIndex.from_frame(
        pairs[["tracer", "seg", "subject"]])).to_numpy(dtype=bool), index=pairs.index)
    words = {"petct": "no PET-CT value", "petmr_raw": "no raw PET-MR value",
             "petmr_harmonized": "no harmonized PET-MR value"}
    left = []
    for (tracer, seg, subject), row_has, row_req in zip(has.index, has.to_numpy(), required,
                                                         strict=True):
        missing = [words[c] for c, h, r in zip(conds, row_has, row_req, strict=True)
                   if r and not h]
        if not missing:
            continue
        reason = "; ".join(missing)
        if status and status.get(subject):
            reason += f" (participant {status[subject]})"
        left.append({"subject": subject, "tracer": tracer, "seg": seg, "reason": reason})
    return mask, pd.DataFrame(left, columns=columns)


def _run_status(output_dir: Path) -> dict[str, str]:
    """Participant -> ``<status>: <first reason>`` for participants not ``ok`` (never fails)."""
    try:
        from bids_harmonize.runstatus import read_status

        records = read_status(output_dir)
    except Exception:  # noqa: BLE001 - the status is a courtesy in the reasons
        return {}
    out = {}
    for record in records if isinstance(records, list) else records.values():
        if not isinstance(record, dict) or record.get("status") in (None, "ok"):
            continue
        reasons = record.get("reasons") or []
        out[str(record.get("participant", "")).removeprefix("sub-")] = (
            f"{record['status']}: {reasons[0]}" if reasons else str(record["status"]))
    return out


def _paired_rows(pairs: pd.DataFrame) -> pd.Series:
    """Rows with a PET-CT value and at least one PET-MR value."""
    comps = [c for c in COMPARISONS if c in pairs.columns]
    if "petct" not in pairs.columns or not comps:
        return pd.Series(False, index=pairs.index)
    return pairs["petct"].notna() & pairs[comps].notna().any(axis=1)


def agreement_table(pairs: pd.DataFrame, item: str, *, no_percent: set[str] = frozenset()
                    ) -> pd.DataFrame:
    """Agreement statistics of each PET-MR version vs PET-CT, per tracer, seg and item.

    Items in ``no_percent`` (not on a ratio scale) get no percent bias.
    """
    rows = []
    if "petct" not in pairs.columns:
        return pd.DataFrame(columns=["tracer", "seg", item, "comparison",
                                     *ag.agreement_summary([], []).keys()])
    for (tracer, seg, name), grp in pairs.groupby(["tracer", "seg", item], sort=True):
        for comp in COMPARISONS:
            if comp not in grp.columns:
                continue
            stats = ag.agreement_summary(grp["petct"].to_numpy(), grp[comp].to_numpy(),
                                         ratio_scale=name not in no_percent)
            if stats["n"]:
                rows.append({"tracer": tracer, "seg": seg, item: name, "comparison": comp,
                             **stats})
    cols = ["tracer", "seg", item, "comparison", *ag.agreement_summary([], []).keys()]
    return pd.DataFrame(rows, columns=cols)


def _lookup(name: str):
    from bids_harmonize.tracers import UnknownTracerError, get_tracer

    try:
        return get_tracer(name)
    except UnknownTracerError:
        return None


def cutoff_for(tracer: str, cutoffs: dict | None = None) -> tuple[str, float] | None:
    """(measure, value) of a tracer's cut-off: tracers.yaml, overridden by ``cutoffs``.

    ``cutoffs`` name a tracer as the user types it (``[11C]PiB``, ``AZ-10419369``), the
    table's label (``tracer``, the ``trc-`` entity) or any alias.

    >>> cutoff_for("PiB"), cutoff_for("PiB", {"pib": 20}), cutoff_for("FDG")
    (('centiloid', 20.1), ('centiloid', 20.0), None)
    >>> cutoff_for("flortaucipir"), cutoff_for("FPCIT")  # in the table without a value
    (None, None)
    >>> cutoff_for("PiB", {"[11C]PiB": 24.1}), cutoff_for("AZ10419369", {"AZ-10419369": 1.2})
    (('centiloid', 24.1), None)
    >>> cutoff_for("AZ10419369", {"AZ-10419369": {"measure": "suvr_cortical", "value": 1.2}})
    ('suvr_cortical', 1.2)
    """
    from bids_harmonize.tracers import name_keys

    tr = _lookup(tracer)
    base = dict(tr.cutoff) if tr is not None and tr.cutoff else {}
    given = None
    for key, val in (cutoffs or {}).items():
        other = _lookup(key)
        if (name_keys(key) & name_keys(tracer)
                or (tr is not None and other is not None and other.name == tr.name)):
            given = val
    if isinstance(given, dict):
        base.update(given)
    elif given is not None:
        base["value"] = float(given)
    if base.get("measure") is None or base.get("value") is None:  # tau, DaT: none published
        return None
    return str(base["measure"]), float(base["value"])


def cutoff_transfer(pairs: pd.DataFrame, cutoffs: dict | None = None):
    """Classification agreement at each tracer's PET-CT cut-off, and the changed subjects."""
    rows, changes = [], []
    if "petct" not in pairs.columns:
        return pd.DataFrame(), pd.DataFrame()
    for (tracer, seg), grp in pairs.groupby(["tracer", "seg"], sort=True):
        cut = cutoff_for(str(tracer), cutoffs)
        if cut is None:
            continue
        measure, value = cut
        sel = grp.loc[grp["measure"] == measure]
        below = measure.startswith("sbr")
        for comp in COMPARISONS:
            if comp not in sel.columns or sel.empty:
                continue
            ok = sel["petct"].notna() & sel[comp].notna()
            if not ok.any():
                continue
            res = ag.classification_agreement(sel.loc[ok, "petct"], sel.loc[ok, comp], value,
                                              below=below)
            changed = res.pop("changed")
            rows.append({"tracer": tracer, "seg": seg, "measure": measure, "cutoff": value,
                         "positive_if": "below" if below else "at or above",
                         "comparison": comp, **res, "n_changed": int(changed.sum())})
            moved = sel.loc[ok].loc[changed]
            pos_ct = (moved["petct"] < value) if below else (moved["petct"] >= value)
            changes.append(pd.DataFrame({
                "subject": moved["subject"].to_numpy(), "tracer": tracer, "seg": seg,
                "comparison": comp, "measure": measure, "cutoff": value,
                "petct": moved["petct"].to_numpy(), "petmr": moved[comp].to_numpy(),
                "petct_class": np.where(pos_ct, "positive", "negative"),
                "petmr_class": np.where(pos_ct, "negative", "positive")}))
    return pd.DataFrame(rows), (pd.concat(changes, ignore_index=True) if changes
                                else pd.DataFrame())


def correlation_structure(region_pairs: pd.DataFrame, kinds: dict[str, str]):
    """Inter-regional correlation matrices per condition and their similarity to PET-CT.

    Uses atlas regions (not composites) and the subjects that have every condition
    present for the tracer; regions without variance (e.g. the reference) are left out.
    """
    sims, matrices = [], {}
    for (tracer, seg), grp in region_pairs.groupby(["tracer", "seg"], sort=True):
        grp = grp.loc[grp["region"].map(kinds).eq("region")]
        conds = [c for c in dict.fromkeys(CONDITIONS.values())
                 if c in grp.columns and grp[c].notna().any()]
        if not conds:
            continue
        cube = grp.pivot_table(index="subject", columns="region", values=conds,
                               aggfunc="first", dropna=False)
        cube = cube.dropna(axis=0, how="any")
        if len(cube) < 3:
            continue
        regions = [r for r in cube[conds[0]].columns
                   if all(cube[c][r].std() > 1e-12 for c in conds)]
        if len(regions) < 3:
            continue
        for c in conds:
            matrices[(tracer, seg, c)] = pd.DataFrame(
                ag.correlation_matrix(cube[c][regions].to_numpy()), index=regions,
                columns=regions)
        if "petct" in conds:
            for c in COMPARISONS:
                if c in conds:
                    sims.append({"tracer": tracer, "seg": seg, "comparison": c,
                                 "n": len(cube), "n_regions": len(regions),
                                 "similarity": ag.matrix_similarity(
                                     matrices[(tracer, seg, "petct")],
                                     matrices[(tracer, seg, c)])})
    return pd.DataFrame(sims, columns=["tracer", "seg", "comparison", "n", "n_regions",
                                       "similarity"]), matrices


def run_group(output_dir: str | Path, *, cutoffs: dict | None = None, atlas: str | None = None,
              report: bool = True) -> dict[str, Path]:
    """Group tables, PET-MR vs PET-CT agreement and (optionally) the HTML report.

    Parameters
    ----------
    output_dir : path
        The participant-level output folder (BIDS-Derivatives).
    cutoffs : dict, optional
        Per tracer (label or alias), a cut-off value (same measure as tracers.yaml) or a
        ``{"measure": ..., "value": ...}`` dict; default: tracers.yaml ``cutoff``
        (amyloid 20.1 CL, Amadoru et al. 2020).
    atlas : str, optional
        Only use tables of this ``seg-`` atlas (default: all atlases found).
    report : bool
        Also write ``group/group_report.html`` and its figures.

    Returns
    -------
    dict
        Written paths by name (``measures``, ``regions``, ``pairs``, ``agreement_measures``,
        ``agreement_regions``, ``cutoff_agreement``, ``cutoff_changes``,
        ``correlation_similarity``, ``summary``, ``report`` ...).
    """
    output_dir = Path(output_dir)
    group_dir = output_dir / "group"
    col = collect_participant_tables(output_dir)
    if atlas is not None:
        keep = (col.images["seg"] == atlas).to_numpy()
        if not keep.any():
            raise ValueError(f"no participant tables with seg-{atlas}; found "
                             f"{sorted(col.images['seg'].unique())}")
        col = _subset(col, keep)

    written: dict[str, Path] = {}
    measures = measures_table(col)
    written["measures"] = _write(measures, group_dir / "measures.tsv",
                                 {m: {"Description": f"summary measure {m}",
                                      "Units": col.units.get(m, "n/a")}
                                  for m in measures.columns if m not in KEYS})
    regions = regional_wide_table(col)
    written["regions"] = _write(regions, group_dir / "regions_suvr.tsv",
                                {r: {"Description": f"SUVR of {r}", "Units": "unitless"}
                                 for r in regions.columns if r not in KEY_DICTIONARY})

    mpairs_all = paired(col, col.measures, "measure", "value")
    # before/after comparisons on the same subjects: those with PET-CT and every PET-MR version
    in_set, left_out = paired_set(mpairs_all, _run_status(output_dir))
    mpairs_all = mpairs_all.assign(paired_set=in_set.astype(float))
    for line in left_out_lines(left_out):
        LOGGER.warning("%s", line)
    rpairs = paired(col, col.regions, "region", "suvr")
    rpairs = rpairs.loc[paired_set(rpairs)[0]].reset_index(drop=True)
    if not rpairs.empty:  # the same subjects in the regional tables
        kept = set(map(tuple, mpairs_all.loc[in_set, ["tracer", "seg", "subject"]].to_numpy()))
        rpairs = rpairs.loc[[tuple(k) in kept for k in rpairs[["tracer", "seg", "subject"]]
                             .to_numpy()]].reset_index(drop=True)
    has_pairs = bool(_paired_rows(mpairs_all).any())
    mpairs_set = mpairs_all.loc[in_set].drop(columns="paired_set")
    mpairs = mpairs_set.loc[~mpairs_set["measure"].isin(FLAGS)].reset_index(drop=True)
    written["left_out"] = _write(left_out, group_dir / "left_out.tsv", {
        "reason": {"Description": "Why this subject is not in the PET-MR vs PET-CT comparisons "
                                  "of this tracer and atlas (both versions are compared on the "
                                  "same subjects)"}})
    written["pairs"] = _write(mark_window_differences(col, mpairs_all), group_dir / "pairs.tsv", {
        "paired_set": {"Description": "1 if this subject is in the comparisons (a PET-CT value "
                                      "and every PET-MR version), else 0: see left_out.tsv"},
        "window_petct": {"Description": "minutes after injection averaged in the PET-CT image "
                                        "(sidecar TimeWindow)"},
        "window_petmr": {"Description": "minutes after injection averaged in the PET-MR image"},
        "windows_differ": {"Description": "1 if the two sessions averaged different windows "
                                          "(SUVR drifts with time after injection), else 0"}})

    not_ratio = {m for m, u in col.units.items() if u in ("CL", "%")}
    agree_m = agreement_table(mpairs, "measure", no_percent=not_ratio)
    agree_r = agreement_table(rpairs, "region")
    written["agreement_measures"] = _write(agree_m, group_dir / "agreement_measures.tsv")
    written["agreement_regions"] = _write(agree_r, group_dir / "agreement_regions.tsv")

    cut, changes = cutoff_transfer(mpairs_set, cutoffs)
    cut_cols = ["tracer", "seg", "measure", "cutoff", "positive_if", "comparison", "n",
                "n_agree", "percent_agreement", "kappa", "ref_positive", "test_positive",
                "pos_to_neg", "neg_to_pos", "n_changed"]
    cut = cut.reindex(columns=cut_cols)
    change_cols = ["subject", "tracer", "seg", "comparison", "measure", "cutoff", "petct",
                   "petmr", "petct_class", "petmr_class"]
    changes = changes.reindex(columns=change_cols)
    written["cutoff_agreement"] = _write(cut, group_dir / "cutoff_agreement.tsv", {
        "cutoff": {"Description": "PET-CT cut-off (tracers.yaml or the cutoffs argument)"},
        "percent_agreement": {"Description": "Subjects classified alike", "Units": "%"},
        "kappa": {"Description": "Cohen's kappa of the positive/negative calls"},
        "ref_positive": {"Description": "Positive on PET-CT"},
        "test_positive": {"Description": "Positive on PET-MR"},
        "n_changed": {"Description": "Subjects whose class differs from PET-CT"}})
    written["cutoff_changes"] = _write(changes, group_dir / "cutoff_changes.tsv", {
        "petmr": {"Description": "PET-MR value (version in 'comparison')"}})

    uniq = col.regions[["region", "kind"]].drop_duplicates("region")
    kinds = dict(zip(uniq["region"].astype(str), uniq["kind"].astype(str), strict=True))
    sims, matrices = correlation_structure(rpairs, kinds)
    written["correlation_similarity"] = _write(sims, group_dir / "correlation_similarity.tsv", {
        "similarity": {"Description": "Pearson correlation of the upper triangles of the "
                                      "PET-MR and PET-CT inter-regional SUVR correlation "
                                      "matrices (1 = same structure)"},
        "n_regions": {"Description": "Atlas regions in the matrices"}})
    for (tracer, seg, cond), mat in matrices.items():
        name = f"trc-{tracer}_seg-{seg}_desc-{cond.replace('_', '')}_corr.tsv"
        path = group_dir / "correlations" / name
        atomic_write_table(mat.rename_axis("region").reset_index(), path)
        written[f"corr_{tracer}_{seg}_{cond}"] = path

    notes = []
    if not has_pairs:
        notes.append("No subject has both a PET-CT and a PET-MR image of the same tracer: "
                     "agreement tables are empty; only the group tables are filled.")
    if len(left_out):
        notes.append(f"{left_out['subject'].nunique()} subject(s) left out of the PET-MR vs "
                     "PET-CT comparisons (no PET-CT or a PET-MR version missing), so that raw "
                     "and harmonized are compared on the same subjects: "
                     + ", ".join(f"sub-{r.subject} {r.tracer} ({r.reason})"
                                 for r in left_out.head(10).itertuples())
                     + (" ..." if len(left_out) > 10 else "") + "; see left_out.tsv")
    if "harmonized" not in set(col.images["version"]):
        notes.append("No harmonized (desc-harmonized) tables found: raw images only.")
    summary = {
        "OutputDir": str(output_dir),
        "Participants": int(col.images["subject"].nunique()),
        "Images": len(col.images),
        "Tracers": sorted(col.images["tracer"].unique().tolist()),
        "Atlases": sorted(col.images["seg"].unique().tolist()),
        "PairedSubjects": {str(t): int(g["subject"].nunique()) for t, g in
                           mpairs.loc[_paired_rows(mpairs)].groupby("tracer")},
        "Settings": {"cutoffs": cutoffs or "tracers.yaml", "atlas": atlas or "all",
                     "ICC": "ICC(2,1) absolute agreement (icc_2_1) and ICC(3,1) consistency "
                            "(icc_3_1), Shrout & Fleiss 1979",
                     "LimitsOfAgreement": "mean_diff +/- 1.96 SD (ddof=1)",
                     "Differences": "PET-MR - PET-CT"},
        "LeftOutOfComparisons": left_out.to_dict(orient="records"),
        "SkippedParticipants": sorted({p["participant"] for p in col.problems}),
        "Problems": col.problems,
        "Notes": notes,
    }
    for note in notes:
        LOGGER.info(note)
    summary_path = group_dir / "group_summary.json"
    written["summary"] = summary_path
    files = {k: str(v.relative_to(group_dir)) for k, v in written.items()}
    if report:
        files["report"] = "group_report.html"
    summary["Files"] = files
    atomic_write_json(summary_path, summary, default=str)
    if report:
        from bids_harmonize.reports.group import write_group_report

        written["report"] = write_group_report(group_dir)
    return written


def _subset(col: Collection, keep: np.ndarray) -> Collection:
    new_index = np.cumsum(keep) - 1
    m = col.measures.loc[keep[col.measures["image"].to_numpy()]].copy()
    r = col.regions.loc[keep[col.regions["image"].to_numpy()]].copy()
    m["image"] = new_index[m["image"].to_numpy()]
    r["image"] = new_index[r["image"].to_numpy()]
    return Collection(images=col.images.loc[keep].reset_index(drop=True), measures=m,
                      regions=r, problems=col.problems, units=col.units)
