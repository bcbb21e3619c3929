"""Summary measures per tracer family, from a regional table.

Each function takes the regional table of :func:`bids_harmonize.quant.regional.regional_table`
(or any DataFrame with ``region`` and ``mean`` columns) and returns rows
``measure, value, units, reference, description``:

* amyloid: ``suvr_cortical`` (cortical target / whole cerebellum) and ``centiloid``
  (the tracer's published equation; the standard-method one unless another is named,
  plus ``centiloid_<name>`` for its other published equations, e.g. florbetapir
  ``centiloid_avid``, each labelled). With the GAAIN VOIs
  (``voi_ctx`` / ``voi_WhlCbl``) this is the standard Centiloid method (``centiloid_standard_vois`` = 1); with
  another atlas' ``cortical_composite`` / ``whole_cerebellum`` it is flagged
  non-standard (``centiloid_standard_vois`` = 0).
* tau: ``suvr_braak_I_II``, ``suvr_braak_III_IV``, ``suvr_braak_V_VI`` vs the tracer's
  reference (inferior cerebellar grey).
* DaT: specific binding ratio ``sbr_<region>`` = (region - occipital) / occipital for
  caudate, anterior/posterior/whole putamen and striatum, each side; ``sbr_putamen_min``,
  ``asymmetry_putamen`` / ``asymmetry_caudate`` (100 * (L - R) / mean(L, R), %) and
  ``putamen_caudate_ratio_{left,right}``.
* FDG: ``suvr_pons_<target>`` and ``suvr_global_<target>`` (global = whole_brain mean) for
  the cortical composite and the posterior cingulate / precuneus.

Every family adds ``positive`` (1/0) when the tracer has a cut-off in tracers.yaml (n/a,
with the reason, where the literature has no value for the measure).

>>> import pandas as pd
>>> regions = pd.DataFrame({"region": ["voi_ctx", "voi_WhlCbl"], "mean": [2.076, 1.0]})
>>> m = summary_measures(regions, "PiB").set_index("measure")["value"]
>>> float(round(m["suvr_cortical"], 3)), float(round(m["centiloid"], 1)), int(m["positive"])
(2.076, 100.0, 1)
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from bids_harmonize.tracers import Tracer, get_tracer

LOGGER = logging.getLogger(__name__)

MEASURE_COLUMNS = ("measure", "value", "units", "reference", "description")

#: BIDS-style data dictionary of the measures table (``*_measures.json``).
MEASURE_DICTIONARY: dict[str, dict[str, str]] = {
    "measure": {"LongName": "Measure name",
                "Description": "Summary measure, e.g. suvr_cortical, centiloid, "
                               "suvr_braak_III_IV, sbr_putamen_left, positive."},
    "value": {"LongName": "Value", "Description": "Value of the measure (n/a when the atlas "
                                                  "lacks a region it needs)."},
    "units": {"LongName": "Units", "Description": "Units of the value: 'unitless' for ratios, "
                                                  "'CL' for Centiloid, '%' for asymmetry, "
                                                  "'boolean' for 1/0 flags."},
    "reference": {"LongName": "Reference region",
                  "Description": "Reference region the measure is normalised by (n/a if none)."},
    "description": {"LongName": "Description", "Description": "How the measure was computed."},
    "value_sd": {"LongName": "Standard deviation of the value (harmonizer uncertainty)",
                 "Description": "Harmonized images only, with a model that has an ensemble: SD of "
                                "the measure (e.g. Centiloid) over the ensemble's harmonized "
                                "images, times the model's calibration factor; value +- 1.645 "
                                "value_sd is the calibrated 90 % interval. n/a for flags.",
                 "Units": "same as the value"},
}

_DAT_REGIONS = ("caudate_left", "caudate_right", "putamen_anterior_left",
                "putamen_anterior_right", "putamen_posterior_left", "putamen_posterior_right",
                "putamen_left", "putamen_right", "striatum")


def cutoff_is_positive(measure: str, value: float, cutoff: float) -> bool:
    """Positivity at a cut-off; specific binding ratios are abnormal *below* it.

    >>> cutoff_is_positive("centiloid", 30.0, 24.1)
    True
    >>> cutoff_is_positive("sbr_putamen_min", 1.5, 2.0)
    True
    """
    return bool(value < cutoff) if measure.startswith("sbr") else bool(value >= cutoff)


def _means(regions: pd.DataFrame) -> dict[str, float]:
    return dict(zip(regions["region"].astype(str), regions["mean"].astype(float), strict=True))


def _first(means: dict[str, float], *names: str) -> str | None:
    return next((n for n in names if n in means), None)


def _row(measure, value, units, reference, description):
    return {"measure": measure, "value": float(value) if value is not None else np.nan,
            "units": units, "reference": reference or "n/a", "description": description}


def _ratio(means, target, reference):
    if target is None or reference is None:
        return np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.float64(means[target]) / np.float64(means[reference])


def amyloid_measures(regions: pd.DataFrame, tracer: Tracer, *,
                     equation: str | None = None) -> list[dict]:
    """Cortical SUVR and Centiloid (standard VOIs when present, else flagged non-standard).

    ``centiloid`` uses the tracer's default equation (its first in ``tracers.yaml``: the
    standard method). Every other named equation (e.g. florbetapir ``avid``) adds a row
    ``centiloid_<name>`` whose description names it and its pipeline, so that a number
    from another pipeline is never mistaken for standard Centiloid (and no cut-off of the
    standard scale is applied to it); ``equation`` limits these rows to the one named.
    """
    means = _means(regions)
    target = _first(means, "voi_ctx", "cortical_composite")
    ref = _first(means, "voi_WhlCbl", "whole_cerebellum")
    standard = target == "voi_ctx" and ref == "voi_WhlCbl"
    suvr = _ratio(means, target, ref)
    how = ("GAAIN Centiloid standard VOIs" if standard else
           "non-standard: atlas composite, not the GAAIN Centiloid VOIs")
    rows = [_row("suvr_cortical", suvr, "unitless", ref,
                 f"Mean uptake of {target} / {ref} ({how}).")]
    if tracer.centiloid_equations:
        default = tracer.centiloid["name"]
        if equation is not None:
            tracer.equation(equation)  # an unknown name is an error naming the known ones
        names = [default] + [n for n in tracer.centiloid_equations
                             if n != default and equation in (None, n)]
        for name in names:
            eq = tracer.equation(name)
            label = "" if name == default else f" [{name.upper()} EQUATION, not the default]"
            rows.append(_row("centiloid" if name == default else f"centiloid_{name}",
                             tracer.centiloid_from_suvr(suvr, name), "CL", ref,
                             f"CL = {eq['slope']:g} * suvr_cortical + {eq['intercept']:g}, "
                             f"equation '{name}'{label}: {eq.get('pipeline', '')} "
                             f"({eq['source']}); VOIs here: {how}."))
        rows.append(_row("centiloid_standard_vois", float(standard), "boolean", "n/a",
                         "1 if Centiloid used the GAAIN standard VOIs, 0 if an atlas "
                         "composite (not comparable to published cut-offs without validation)."))
    if target is None or ref is None:
        LOGGER.warning("amyloid measures: atlas lacks a cortical target or whole cerebellum")
    return rows


def tau_measures(regions: pd.DataFrame, tracer: Tracer) -> list[dict]:
    """Braak-stage meta-ROI SUVRs vs the tracer's reference (inferior cerebellar grey)."""
    means = _means(regions)
    ref = _first(means, tracer.reference)
    rows = []
    for stage in ("braak_I_II", "braak_III_IV", "braak_V_VI"):
        target = _first(means, stage)
        rows.append(_row(f"suvr_{stage}", _ratio(means, target, ref), "unitless",
                         ref or tracer.reference,
                         f"Mean uptake of the {stage} meta-ROI / {tracer.reference}."))
    return rows


def dat_measures(regions: pd.DataFrame, tracer: Tracer) -> list[dict]:
    """Specific binding ratios (region - occipital) / occipital, asymmetry, P/C ratio."""
    means = _means(regions)
    ref = _first(means, tracer.reference)
    rows, sbr = [], {}
    for region in _DAT_REGIONS:
        value = _ratio(means, _first(means, region), ref) - 1.0
        sbr[region] = value
        rows.append(_row(f"sbr_{region}", value, "unitless", ref or tracer.reference,
                         f"Specific binding ratio ({region} - {tracer.reference}) / "
                         f"{tracer.reference}."))
    rows.append(_row("sbr_putamen_min", np.fmin(sbr["putamen_left"], sbr["putamen_right"]),
                     "unitless", ref or tracer.reference,
                     "Lower of the left and right whole-putamen SBR."))
    for part in ("putamen", "caudate"):
        left, right = sbr[f"{part}_left"], sbr[f"{part}_right"]
        with np.errstate(invalid="ignore", divide="ignore"):
            asym = 100.0 * (left - right) / ((left + right) / 2.0)
        rows.append(_row(f"asymmetry_{part}", asym, "%", ref or tracer.reference,
                         f"100 * (left - right) / mean(left, right) of the {part} SBR."))
    for side in ("left", "right"):
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = sbr[f"putamen_{side}"] / sbr[f"caudate_{side}"]
        rows.append(_row(f"putamen_caudate_ratio_{side}", ratio, "unitless",
                         ref or tracer.reference,
                         f"SBR putamen_{side} / SBR caudate_{side}."))
    return rows


def fdg_measures(regions: pd.DataFrame, tracer: Tracer) -> list[dict]:
    """SUVR of the cortical composite and PCC/precuneus vs pons and vs the global mean."""
    means = _means(regions)
    rows = []
    for target in ("cortical_composite", "posterior_cingulate_precuneus"):
        t = _first(means, target)
        for label, ref_name in (("pons", "pons"), ("global", "whole_brain")):
            ref = _first(means, ref_name)
            rows.append(_row(f"suvr_{label}_{target}", _ratio(means, t, ref), "unitless",
                             ref_name, f"Mean uptake of {target} / {ref_name}."))
    return rows


#: each family's headline target region (the numerator of its first summary measure above:
#: Centiloid's cortex, the Braak III-IV meta-ROI, the FDG cortical composite, the striatum);
#: the harmonizer's do-no-harm guard keeps it no further from PET-CT than as acquired
SUMMARY_TARGETS = {"amyloid": "cortical_composite", "tau": "braak_III_IV",
                   "fdg": "cortical_composite", "dat": "striatum"}

_FAMILY = {"amyloid": amyloid_measures, "tau": tau_measures, "dat": dat_measures,
           "fdg": fdg_measures}


def summary_measures(regions: pd.DataFrame, tracer: str | Tracer, *,
                     cutoff: float | None = None, equation: str | None = None) -> pd.DataFrame:
    """The tracer family's summary measures, plus ``positive`` vs the tracer's cut-off.

    ``cutoff`` overrides the value of ``tracers.yaml: cutoff`` (same measure); where the
    table has no published value and none is given, ``positive`` is n/a and its
    description says so. ``equation`` picks a named Centiloid equation (amyloid). A
    tracer of family ``unknown`` gets no tracer-specific measure (an empty table).

    >>> regions = pd.DataFrame({"region": ["braak_III_IV", "inferior_cerebellar_grey"],
    ...                         "mean": [1.5, 1.0]})
    >>> m = summary_measures(regions, "flortaucipir").set_index("measure")
    >>> bool(np.isnan(m.loc["positive", "value"])), m.loc["positive", "description"][:24]
    (True, 'no published cut-off for')
    """
    tracer = get_tracer(tracer) if isinstance(tracer, str) else tracer
    if tracer.family not in _FAMILY:
        LOGGER.info("%s: tracer of family %r, no tracer-specific measures", tracer.name,
                    tracer.family)
        return pd.DataFrame([], columns=list(MEASURE_COLUMNS))
    if tracer.family == "amyloid":
        rows = amyloid_measures(regions, tracer, equation=equation)
    else:
        rows = _FAMILY[tracer.family](regions, tracer)
    if tracer.cutoff:
        measure = tracer.cutoff["measure"]
        value = tracer.cutoff.get("value") if cutoff is None else float(cutoff)
        source = "--cutoff" if cutoff is not None else tracer.cutoff.get("source", "tracers.yaml")
        found = [r for r in rows if r["measure"] == measure]
        side = "<" if measure.startswith("sbr") else ">="
        if not found:
            LOGGER.warning("cut-off measure %r of %s not computed", measure, tracer.name)
        elif value is None:
            rows.append(_row("positive", None, "boolean", found[0]["reference"],
                             f"no published cut-off for {measure} of {tracer.name} "
                             f"({source}); n/a"))
        else:
            x = found[0]["value"]
            flag = np.nan if np.isnan(x) else float(cutoff_is_positive(measure, x, value))
            rows.append(_row("positive", flag, "boolean", found[0]["reference"],
                             f"1 if {measure} {side} {value:g}, else 0 (cut-off: {source})."))
    return pd.DataFrame(rows, columns=list(MEASURE_COLUMNS))
