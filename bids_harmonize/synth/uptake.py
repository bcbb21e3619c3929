"""Tracer uptake models: regional SUV per tissue, per-subject disease, time course.

A subject has latent disease parameters (:func:`draw_disease`): Centiloid,
Braak stage, FDG hypometabolism, dopamine-transporter loss.  Each tracer turns
them into a window-averaged SUV image (:func:`window_suv`):

- **amyloid** (PiB, florbetapir, florbetaben, flutemetamol, NAV4694): cerebellar
  grey = 1, tracer-specific white-matter non-specific binding; the cortical
  composite SUVR (whole-cerebellum reference, synth labels) equals the target
  ``(CL - intercept) / slope`` of ``tracers.yaml`` *exactly* in the true image
  (solved, since region means are linear in the cortical binding);
- **tau** (flortaucipir, MK6240): Braak-staged spread entorhinal -> hippocampus ->
  inferior temporal -> lateral temporal/insula -> neocortex; off-target binding in
  the choroid plexus (flortaucipir) or meninges/skull (MK6240), striatum;
- **FDG**: cortex 2.5-3x white matter, cerebellum below cortex, optional AD-like
  parieto-temporal/precuneus hypometabolism;
- **DaT** (FPCIT): striatal specific binding ratio (occipital reference) 3-8 in normals,
  asymmetric posterior-putamen-first loss in parkinsonian subjects.

Frames: ``SUV(t) = k(t) * [(1 - m(t)) * SUV_window + m(t) * SUV_flow]``, a global
drift ``k`` and a perfusion-like pattern ``m`` that fades before the window, so the
window average equals the window image up to a global factor.
"""

from __future__ import annotations

import zlib

import numpy as np

from bids_harmonize.atlas import BRAAK_STAGE_REGIONS
from bids_harmonize.synth.template import LABELS
from bids_harmonize.tracers import Tracer

L = LABELS
CORTICAL_COMPOSITE = (L["frontal_cortex"], L["parietal_cortex"], L["lateral_temporal_cortex"],
                      L["posterior_cingulate_precuneus"], L["anterior_cingulate"])
WHOLE_CEREBELLUM = (L["superior_cerebellar_grey"], L["inferior_cerebellar_grey"],
                    L["cerebellar_white_matter"])

#: Amyloid tracers: WM/cerebellar-grey non-specific ratio, typical injected MBq.
AMYLOID = {"PiB": (1.7, 370.0), "florbetapir": (2.0, 370.0), "florbetaben": (1.8, 300.0),
           "flutemetamol": (2.1, 185.0), "NAV4694": (1.5, 200.0)}
#: Regional weights of amyloid specific binding (relative to the cortical composite).
AMYLOID_WEIGHTS = {
    "frontal_cortex": 1.05, "parietal_cortex": 1.0, "lateral_temporal_cortex": 0.9,
    "posterior_cingulate_precuneus": 1.25, "anterior_cingulate": 1.1, "occipital_cortex": 0.7,
    "insula": 0.85, "inferior_temporal_fusiform": 0.75, "entorhinal_cortex": 0.3,
    "hippocampus_parahippocampal": 0.25, "caudate_left": 0.6, "caudate_right": 0.6,
    "putamen_anterior_left": 0.7, "putamen_anterior_right": 0.7,
    "putamen_posterior_left": 0.6, "putamen_posterior_right": 0.6, "thalamus": 0.3,
}
#: Tau regions by Braak stage at which they become involved: the one definition of
#: ``bids_harmonize.atlas.BRAAK_STAGE_REGIONS`` (Schöll et al. 2016), shared with quantification.
BRAAK_REGIONS = BRAAK_STAGE_REGIONS
DOSE_MBQ = {"FDG": 200.0, "flortaucipir": 370.0, "MK6240": 185.0, "FPCIT": 185.0,
            **{k: v[1] for k, v in AMYLOID.items()}}


def tracer_seed(name: str) -> int:
    """A stable integer per tracer name (for per-tracer random streams).

    >>> tracer_seed("PiB") == tracer_seed("PiB")
    True
    """
    return zlib.crc32(name.encode())


def draw_disease(rng: np.random.Generator, age: float,
                 amyloid: tuple[bool, float] | None = None) -> dict:
    """Latent disease parameters of one subject (independent of the tracers asked for).

    ``amyloid``: ``(positive, centiloid)`` drawn elsewhere (a consortium's cohort,
    :meth:`~bids_harmonize.synth.consortium.Cohort.draw_amyloid`); the default draw is
    still made (and discarded) so the other parameters come from the same stream.
    """
    positive = bool(rng.random() < 0.45)
    if positive:
        centiloid = float(rng.uniform(25.0, 150.0))
    else:
        centiloid = float(np.clip(rng.normal(2.0, 8.0), -15.0, 20.0))
    if amyloid is not None:
        positive, centiloid = bool(amyloid[0]), float(amyloid[1])
    if positive:
        braak = int(np.clip(np.round(centiloid / 25.0 + rng.normal(0, 1)), 1, 6))
    else:
        braak = int(rng.choice([0, 0, 1, 2]))
    hypo = float(np.clip((centiloid - 20) / 130, 0, 1) * rng.uniform(0.1, 0.25)) if positive \
        else 0.0
    dat_loss = float(rng.uniform(0.4, 0.8)) if rng.random() < 0.3 else 0.0
    return {
        "centiloid": round(centiloid, 3),
        "amyloid_positive": positive,
        "braak_stage": braak,
        "fdg_hypometabolism": round(hypo, 4),
        "dat_loss": round(dat_loss, 4),
        "dat_more_affected_side": "left" if rng.random() < 0.5 else "right",
        "tau_offtarget": bool(rng.random() < 0.7),
    }


def _names_to_idx(values: dict[str, float]) -> dict[int, float]:
    return {L[k]: v for k, v in values.items()}


def _compose(anat, gm_by_label: dict[int, float], wm: float, csf: float, extra: dict,
             cereb_wm: float | None = None, stem: float | None = None) -> np.ndarray:
    """SUV image from grey values per label (via the nearest-grey region map), WM, CSF."""
    fr = anat.fractions
    lut = np.zeros(32, dtype=np.float32)
    for idx, val in gm_by_label.items():
        lut[idx] = val
    grey = lut[anat.region]
    wm_img = np.full(anat.shape, wm, dtype=np.float32)
    if cereb_wm is not None:
        wm_img[anat.labels == L["cerebellar_white_matter"]] = cereb_wm
    if stem is not None:
        wm_img[(anat.labels == L["pons"]) | (anat.labels == L["midbrain_medulla"])] = stem
    deep = (anat.labels >= 11) & (anat.labels <= 17)
    gm_frac = np.where(deep, fr["GM"] + 0.7 * fr["WM"], fr["GM"])
    wm_frac = np.where(deep, 0.3 * fr["WM"], fr["WM"])
    suv = gm_frac * grey + wm_frac * wm_img + fr["CSF"] * csf
    for cls in ("soft", "fat", "cortical_bone", "diploe", "eye"):
        suv += fr[cls] * extra.get(cls, 0.0)
    for mask_name in ("meninges", "choroid"):
        if mask_name in extra:
            suv[anat.masks[mask_name]] += extra[mask_name]
    return suv.astype(np.float32)


def _region_mean(img, labels, indices):
    mask = np.isin(labels, indices)
    return float(img[mask].mean())


def window_suv(anat, tracer: Tracer, disease: dict, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, dict]:
    """(window SUV image, early perfusion-like SUV image, true tracer parameters)."""
    fam = tracer.family
    all_grey = [i for i in range(1, 24) if i not in (L["cerebral_white_matter"],
                                                     L["cerebellar_white_matter"])]
    extra = {"soft": 0.5, "fat": 0.15, "cortical_bone": 0.2, "diploe": 0.5, "eye": 0.4}
    info: dict = {}
    if fam == "amyloid":
        wm_ratio, _ = AMYLOID.get(tracer.name, (1.8, 300.0))
        wm_ratio *= rng.uniform(0.9, 1.1)
        cl = disease["centiloid"]
        target = (cl - tracer.centiloid["intercept"]) / tracer.centiloid["slope"]
        base = {i: 1.0 for i in all_grey}
        base[L["pons"]] = wm_ratio * 0.95
        spec = {i: 0.0 for i in all_grey}
        for name, w in AMYLOID_WEIGHTS.items():
            spec[L[name]] = w

        def build(s):
            return _compose(anat, {i: base[i] + s * spec[i] for i in all_grey}, wm_ratio,
                            0.1, extra, cereb_wm=wm_ratio * 0.9)

        img0, img1 = build(0.0), build(1.0)
        # region means are linear in s: ratio(s) = (a0 + s a1) / (c0 + s c1) = target
        # (c1 is small but not 0: partial-volume voxels borrow the nearest grey label)
        c0 = _region_mean(img0, anat.labels, WHOLE_CEREBELLUM)
        c1 = _region_mean(img1, anat.labels, WHOLE_CEREBELLUM) - c0
        a0 = _region_mean(img0, anat.labels, CORTICAL_COMPOSITE)
        a1 = _region_mean(img1, anat.labels, CORTICAL_COMPOSITE) - a0
        s = (target * c0 - a0) / (a1 - target * c1)
        suvr_img = img0 + s * (img1 - img0)
        ref = c0 + s * c1
        scale = rng.uniform(0.9, 1.3) / ref
        suv = suvr_img * scale
        info = {"target_suvr": round(float(target), 5), "centiloid": cl,
                "specific_binding": round(float(s), 5), "wm_ratio": round(float(wm_ratio), 4)}
        flow_ratio = {"gm": 1.4, "wm": 0.6}
    elif fam == "tau":
        stage = disease["braak_stage"]
        gm = {i: 1.0 for i in all_grey}
        amp = rng.uniform(0.25, 0.45) * (1 + 0.35 * stage)
        for st in range(1, stage + 1):
            for name in BRAAK_REGIONS[st]:
                gm[L[name]] = 1.0 + amp * (1.0 - 0.12 * (st - 1)) * rng.uniform(0.85, 1.15)
        wm = 0.95 if tracer.name == "flortaucipir" else 0.75
        if disease["tau_offtarget"]:
            for name in ("putamen_anterior_left", "putamen_anterior_right",
                         "putamen_posterior_left", "putamen_posterior_right"):
                gm[L[name]] = max(gm[L[name]], 1.35)
            gm[L["midbrain_medulla"]] = 1.25
            if tracer.name == "MK6240":
                extra.update(meninges=2.0, cortical_bone=0.8, diploe=1.2)
            else:
                extra.update(choroid=2.0)
        img = _compose(anat, gm, wm, 0.1, extra, cereb_wm=0.9)
        ref = _region_mean(img, anat.labels, [L["inferior_cerebellar_grey"]])
        suv = img * (rng.uniform(0.9, 1.3) / ref)
        info = {"braak_stage": stage, "tau_amplitude": round(float(amp), 4),
                "offtarget": disease["tau_offtarget"]}
        flow_ratio = {"gm": 1.3, "wm": 0.6}
    elif fam == "fdg":
        gm = {i: 1.0 for i in all_grey}
        gm[L["superior_cerebellar_grey"]] = gm[L["inferior_cerebellar_grey"]] = 0.8
        gm[L["pons"]] = 0.55
        gm[L["midbrain_medulla"]] = 0.6
        gm[L["thalamus"]] = 0.95
        gm[L["entorhinal_cortex"]] = gm[L["hippocampus_parahippocampal"]] = 0.7
        hypo = disease["fdg_hypometabolism"]
        for name, w in (("posterior_cingulate_precuneus", 1.0), ("parietal_cortex", 0.9),
                        ("lateral_temporal_cortex", 0.8), ("inferior_temporal_fusiform", 0.6),
                        ("frontal_cortex", 0.35)):
            gm[L[name]] *= 1.0 - hypo * w
        ratio = rng.uniform(2.6, 3.0)
        extra.update(soft=0.12 * ratio, cortical_bone=0.05, diploe=0.1)
        img = _compose(anat, gm, 1.0 / ratio, 0.08, extra, cereb_wm=0.8 / ratio,
                       stem=0.5)
        suv = img * rng.uniform(6.5, 9.5)
        info = {"gm_wm_ratio": round(float(ratio), 4), "hypometabolism": hypo}
        flow_ratio = {"gm": 1.0, "wm": 0.45}
    elif fam == "dat":
        loss = disease["dat_loss"]
        more = disease["dat_more_affected_side"]
        gm = {i: 1.0 for i in all_grey}
        gm[L["thalamus"]] = 1.3
        gm[L["midbrain_medulla"]] = 1.5
        sbr_normal = rng.uniform(4.0, 7.0)
        sbr = {}
        for region, w in (("caudate", 0.25), ("putamen_anterior", 0.55),
                          ("putamen_posterior", 1.0)):
            for side in ("left", "right"):
                f = 1.0 if side == more else 0.6
                value = sbr_normal * (0.95 if region.startswith("putamen") else 1.0)
                value *= 1.0 - loss * w * f
                sbr[f"{region}_{side}"] = value
                gm[L[f"{region}_{side}"]] = 1.0 + value
        img = _compose(anat, gm, 0.8, 0.1, extra)
        ref = _region_mean(img, anat.labels, [L["occipital_cortex"]])
        suv = img * (rng.uniform(0.8, 1.2) / ref)
        info = {"sbr_normal": round(float(sbr_normal), 4), "dat_loss": loss,
                "more_affected_side": more,
                "set_binding_ratio": {k: round(float(v), 4) for k, v in sbr.items()}}
        flow_ratio = {"gm": 1.2, "wm": 0.6}
    else:  # pragma: no cover - tracer families are validated by tracers.py
        raise ValueError(f"unknown tracer family {fam!r}")
    flow = _compose(anat, {i: flow_ratio["gm"] for i in all_grey}, flow_ratio["wm"], 0.2,
                    {"soft": 0.6, "fat": 0.2, "diploe": 0.5, "cortical_bone": 0.2, "eye": 0.5})
    flow *= float(np.mean(suv[anat.labels > 0])) / float(np.mean(flow[anat.labels > 0]))
    return suv.astype(np.float32), flow.astype(np.float32), info


#: Global drift of SUV per minute by family (FDG keeps accumulating, others wash out).
DRIFT_PER_MIN = {"fdg": 0.004, "amyloid": -0.0015, "tau": 0.002, "dat": 0.0}


#: Kinetic model of the SUVR drift after the standard window, per tracer (the same-day
#: protocol option ``SynthConfig.petmr_delay_min``): the contrast of every voxel to the
#: tracer's reference region grows linearly with time,
#: ``SUVR(t) - 1 = (SUVR_window - 1) * (1 + beta * (t - t_window))``, ``beta`` per minute.
#: Tracers without an entry have no model: asking for a delay with them is an error.
SUVR_DRIFT_PER_MIN: dict[str, tuple[float, str]] = {
    "PiB": (0.0012, "van Berckel et al. 2013, J Nucl Med 54:1570: SUVr 40-60 and 60-90 min "
                    "over-estimate binding by 10 % and 13 % (vs RPM2), i.e. +3 % between window "
                    "midpoints 25 min apart: 0.03 / 25 min, applied to the specific signal "
                    "(about 1 % of it per 10 min; was 0.004, 2-4x that, issue 20)"),
    "florbetapir": (0.004, "florbetapir cortical SUVR rises slowly from 30 to 90 min (Wong et "
                           "al. 2010, J Nucl Med 51:913); rate an assumption of that order"),
    "florbetaben": (0.0, "florbetaben SUVR is nearly flat after 90 min (its standard window "
                         "90-110 min; Barthel et al. 2011, Lancet Neurol 10:424 show the rise "
                         "from 45 to 110 min levelling off). The plateau is the issue-20 "
                         "literature check's reading; no later-window rate was found, so a "
                         "delayed florbetaben scan is modelled without drift (was 0.004)"),
    "flutemetamol": (0.004, "as the other amyloid tracers (Nelissen et al. 2009, J Nucl Med "
                            "50:1251); rate an assumption"),
    "flortaucipir": (0.008, "flortaucipir SUVR does not plateau by 100-130 min, rising most in "
                            "high-binding regions (Baker et al. 2017, J Nucl Med 58:332; "
                            "Wooten et al. 2017); rate an assumption of that order"),
    "FDG": (0.002, "FDG is trapped; regional ratios change slowly after 40 min (Huang et al. "
                   "1980, Am J Physiol 238:E69); rate an assumption"),
    "FPCIT": (0.005, "18F-FP-CIT striatal binding ratios still rise during 60-120 min "
                     "(Kazumata et al. 1998, J Nucl Med 39:1521); rate an assumption"),
}


def kinetic_model(tracer: Tracer) -> float:
    """``beta`` (1/min) of :data:`SUVR_DRIFT_PER_MIN`; a tracer without a model is an error.

    >>> from bids_harmonize.tracers import get_tracer
    >>> kinetic_model(get_tracer("PiB"))
    0.0012
    """
    try:
        return SUVR_DRIFT_PER_MIN[tracer.name][0]
    except KeyError:
        raise ValueError(f"no kinetic model of the SUVR drift for tracer {tracer.name} "
                         f"(needed by the PET-MR delay); known: "
                         f"{', '.join(SUVR_DRIFT_PER_MIN)}") from None


def later_window_image(image: np.ndarray, labels: np.ndarray, tracer: Tracer,
                       delay_min: float) -> np.ndarray:
    """The window image ``delay_min`` later: contrast to the reference region grown by
    ``1 + beta * delay`` (:data:`SUVR_DRIFT_PER_MIN`); the reference region is unchanged.

    >>> from bids_harmonize.tracers import get_tracer
    >>> lab = np.array([19, 20, 21, 1]); img = np.array([1.0, 1.0, 1.0, 2.0], np.float32)
    >>> later_window_image(img, lab, get_tracer("PiB"), 25.0).tolist()
    [1.0, 1.0, 1.0, 2.0299999713897705]
    """
    from bids_harmonize.atlas import composite_labels

    beta = kinetic_model(tracer)
    ref = np.isin(labels, composite_labels(tracer.reference))
    r = float(image[ref].mean())
    return (r + (image - r) * np.float32(1.0 + beta * delay_min)).astype(np.float32)


#: Largest between-session SD of the log brain-to-reference ratio the simulator accepts
#: (``SynthConfig.session_sd``, a consortium's ``protocol.session_sd``): 20 %, several
#: times the published test-retest variability (2.5-3 %, see ``data/consortia.yaml``).
MAX_SESSION_SD = 0.2


def session_window_image(image: np.ndarray, labels: np.ndarray, tracer: Tracer,
                         factor: float) -> np.ndarray:
    """The window image of one session whose brain-to-reference ratio is ``factor`` times
    the subject's: every brain voxel outside the tracer's reference region is scaled, so
    every regional SUVR changes by ``factor`` (between-session variability,
    ``SynthConfig.session_sd``); the reference region and the head outside the brain are
    unchanged.

    >>> from bids_harmonize.tracers import get_tracer
    >>> lab = np.array([19, 20, 21, 1, 0]); img = np.array([1, 1, 1, 2, 0.5], np.float32)
    >>> [round(float(v), 3) for v in session_window_image(img, lab, get_tracer("PiB"), 1.05)]
    [1.0, 1.0, 1.0, 2.1, 0.5]
    """
    from bids_harmonize.atlas import composite_labels

    target = (labels > 0) & ~np.isin(labels, composite_labels(tracer.reference))
    out = image.astype(np.float32, copy=True)
    out[target] *= np.float32(factor)
    return out


def frame_weights(tracer: Tracer, starts_min, durations_min) -> tuple[np.ndarray, np.ndarray]:
    """Weights ``(w_window, w_flow)`` of each frame: ``SUV = w_window*W + w_flow*F``.

    >>> from bids_harmonize.tracers import get_tracer
    >>> a, b = frame_weights(get_tracer("PiB"), [40, 50, 60], [10, 10, 10])
    >>> bool(b[0] > 0 and b[1] == 0 and b[2] == 0)
    True
    """
    t0, t1 = tracer.window_min
    mid = np.asarray(starts_min, float) + np.asarray(durations_min, float) / 2
    k = 1.0 + DRIFT_PER_MIN[tracer.family] * (mid - (t0 + t1) / 2)
    m = np.clip((t0 - mid) / max(t0, 1.0), 0.0, 1.0) ** 0.7
    return k * (1 - m), k * m


def true_measures(image: np.ndarray, labels: np.ndarray, tracer: Tracer) -> dict:
    """Standard measures of a tracer on the *true* image with the synth labels.

    SUVR of the cortical composite and the Braak composites to the tracer's reference
    region, Centiloid for amyloid tracers, specific binding ratios of the striatum for
    DaT (``mean / reference - 1``).  These are the targets a harmonized pipeline
    should recover.
    """
    from bids_harmonize.atlas import composite_labels

    def mean(name):
        mask = np.isin(labels, composite_labels(name))
        return float(image[mask].mean()) if mask.any() else float("nan")

    ref = mean(tracer.reference)
    out = {"reference_region": tracer.reference, "reference_mean_bq_ml": round(ref, 3)}
    for comp in ("cortical_composite", "braak_I_II", "braak_III_IV", "braak_V_VI"):
        out[f"suvr_{comp}"] = round(mean(comp) / ref, 5)
    if tracer.centiloid:
        out["centiloid"] = round(float(tracer.centiloid_from_suvr(out["suvr_cortical_composite"])),
                                 3)
    if tracer.family == "dat":
        for region in ("caudate_left", "caudate_right", "putamen_anterior_left",
                       "putamen_anterior_right", "putamen_posterior_left",
                       "putamen_posterior_right"):
            out[f"sbr_{region}"] = round(mean(region) / ref - 1.0, 5)
    return out
