"""The per-subject HTML report, assembled after the run from the subject's derivatives.

The pipeline's reportlets (``sub-<s>/figures/*.svg``: registration, uptake
window, harmonization) are shown per session and tracer. At assembly time the
report also draws, from the derivatives themselves:

- for a subject with PET-CT and PET-MR of one tracer: PET-CT next to PET-MR
  before and after harmonization with difference maps to PET-CT, and a
  per-region SUVR bias bar chart before/after;
- for PET-MR without PET-CT: the correction map (harmonized / before), with the
  harmonizer's uncertainty map next to it when it wrote one
  (``..._desc-uncertainty_pet.nii.gz``), and its out-of-distribution decision.

A figure that cannot be drawn (a file is missing or unreadable) is replaced by a
note that says what is missing; the report itself is always written.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from bids_harmonize.derivatives import bids_keys, build_path, collect_derivatives
from bids_harmonize.reports.boilerplate import Boilerplate, boilerplate_from
from bids_harmonize.reports.html import fmt, missing, page, table
from bids_harmonize.safeio import atomic_write_text

LOGGER = logging.getLogger(__name__)

FIGURE_TEXT = {
    "template": ("Registration to the template",
                 "The subject's brain-extracted T1w resampled into the template; the cyan line is "
                 "the template's brain outline. The two should match."),
    "ct2t1w": ("CT to T1w", "The CT (colour) on the T1w; bone should sit on the dark skull band "
               "of the T1w."),
    "pet2t1w": ("PET to T1w", "The static PET (colour) on the T1w with the brain mask outline; "
                "uptake should follow the grey matter."),
    "window": ("Uptake window", "Frames of the series, the tracer's standard uptake window "
               "(shaded) and each frame's weight in the static image."),
    "harmonization": ("Harmonization", "PET-MR before and after harmonization, and their ratio "
                      "inside the brain: red where the harmonizer raised uptake (typically "
                      "cortex next to bone that Dixon MR-based attenuation misses)."),
}
#: Figures this module draws at assembly time (not listed again with the pipeline's).
ASSEMBLED = ("vspetct", "regionbias", "correction")
#: Sidecar fields of the out-of-distribution check (written by the harmonizer, version 2).
OOD_FIELDS = ("OODDecision", "OODScore", "OODComponents")


def _entities(name: str) -> dict[str, str]:
    stem = name.split(".")[0]
    ents = dict(part.split("-", 1) for part in stem.split("_")[:-1] if "-" in part)
    ents["suffix"] = stem.split("_")[-1]
    return ents


def _section_of(path: Path) -> tuple[str, str]:
    entities = _entities(path.name)
    scope = " ".join(f"{k}-{v}" for k, v in entities.items() if k in ("ses", "trc"))
    return scope or "anatomy", entities.get("desc", "")


def _read_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _pet_images(output_dir: Path, subject: str) -> list[dict]:
    """PET derivatives of the subject (``data/io_spec.json`` kinds ``pet_preproc`` and
    ``pet_harmonized``): entities (file-name keys), ``series``, path and sidecar of each."""
    found = []
    for deriv in collect_derivatives(output_dir, subject=subject,
                                     kinds=("pet_preproc", "pet_harmonized"),
                                     extension=".nii.gz"):
        sidecar = deriv.sidecar
        found.append({**bids_keys(deriv.entities), "series": deriv.series, "entities":
                      deriv.entities, "path": deriv.path, "root": Path(output_dir),
                      "meta": _read_json(sidecar) if sidecar.exists() else {},
                      "sidecar": sidecar})
    return found


def _table_path(image: dict, measure: str) -> Path | None:
    """The regional table of an image (``..._seg-<atlas>_desc-<d>_<measure>.tsv``)."""
    series = dict(image["series"])
    hits = collect_derivatives(image["root"], subject=image["sub"],
                               kinds=(measure,), desc=image["desc"], extension=".tsv")
    hits = [h for h in hits if dict(h.series) == series]
    return hits[0].path if hits else None


def _figure_path(output_dir: Path, kind: str, image: dict) -> Path:
    """Where the report draws a figure of one PET series (``data/io_spec.json`` kind)."""
    ents = {k: v for k, v in image["entities"].items()
            if k in ("subject", *dict(image["series"]))}
    return output_dir / build_path(kind, **ents)


def _suvr(image: dict) -> pd.DataFrame | None:
    path = _table_path(image, "suvr")
    if path is None:
        return None
    try:
        df = pd.read_csv(path, sep="\t", na_values=["n/a"])
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    return df if {"region", "suvr"} <= set(df.columns) else None


def _reference_mean(image: dict, suvr: pd.DataFrame | None, mask: Path) -> float:
    """The mean of the reference region (from the regional table), else the in-brain median."""
    if suvr is not None and "reference_region" in suvr.columns and "mean" in suvr.columns:
        ref = suvr.loc[suvr["region"] == suvr["reference_region"].iloc[0], "mean"]
        if len(ref) and np.isfinite(ref.iloc[0]) and ref.iloc[0] > 0:
            return float(ref.iloc[0])
    import nibabel as nb

    data = np.asarray(nb.load(image["path"]).dataobj, dtype=float)
    m = np.asarray(nb.load(mask).dataobj) > 0
    vals = data[m & (data > 0)]
    return float(np.median(vals)) if vals.size else 1.0


def _platform(image: dict) -> str:
    return str(image["meta"].get("Platform") or "")


def _figure(output_dir: Path, path: Path, title: str, text: str) -> str:
    rel = path.relative_to(output_dir).as_posix()
    return (f"<h3>{html.escape(title)}</h3><p class='explain'>{html.escape(text)}</p>"
            f"<img class='figure' src='{html.escape(rel)}' alt='{html.escape(title)}'>")


def _paired_sections(output_dir: Path, subject: str, images: list[dict]) -> list[str]:
    """PET-CT vs PET-MR (before/after) per tracer; correction maps for unpaired PET-MR."""
    from bids_harmonize.reports import reportlets

    fig_dir = output_dir / f"sub-{subject}" / "figures"
    masks = collect_derivatives(output_dir, subject=subject, kinds=("brain_mask",),
                                extension=".nii.gz")
    mask = masks[0].path if masks else (
        output_dir / build_path("brain_mask", subject=subject))
    t1w = [i for i in images if i.get("space") == "T1w"]
    parts: list[str] = []
    for tracer in sorted({i.get("trc", "") for i in t1w}):
        of = [i for i in t1w if i.get("trc", "") == tracer]
        ct = next((i for i in of if i.get("desc") == "preproc" and _platform(i) == "PET-CT"), None)
        for mr in (i for i in of if i.get("desc") == "preproc" and _platform(i) == "PET-MR"):
            harm = next((i for i in of if i.get("desc") == "harmonized"
                         and i["series"] == mr["series"]), None)
            ses = mr.get("ses", "")
            parts.append(f"<h2 id='cmp-{html.escape(ses)}-{html.escape(tracer)}'>"
                         f"{html.escape(tracer)}: ses-{html.escape(ses)} (PET-MR)"
                         + (f" against ses-{html.escape(ct.get('ses', ''))} (PET-CT)" if ct else "")
                         + "</h2>")
            if not mask.exists():
                parts.append(missing(f"The brain mask {mask.name} is missing: no comparison "
                                     "figure can be drawn."))
                continue
            if ct is not None:
                parts += _versus_petct(output_dir, subject, tracer, ses, ct, mr, harm, mask,
                                       fig_dir, reportlets)
                if harm is not None and _uncertainty_path(harm).exists():
                    parts += _correction(output_dir, subject, tracer, ses, mr, harm, mask,
                                         fig_dir, reportlets, paired=True)
            elif harm is not None:
                parts += _correction(output_dir, subject, tracer, ses, mr, harm, mask, fig_dir,
                                     reportlets)
            else:
                parts.append("<p class='note'>No harmonized image for this PET-MR series "
                             "(harmonization disabled, or it failed: see the errors above).</p>")
            if harm is not None:
                parts.append(_ood_block(harm))
    return parts


def _versus_petct(output_dir, subject, tracer, ses, ct, mr, harm, mask, fig_dir,
                  reportlets) -> list[str]:
    parts = []
    tables = {"ct": _suvr(ct), "mr": _suvr(mr), "harm": _suvr(harm) if harm else None}
    fig = _figure_path(output_dir, "figure_vspetct", mr)
    try:
        fig_dir.mkdir(parents=True, exist_ok=True)
        scales = (_reference_mean(ct, tables["ct"], mask), _reference_mean(mr, tables["mr"], mask),
                  _reference_mean(harm, tables["harm"], mask) if harm else 1.0)
        reportlets.plot_petct_comparison(
            ct["path"], mr["path"], mask, fig, harmonized=harm["path"] if harm else None,
            scales=scales, title=f"sub-{subject} {tracer}: PET-MR against PET-CT")
        parts.append(_figure(
            output_dir, fig, "PET-MR against PET-CT",
            "Top rows: PET-CT (the reference), PET-MR before and after harmonization, each "
            "divided by its reference-region mean (SUVR, one colour scale). Bottom rows: the "
            "difference to PET-CT in percent, before and after; blue where PET-MR reads low "
            "(typically cortex next to the skull under MR-based attenuation correction), red "
            f"where it reads high, white where they agree (scale +/-{reportlets.DIFF_RANGE_PCT:g} %)."))
    except Exception as exc:  # a figure never breaks the report
        LOGGER.warning("sub-%s: PET-CT comparison figure failed: %s", subject, exc)
        parts.append(missing(f"The PET-CT comparison figure could not be drawn: {exc}"))
    if tables["ct"] is None or tables["mr"] is None:
        which = [n for n, k in (("PET-CT", "ct"), ("PET-MR", "mr")) if tables[k] is None]
        parts.append(missing("Regional SUVR table missing or unreadable for "
                             + " and ".join(which) + ": no regional bias chart."))
        return parts
    bias = _region_bias(tables["ct"], tables["mr"], tables["harm"])
    parts.append(_verdict(bias, _reference_regions(tables["ct"])))
    fig = _figure_path(output_dir, "figure_regionbias", mr)
    try:
        reportlets.plot_subject_region_bias(
            bias, fig, title=f"sub-{subject} {tracer}: regional SUVR, PET-MR vs PET-CT")
        parts.append(_figure(
            output_dir, fig, "Regional SUVR bias",
            "Percent difference of each region's SUVR on PET-MR from PET-CT, before (orange) "
            "and after (green) harmonization, regions with the largest difference before "
            "harmonization first."))
    except Exception as exc:
        LOGGER.warning("sub-%s: regional bias figure failed: %s", subject, exc)
        parts.append(missing(f"The regional bias chart could not be drawn: {exc}"))
    comp = bias.loc[[r for r in bias.index if r in _composites(tables["ct"])]]
    if not comp.empty:
        rows = [[r, *[comp.loc[r, c] for c in comp.columns]] for r in comp.index]
        parts.append("<p class='explain'>Composite regions (SUVR difference to PET-CT, %):</p>"
                     + table(["region", *[f"{c} harmonization" for c in comp.columns]], rows))
    return parts


def _reference_regions(suvr: pd.DataFrame) -> set[str]:
    """Regions of a regional table that form (or are) its reference region."""
    from bids_harmonize.atlas import COMPOSITES

    if "reference_region" not in suvr.columns or suvr["reference_region"].isna().all():
        return set()
    ref = str(suvr["reference_region"].dropna().iloc[0])
    return {ref, *COMPOSITES.get(ref, ())}


def verdict_numbers(bias: pd.DataFrame, reference=()) -> dict | None:
    """Mean absolute and worst regional SUVR difference to PET-CT (%), before and after,
    over the atlas regions (composites and the reference region left out).

    >>> b = pd.DataFrame({"before": [-6.0, 4.0, 0.0], "after": [-2.0, 1.0, 0.0]},
    ...                  index=["a", "b", "ref"])
    >>> verdict_numbers(b, {"ref"})
    {'before': 5.0, 'after': 1.5, 'worst_before': 6.0, 'worst_after': 2.0, 'n': 2}
    """
    if "after" not in bias.columns:
        return None
    keep = [r for r in bias.index if r not in reference and not _is_composite(r)]
    b = bias.loc[keep].dropna()
    if b.empty:
        return None
    return {"before": round(float(b["before"].abs().mean()), 2),
            "after": round(float(b["after"].abs().mean()), 2),
            "worst_before": round(float(b["before"].abs().max()), 2),
            "worst_after": round(float(b["after"].abs().max()), 2), "n": int(len(b))}


def _is_composite(region: str) -> bool:
    from bids_harmonize.atlas import COMPOSITES

    return region in COMPOSITES


def _verdict(bias: pd.DataFrame, reference) -> str:
    """One sentence: did harmonization move this subject towards its PET-CT, with numbers."""
    v = verdict_numbers(bias, reference)
    if v is None:
        return ("<p class='note'>No harmonized regional table: the effect of harmonization on "
                "this subject cannot be stated.</p>")
    numbers = (f"mean absolute regional SUVR difference to PET-CT {v['before']:.1f} % before, "
               f"{v['after']:.1f} % after harmonization; worst region {v['worst_before']:.1f} % "
               f"before, {v['worst_after']:.1f} % after ({v['n']} regions, reference region "
               "and composites left out)")
    if v["after"] < v["before"]:
        return f"<p class='explain'><b>Harmonization moved this subject towards PET-CT</b>: {numbers}.</p>"
    return (f"<p class='note'><b>Harmonization did not move this subject towards PET-CT</b>: "
            f"{numbers}. Check the correction map and the out-of-distribution block below.</p>")


def _composites(suvr: pd.DataFrame) -> list[str]:
    if "kind" not in suvr.columns:
        return []
    return suvr.loc[suvr["kind"] == "composite", "region"].tolist()


def _region_bias(ct: pd.DataFrame, mr: pd.DataFrame, harm: pd.DataFrame | None) -> pd.DataFrame:
    """Percent SUVR difference to PET-CT per region, before and (when given) after.

    >>> ct = pd.DataFrame({"region": ["a", "b"], "suvr": [2.0, 1.0]})
    >>> mr = pd.DataFrame({"region": ["a", "b"], "suvr": [1.8, 1.0]})
    >>> _region_bias(ct, mr, None)["before"].round(1).tolist()
    [-10.0, 0.0]
    """
    ref = ct.set_index("region")["suvr"]
    out = pd.DataFrame({"before": 100 * (mr.set_index("region")["suvr"] - ref) / ref})
    if harm is not None:
        out["after"] = 100 * (harm.set_index("region")["suvr"] - ref) / ref
    return out.replace([np.inf, -np.inf], np.nan).dropna(subset=["before"])


def _uncertainty_path(harm: dict) -> Path:
    """The harmonizer's uncertainty map next to a harmonized image (may not exist)."""
    return harm["path"].with_name(harm["path"].name.replace("desc-harmonized", "desc-uncertainty"))


def _correction(output_dir, subject, tracer, ses, mr, harm, mask, fig_dir,
                reportlets, *, paired: bool = False) -> list[str]:
    unc = _uncertainty_path(harm)
    fig = _figure_path(output_dir, "figure_correction", mr)
    parts = [] if paired else [
        "<p class='explain'>This subject has no PET-CT of this tracer, so the harmonization "
        "cannot be checked against a reference here; the map below shows what it changed.</p>"]
    try:
        fig_dir.mkdir(parents=True, exist_ok=True)
        reportlets.plot_correction(mr["path"], harm["path"], mask, fig,
                                   uncertainty=unc if unc.exists() else None,
                                   title=f"sub-{subject} {tracer}: correction applied")
        parts.append(_figure(
            output_dir, fig, "Correction map" + (" and uncertainty" if unc.exists() else ""),
            "The ratio harmonized / PET-MR inside the brain (red: raised, blue: lowered)"
            + ("; below it the harmonizer's per-voxel uncertainty (spread of its ensemble): "
               "high values mark where the correction is least certain." if unc.exists()
               else ".")))
    except Exception as exc:
        LOGGER.warning("sub-%s: correction figure failed: %s", subject, exc)
        parts.append(missing(f"The correction map could not be drawn: {exc}"))
    if not unc.exists():
        parts.append("<p class='note'>No uncertainty map (<code>"
                     f"{html.escape(unc.name)}</code>) was written for this image.</p>")
    return parts


def _ood_block(harm: dict) -> str:
    """The out-of-distribution decision and its parts, from the harmonized image's sidecar."""
    meta = harm["meta"]
    if not any(k in meta for k in OOD_FIELDS):
        return ("<p class='note'>The harmonized image's sidecar has no out-of-distribution "
                "decision (<code>OODDecision</code>): this model does not report one.</p>")
    rows = [["decision", meta.get("OODDecision")], ["score", meta.get("OODScore")]]
    if "OODThreshold" in meta:
        rows.append(["threshold", meta["OODThreshold"]])
    if "OODPolicy" in meta:
        rows.append(["policy (--ood-policy)", meta["OODPolicy"]])
    comps = meta.get("OODComponents")
    if isinstance(comps, dict):
        rows += [[f"part: {k.replace('_', ' ')}", v] for k, v in comps.items()]
    elif comps is not None:
        rows.append(["parts", comps])
    rows += [["reason", r] for r in meta.get("OODReasons") or []]
    for key, label in (("AttenuationCorrectionSetup", "attenuation-correction setup"),
                       ("AttenuationCorrectionSetupInference", "setup decided from"),
                       ("PhysicsMapSource", "physics map from")):
        if key in meta:
            rows.append([label, meta[key]])
    unc = meta.get("Uncertainty")
    if isinstance(unc, dict):
        rows += [[f"uncertainty: {k}", v] for k, v in unc.items()]
    guard = meta.get("CorrectionGuard")
    if isinstance(guard, dict):
        rows += [[f"correction guard: {k}", v] for k, v in guard.items() if k != "Description"]
    return "<h3>Out-of-distribution check</h3>" + table(["", "value"], rows, text_columns=2)


def _pipeline_figures(output_dir: Path, subject: str) -> list[str]:
    figures = [d.path for d in collect_derivatives(output_dir, subject=subject,
                                                   datatype="figures")]
    parts, current = [], None
    for fig in figures:
        scope, desc = _section_of(fig)
        if desc in ASSEMBLED:
            continue
        if scope != current:
            parts.append(f"<h2>{html.escape(scope)}: processing steps</h2>")
            current = scope
        title, text = FIGURE_TEXT.get(desc, (desc, ""))
        parts.append(_figure(output_dir, fig, title, text))
    if not figures:
        parts.append(missing(f"No figures under sub-{subject}/figures/: the run did not get "
                             "as far as drawing them."))
    return parts


def build_subject_report(output_dir: Path, subject: str, *,
                         boilerplate: Boilerplate | list[str] | str | None = None,
                         errors: list[str] | None = None) -> Path:
    """Write ``<out>/sub-<s>.html``: summary, PET-CT comparison, figures, methods."""
    output_dir = Path(output_dir)
    images = _pet_images(output_dir, subject)
    parts = [f"<h1>Subject sub-{html.escape(subject)}</h1>",
             "<nav class='toc'><a href='index.html'>run summary</a><a href='#summary'>summary"
             "</a><a href='#methods'>methods</a></nav>"]
    if errors:
        parts.append("<h2 class='status-failed'>Errors</h2><ul>"
                     + "".join(f"<li class='status-failed'>{html.escape(e)}</li>" for e in errors)
                     + "</ul>")
    parts.append(_summary_table(output_dir, subject))
    parts += model_provenance_notes(output_dir, subject)
    try:
        parts += _paired_sections(output_dir, subject, images)
    except Exception as exc:  # never lose the whole report to one section
        LOGGER.exception("sub-%s: comparison sections failed", subject)
        parts.append(missing(f"The comparison sections could not be built: {exc}"))
    parts += _pipeline_figures(output_dir, subject)
    if not isinstance(boilerplate, Boilerplate):
        boilerplate = boilerplate_from(boilerplate or [])
    parts.append("<h2 id='methods'>Methods</h2><p class='explain'>A description of the "
                 "processing, written by the workflows themselves, to adapt for a paper's "
                 "methods section.</p>" + boilerplate.html())
    out = output_dir / f"sub-{subject}.html"
    atomic_write_text(out, page(f"bids_harmonize: sub-{subject}", parts))
    return out


def model_provenance_notes(output_dir: Path, subject=None) -> list[str]:
    """A note per harmonization model that its card says was trained on simulated data
    only (``Harmonization.ModelTrainedOn`` of the harmonized sidecars)."""
    models = {}
    for d in collect_derivatives(output_dir, subject=subject, kinds=("pet_harmonized",),
                                 space="T1w", extension=".json"):
        harm = _read_json(d.path).get("Harmonization") or {}
        name = " ".join(str(harm[k]) for k in ("ModelName", "ModelVersion") if harm.get(k))
        models[name or "unnamed model"] = str(harm.get("ModelTrainedOn") or "")
    return [f"<p class='note'><b>The harmonization model {html.escape(name)} was trained on "
            f"{html.escape(what)}.</b> Its corrections are a demonstration of the method, not "
            "validated on real scans; train a site model (<code>bids_harmonize ... train</code>) "
            "on your own paired PET-CT/PET-MR sessions before drawing conclusions.</p>"
            for name, what in sorted(models.items()) if "simulated" in what.lower()]


def _window(value) -> str:
    """``[50, 70]`` as ``50-70``.

    >>> _window([50.0, 70.0]), _window(None)
    ('50-70', 'n/a')
    """
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{fmt(value[0])}-{fmt(value[1])}"
    return fmt(value)


def _summary_table(output_dir: Path, subject: str) -> str:
    rows = []
    for sidecar in (d.path for d in collect_derivatives(
            output_dir, subject=subject, kinds=("pet_preproc", "pet_harmonized"), space="T1w",
            extension=".json")):
        meta = _read_json(sidecar)
        harm = meta.get("Harmonization") or {}
        model = " ".join(fmt(harm[k]) for k in ("ModelName", "ModelVersion") if harm.get(k))
        rows.append([sidecar.name.replace("_pet.json", ""), meta.get("Platform"),
                     meta.get("PlatformInference"), meta.get("ManufacturersModelName"),
                     meta.get("AttenuationCorrectionSetup", meta.get("AttenuationCorrection")),
                     _window(meta.get("TimeWindow")), meta.get("Units"), model,
                     meta.get("OODDecision", ""), "; ".join(fmt(n) for n in harm.get("Notes") or [])])
    if not rows:
        return ("<h2 id='summary'>Summary</h2>"
                + missing("No PET outputs were written for this subject."))
    return "<h2 id='summary'>Summary</h2>" + table(
        ["image", "platform", "decided from", "scanner", "attenuation correction",
         "window (min)", "units", "model", "OOD decision", "notes"], rows, text_columns=10)


__all__ = ["build_subject_report"]
