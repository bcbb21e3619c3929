"""End-to-end accuracy: what the product writes, against the same subject's PET-CT.

    python benchmarks/accuracy/end_to_end.py --work /tmp/e2e --subjects 8

For every test set, the product's own commands (nothing in memory):

1. ``bids_harmonize-synth`` writes a simulated dataset (a seed of its own, never the
   training seed);
2. ``bids_harmonize ... participant`` preprocesses it and harmonizes every PET-MR series
   with the model under test (default: the shipped demo model), with the README demo's
   settings (``--sloppy``, ``MNI152NLin2009aSym``);
3. ``bids_harmonize ... group`` builds the group tables;

then scores the group level's tables (``group/regions_suvr.tsv``: regional SUVR with
each tracer's reference region; ``group/pairs.tsv``: Centiloid) of PET-MR, raw and
harmonized, against the same subject's PET-CT, and adds ComBat on the regional tables
as a baseline (fitted on the training set's participant outputs, ``--training-out``).

Test sets (``--sets``):

- ``seen``: PET-MR setups the model was trained on (dixon-nobone, dixon-bone, zte in
  turn), tracers it saw (PiB, FDG);
- ``unseen``: the same subjects' florbetapir and FPCIT (tracers the model never saw);
- ``heldout``: the attenuation setup left out of training (atlas), PiB and FDG;
- ``later``: PET-MR 20 min later than PET-CT (kinetic drift, which no attenuation
  model can undo), PiB.

Metrics per case (subject and tracer): mean absolute regional SUVR difference to PET-CT
(%) over the atlas regions outside the reference region, the worst region (and the worst
outside the ventricles, whose PET-MR error is mostly resolution), the brain-mean
intensity scale against PET-CT (reported apart: SUVR divides it away), and the median
harmonized/raw ratio outside the brain mask. Amyloid tracers add Centiloid: mean |dCL|,
ICC(2,1), Bland-Altman limits and class changes at the cut-off. Means come with 95 %
bootstrap intervals over subjects, and harmonized - raw (and - ComBat) paired over the
same subjects.

Each set is independent: on a cluster run one set per SLURM array task (``--sets seen``
etc. with one ``--work``), then ``--score-only`` once (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

LOGGER = logging.getLogger("end_to_end")

#: datasets to simulate: seed, PET-MR setups, tracers, PET-MR delay (min); the test sets
#: they serve and which tracers each set scores
DATASETS = {
    "main": {"seed": 201, "setups": ("dixon-nobone", "dixon-bone", "zte"),
             "tracers": ("PiB", "FDG", "florbetapir", "FPCIT"), "delay": 0.0,
             "sets": {"seen": ("PiB", "FDG"), "unseen": ("florbetapir", "FPCIT")}},
    "heldout": {"seed": 202, "setups": ("atlas",), "tracers": ("PiB", "FDG"), "delay": 0.0,
                "sets": {"heldout": ("PiB", "FDG")}},
    "later": {"seed": 203, "setups": ("dixon-nobone", "dixon-bone", "zte"),
              "tracers": ("PiB",), "delay": 20.0, "sets": {"later": ("PiB",)}},
}
SET_ORDER = ("seen", "unseen", "heldout", "later")
#: the synth atlas' regions (bids_harmonize.atlas); composites are not scored twice
REGIONS = (
    "frontal_cortex", "parietal_cortex", "lateral_temporal_cortex", "occipital_cortex",
    "posterior_cingulate_precuneus", "anterior_cingulate", "entorhinal_cortex",
    "hippocampus_parahippocampal", "inferior_temporal_fusiform", "insula", "caudate_left",
    "caudate_right", "putamen_anterior_left", "putamen_anterior_right",
    "putamen_posterior_left", "putamen_posterior_right", "thalamus", "cerebral_white_matter",
    "superior_cerebellar_grey", "inferior_cerebellar_grey", "cerebellar_white_matter", "pons",
    "midbrain_medulla", "ventricles_csf",
)
METHODS = ("raw", "ComBat", "harmonized")
CUTOFF_CL = 20.1  #: Amadoru et al. 2020 (the group level's default amyloid cut-off)
N_BOOT = 2000


def dataset_of(test_set: str) -> str:
    return next(name for name, d in DATASETS.items() if test_set in d["sets"])


# ---------------------------------------------------------------------------- running


def commands(name: str, work: Path, *, subjects: int, model: Path | None, nprocs: int,
             jobs: int) -> list[list[str]]:
    d = DATASETS[name]
    root = work / name
    synth = ["bids_harmonize-synth", str(root / "bids"), "--subjects", str(subjects),
             "--tracers", ",".join(d["tracers"]), "--petmr-setups", ",".join(d["setups"]),
             "--seed", str(d["seed"]), "--jobs", str(jobs), "--overwrite", "-q"]
    if d["delay"]:
        synth += ["--petmr-delay", f"{d['delay']:g}"]
    participant = ["bids_harmonize", str(root / "bids"), str(root / "out"), "participant",
                   "--output-spaces", "MNI152NLin2009aSym", "T1w", "--sloppy",
                   "-w", str(root / "work"), "--nprocs", str(nprocs), "--omp-nthreads", "1",
                   "--skip-bids-validation"]
    if model is not None:
        participant += ["--model-dir", str(model)]
    group = ["bids_harmonize", str(root / "bids"), str(root / "out"), "group"]
    return [synth, participant, group]


def run_dataset(name: str, work: Path, **kwargs) -> float:
    """Simulate, run participant and group for one dataset; returns the wall time (s).
    A step whose output is already there is skipped (rerun with the same --work resumes)."""
    root = work / name
    env = {**os.environ, "TEMPLATEFLOW_HOME": str(work / "templateflow")}
    if not (work / "templateflow" / "tpl-MNI152NLin2009aSym").is_dir():
        subprocess.run(["bids_harmonize-templates", str(work / "templateflow")], check=True, env=env)
    t0 = time.perf_counter()
    marks = {1: root / "participant.done", 2: root / "group.done"}
    done = {0: (root / "bids" / "participants.tsv").is_file(),
            1: marks[1].is_file(), 2: marks[2].is_file()}
    for step, cmd in enumerate(commands(name, work, **kwargs)):
        if done[step]:
            LOGGER.info("[%s] already done: %s", name, shlex.join(cmd[:3]))
            continue
        LOGGER.info("[%s] $ %s", name, shlex.join(cmd))
        t = time.perf_counter()
        rc = subprocess.run(cmd, env=env, check=False).returncode
        if rc not in (0,) and not (step == 1 and (root / "out" / "index.html").is_file()):
            raise SystemExit(f"[{name}] command failed (exit {rc}): {shlex.join(cmd)}")
        LOGGER.info("[%s] step %d: %.0f s", name, step + 1, time.perf_counter() - t)
        if step in marks:
            marks[step].write_text(shlex.join(cmd) + "\n")
    seconds = time.perf_counter() - t0
    record = root / "seconds.json"  # a resumed run adds to the time already spent
    before = json.loads(record.read_text())["seconds"] if record.is_file() else 0.0
    record.write_text(json.dumps({"seconds": before + seconds}))
    return seconds


# ---------------------------------------------------------------------------- ComBat


def fit_combat(reference: pd.DataFrame, batch: pd.DataFrame) -> dict:
    """ComBat (Johnson et al. 2007, location and scale, empirical-Bayes shrinkage across
    regions) with PET-CT as the reference batch, on log SUVR, from paired training cases.

    ``reference`` and ``batch``: rows = cases (the same subjects and tracers, same order),
    columns = regions. Returns per-region ``gamma`` (location) and ``delta`` (scale) of the
    PET-MR batch relative to PET-CT, shrunk towards their across-region priors.
    """
    ref = np.log(reference.to_numpy(float))
    bat = np.log(batch.to_numpy(float))
    mu, sd = ref.mean(0), ref.std(0, ddof=1)
    sd = np.where(sd > 0, sd, 1.0)
    z = (bat - mu) / sd
    zr = (ref - mu) / sd
    gamma_hat = z.mean(0) - zr.mean(0)
    delta_hat = z.var(0, ddof=1) / np.maximum(zr.var(0, ddof=1), 1e-12)
    n = z.shape[0]
    # empirical-Bayes priors across regions (normal for gamma, inverse gamma for delta)
    g_bar, t2 = gamma_hat.mean(), gamma_hat.var(ddof=1)
    m, s2 = delta_hat.mean(), delta_hat.var(ddof=1)
    a = (2 * s2 + m**2) / max(s2, 1e-12)
    b = (m * s2 + m**3) / max(s2, 1e-12)
    gamma = (n * t2 * gamma_hat + delta_hat * g_bar) / (n * t2 + delta_hat)
    delta = (b + 0.5 * ((z - zr.mean(0) - gamma) ** 2).sum(0)) / (n / 2 + a - 1)
    delta = delta / np.maximum(np.mean(zr.var(0, ddof=1)), 1e-12)
    return {"columns": list(reference.columns), "mu": mu, "sd": sd, "gamma": gamma,
            "delta": np.maximum(delta, 1e-6), "ref_mean": zr.mean(0), "n": n}


def apply_combat(model: dict, batch: pd.DataFrame) -> pd.DataFrame:
    """PET-MR regional SUVR moved to the PET-CT batch by a fitted :func:`fit_combat`."""
    cols = model["columns"]
    z = (np.log(batch[cols].to_numpy(float)) - model["mu"]) / model["sd"]
    adj = (z - model["ref_mean"] - model["gamma"]) / np.sqrt(model["delta"]) + model["ref_mean"]
    out = batch.copy()
    out[cols] = np.exp(adj * model["sd"] + model["mu"])
    return out


def _wide(regions: pd.DataFrame, version: str, platform: str) -> pd.DataFrame:
    rows = regions[(regions["platform"] == platform) & (regions["version"] == version)]
    return rows.set_index(["subject", "tracer"]).sort_index()


def training_cases(training_out: Path):
    """The training outputs' raw regional SUVR, PET-CT and PET-MR wide tables restricted to
    the paired cases with every region positive: ``(ct, mr)`` (same rows, same columns), or
    None when the group tables are missing."""
    table = training_out / "group" / "regions_suvr.tsv"
    if not table.is_file():
        LOGGER.warning("no %s: ComBat is left out (run 'group' on the training outputs)", table)
        return None
    regions = pd.read_csv(table, sep="\t", dtype={"subject": str})
    ct, mr = _wide(regions, "raw", "PET-CT"), _wide(regions, "raw", "PET-MR")
    keys = ct.index.intersection(mr.index)
    cols = [c for c in [*REGIONS, "cortical_composite"] if c in ct.columns]
    ok = (ct.loc[keys, cols] > 0).all(axis=1) & (mr.loc[keys, cols] > 0).all(axis=1)
    keys = keys[ok.to_numpy()]
    return ct.loc[keys, cols], mr.loc[keys, cols]


def combat_from_training(training_out: Path) -> dict | None:
    cases = training_cases(training_out)
    if cases is None:
        return None
    LOGGER.info("ComBat fitted on %d training cases", len(cases[0]))
    return fit_combat(*cases)


# ---------------------------------------------------------------------------- scoring


def reference_members(tracer: str) -> set[str]:
    """Atlas regions inside the tracer's reference region (their SUVR is not scored)."""
    from bids_harmonize.atlas import COMPOSITES
    from bids_harmonize.tracers import get_tracer

    ref = get_tracer(tracer).reference or ""
    return set(COMPOSITES.get(ref, (ref,)))


def _image_scales(out: Path, subject: str, tracer: str) -> dict:
    """Brain-mean intensity of PET-MR raw/harmonized over PET-CT, and the median
    harmonized/raw ratio outside the brain mask (inside the head), T1w space."""
    import nibabel as nb

    sub = out / f"sub-{subject}"

    def load(pattern):
        found = sorted(sub.glob(pattern))
        return np.asanyarray(nb.load(found[0]).dataobj, dtype=np.float32) if found else None

    mask = load("anat/*desc-brain_mask.nii.gz")
    ct = load(f"ses-petct/pet/*trc-{tracer}_*space-T1w_desc-preproc_pet.nii.gz")
    raw = load(f"ses-petmr/pet/*trc-{tracer}_*space-T1w_desc-preproc_pet.nii.gz")
    harm = load(f"ses-petmr/pet/*trc-{tracer}_*space-T1w_desc-harmonized_pet.nii.gz")
    if any(a is None for a in (mask, ct, raw, harm)):
        return {}
    brain = mask > 0.5
    head = (raw > 0.05 * raw[brain].mean()) & ~brain
    with np.errstate(divide="ignore", invalid="ignore"):
        outside = np.median((harm[head] / raw[head])[raw[head] > 0]) if head.any() else np.nan
    return {"scale_raw": float(raw[brain].mean() / ct[brain].mean()),
            "scale_harmonized": float(harm[brain].mean() / ct[brain].mean()),
            "outside_ratio": float(outside)}


def score_output(out: Path, sets: dict[str, tuple[str, ...]], combat=None) -> list[dict]:
    """Score one dataset's group tables: one row per test set, case (subject, tracer) and
    method (raw, harmonized, ComBat when ``combat`` is given).

    ``out``: the dataset's derivatives folder (``out/group/regions_suvr.tsv`` and the
    participant images); ``sets``: test set name -> the tracers it scores; ``combat``: a
    fitted :func:`fit_combat` model, or a function that maps the raw PET-MR wide table
    (rows ``(subject, tracer)``, columns regions) to its ComBat-adjusted twin. Returns no
    rows when the group table is missing.
    """
    from bids_harmonize.tracers import get_tracer

    table = out / "group" / "regions_suvr.tsv"
    if not table.is_file():
        return []
    regions = pd.read_csv(table, sep="\t", dtype={"subject": str})
    ct = _wide(regions, "raw", "PET-CT")
    versions = {"raw": _wide(regions, "raw", "PET-MR"),
                "harmonized": _wide(regions, "harmonized", "PET-MR")}
    if isinstance(combat, dict):
        versions["ComBat"] = apply_combat(combat, versions["raw"])
    elif combat is not None:
        versions["ComBat"] = combat(versions["raw"])
    rows = []
    for test_set, tracers in sets.items():
        for (subject, tracer) in ct.index:
            if tracer not in tracers:
                continue
            scored = [r for r in REGIONS if r not in reference_members(tracer)]
            ref = ct.loc[(subject, tracer), scored].astype(float)
            scales = _image_scales(out, subject, tracer)
            info = get_tracer(tracer)
            for method, wide in versions.items():
                if (subject, tracer) not in wide.index:
                    continue
                row = wide.loc[(subject, tracer)]
                err = 100.0 * (row[scored].astype(float) / ref - 1.0)
                case = {"set": test_set, "subject": subject, "tracer": tracer,
                        "ac_setup": versions["raw"].loc[(subject, tracer)].get("ac_setup"),
                        "method": method, "mean_abs_pct": float(err.abs().mean()),
                        "worst_pct": float(err.abs().max()),
                        "worst_region": str(err.abs().idxmax()),
                        "worst_no_csf_pct": float(err.drop("ventricles_csf").abs().max())}
                if method == "harmonized":
                    case["ood_decision"] = row.get("ood_decision")
                    case["scale"] = scales.get("scale_harmonized", np.nan)
                    case["outside_ratio"] = scales.get("outside_ratio", np.nan)
                elif method == "raw":
                    case["scale"] = scales.get("scale_raw", np.nan)
                if info.family == "amyloid" and info.centiloid_equations:
                    suvr_ct = float(ct.loc[(subject, tracer), "cortical_composite"])
                    suvr = float(row["cortical_composite"])
                    cl_ct, cl = info.centiloid_from_suvr(suvr_ct), info.centiloid_from_suvr(suvr)
                    case.update({"cl_petct": cl_ct, "cl": cl, "dcl": cl - cl_ct})
                rows.append(case)
    return rows


def case_rows(work: Path, combat: dict | None) -> pd.DataFrame:
    """One row per test set, case (subject, tracer) and method, over :data:`DATASETS`."""
    rows = []
    for name, d in DATASETS.items():
        rows += score_output(work / name / "out", d["sets"], combat)
    return pd.DataFrame(rows)


def bootstrap_mean(values, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95 % percentile bootstrap interval (resampling the given per-subject values).

    >>> m, lo, hi = bootstrap_mean([1.0, 2.0, 3.0, 4.0])
    >>> m, lo <= m <= hi
    (2.5, True)
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (np.nan, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    boots = rng.choice(v, size=(n_boot, v.size), replace=True).mean(1)
    return float(v.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def _per_subject(cases: pd.DataFrame, column: str) -> pd.Series:
    return cases.groupby("subject")[column].mean()


def status_agreement(cl_ref, cl_test, subjects=None, *, cutoff: float = CUTOFF_CL,
                     n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Agreement of amyloid status (``Centiloid >= cutoff``) between a method and PET-CT:
    Cohen's kappa (the group level's :func:`~bids_harmonize.group.agreement.classification_agreement`)
    with a 95 % percentile bootstrap interval over subjects, percent agreement and the
    counts of changed calls.

    Resamples in which one call is constant on both sides (kappa undefined) are left out
    of the interval; with a single class overall kappa is ``nan``.

    >>> r = status_agreement([5, 30, 60, 10], [6, 28, 61, 12])
    >>> r["kappa"], r["percent_agreement"], r["changed"]
    (1.0, 100.0, 0)
    """
    from bids_harmonize.group.agreement import classification_agreement

    ref = np.asarray(cl_ref, dtype=float)
    test = np.asarray(cl_test, dtype=float)
    subjects = np.asarray(subjects if subjects is not None else np.arange(ref.size))
    whole = classification_agreement(ref, test, cutoff)
    out = {"kappa": whole["kappa"], "percent_agreement": whole["percent_agreement"],
           "changed": int(whole["pos_to_neg"] + whole["neg_to_pos"]),
           "pos_to_neg": whole["pos_to_neg"], "neg_to_pos": whole["neg_to_pos"],
           "ref_positive": whole["ref_positive"], "n": whole["n"],
           "kappa_ci": (np.nan, np.nan)}
    labels = np.unique(subjects)
    if labels.size < 2 or not np.isfinite(whole["kappa"]):
        return out
    members = [np.flatnonzero(subjects == s) for s in labels]
    rng = np.random.default_rng(seed)
    boots = []
    for draw in rng.integers(0, labels.size, size=(n_boot, labels.size)):
        idx = np.concatenate([members[i] for i in draw])
        boots.append(classification_agreement(ref[idx], test[idx], cutoff)["kappa"])
    boots = np.asarray(boots, dtype=float)
    boots = boots[np.isfinite(boots)]
    if boots.size:
        out["kappa_ci"] = (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)))
    return out


def summarise_block(sc: pd.DataFrame) -> dict:
    """One group of cases (a test set, a site, a whole cohort), every method: metrics with
    bootstrap CIs over subjects; harmonized - raw and - ComBat paired over the same cases;
    per PET-MR setup. The one scoring implementation of the end-to-end benchmarks
    (``end_to_end.py`` per test set, ``consortium.py`` per site and overall)."""
    from bids_harmonize.group.agreement import bland_altman, icc

    block = {"n_subjects": int(sc["subject"].nunique()), "n_cases": int(
        len(sc[sc["method"] == "raw"])), "methods": {}, "paired": {}}
    for method in METHODS:
        m = sc[sc["method"] == method]
        if m.empty:
            continue
        entry = {}
        for col in ("mean_abs_pct", "worst_pct", "worst_no_csf_pct", "scale", "outside_ratio"):
            if col in m and m[col].notna().any():
                entry[col] = bootstrap_mean(_per_subject(m.dropna(subset=[col]), col))
        entry["worst_case_pct"] = float(m["worst_pct"].max())
        amy = m.dropna(subset=["dcl"]) if "dcl" in m else m.iloc[0:0]
        if len(amy):
            entry["abs_dcl"] = bootstrap_mean(_per_subject(amy.assign(a=amy["dcl"].abs()), "a"))
            entry["mean_dcl"] = float(amy["dcl"].mean())
            entry["icc_2_1"] = icc(amy["cl_petct"], amy["cl"]) if len(amy) > 1 else np.nan
            ba = bland_altman(amy["cl_petct"], amy["cl"])
            entry["bias"] = ba["bias"]
            entry["loa"] = (ba["loa_lower"], ba["loa_upper"])
            status = status_agreement(amy["cl_petct"], amy["cl"], amy["subject"])
            entry["kappa"] = status["kappa"]
            entry["kappa_ci"] = status["kappa_ci"]
            entry["percent_agreement"] = status["percent_agreement"]
            entry["class_changes"] = status["changed"]
            entry["n_amyloid_cases"] = int(len(amy))
        block["methods"][method] = entry
    for other in ("raw", "ComBat"):
        h = sc[sc["method"] == "harmonized"].set_index(["subject", "tracer"])
        o = sc[sc["method"] == other].set_index(["subject", "tracer"])
        keys = h.index.intersection(o.index)
        if not len(keys):
            continue
        diff = (h.loc[keys, "mean_abs_pct"] - o.loc[keys, "mean_abs_pct"]).groupby(level=0).mean()
        entry = {"mean_abs_pct": bootstrap_mean(diff)}
        if "dcl" in h and h.loc[keys, "dcl"].notna().any():
            hd = h.loc[keys, "dcl"].abs() - o.loc[keys, "dcl"].abs()
            entry["abs_dcl"] = bootstrap_mean(hd.dropna().groupby(level=0).mean())
        block["paired"][f"harmonized - {other}"] = entry
    per_setup = {}
    for setup, g in sc.groupby("ac_setup"):
        per_setup[str(setup)] = {
            method: bootstrap_mean(_per_subject(g[g["method"] == method], "mean_abs_pct"))
            for method in METHODS if (g["method"] == method).any()}
    block["per_setup"] = per_setup
    return block


def summarise(cases: pd.DataFrame) -> dict:
    """Per test set (:data:`SET_ORDER`): :func:`summarise_block`."""
    return {test_set: summarise_block(cases[cases["set"] == test_set])
            for test_set in SET_ORDER if (cases["set"] == test_set).any()}


def _ci(t, digits=2) -> str:
    m, lo, hi = t
    if not np.isfinite(m):
        return "n/a"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"End-to-end accuracy ({meta['date']}, model `{meta['model']}`, {meta['subjects']} "
             f"subjects per dataset, wall time {meta['minutes']:.0f} min on {meta['machine']})", "",
             "Mean absolute regional SUVR difference to PET-CT, % (95 % bootstrap CI over "
             "subjects); reference region excluded:", "",
             "| set | n subj / cases | raw | ComBat | harmonized | harmonized - raw (paired) | "
             "harmonized - ComBat (paired) |", "|---|---|---|---|---|---|---|"]
    for s, b in summary.items():
        m, p = b["methods"], b["paired"]
        paired = [_ci(p[k]["mean_abs_pct"]) if k in p else "n/a"
                  for k in ("harmonized - raw", "harmonized - ComBat")]
        lines.append(f"| {s} | {b['n_subjects']} / {b['n_cases']} | "
                     + " | ".join(_ci(m[k]["mean_abs_pct"]) if k in m else "n/a" for k in METHODS)
                     + " | " + " | ".join(paired) + " |")
    lines += ["", "Worst region per case (mean over subjects, %; outside the ventricles in "
              "brackets) and the single worst case:", "",
              "| set | raw | ComBat | harmonized |", "|---|---|---|---|"]
    for s, b in summary.items():
        m = b["methods"]
        cells = [f"{m[k]['worst_pct'][0]:.1f} ({m[k]['worst_no_csf_pct'][0]:.1f}); "
                 f"max {m[k]['worst_case_pct']:.1f}" if k in m else "n/a" for k in METHODS]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", "Centiloid (amyloid cases): mean |dCL| [CI], mean dCL, ICC(2,1), limits of "
              f"agreement, class changes at {CUTOFF_CL} CL:", "",
              "| set | method | mean abs dCL | mean dCL | ICC | LoA | class changes |",
              "|---|---|---|---|---|---|---|"]
    for s, b in summary.items():
        for k in METHODS:
            e = b["methods"].get(k, {})
            if "abs_dcl" not in e:
                continue
            lines.append(f"| {s} | {k} | {_ci(e['abs_dcl'], 1)} | {e['mean_dcl']:+.1f} | "
                         f"{e['icc_2_1']:.3f} | {e['loa'][0]:+.1f} / {e['loa'][1]:+.1f} | "
                         f"{e['class_changes']} of {e['n_amyloid_cases']} |")
        p = b["paired"].get("harmonized - raw", {})
        if "abs_dcl" in p:
            lines.append(f"| {s} | paired harmonized - raw | {_ci(p['abs_dcl'], 1)} | | | | |")
    lines += ["", "Per PET-MR setup (mean abs regional SUVR %, CI):", "",
              "| set | setup | raw | ComBat | harmonized |", "|---|---|---|---|---|"]
    for s, b in summary.items():
        for setup, e in b["per_setup"].items():
            lines.append(f"| {s} | {setup} | " + " | ".join(
                _ci(e[k]) if k in e else "n/a" for k in METHODS) + " |")
    lines += ["", "Global intensity (brain mean of PET-MR over PET-CT; SUVR divides it away) and "
              "median harmonized/raw outside the brain mask:", "",
              "| set | raw scale | harmonized scale | outside ratio |", "|---|---|---|---|"]
    for s, b in summary.items():
        m = b["methods"]
        cells = [_ci(m[k][col], 3) if col in m.get(k, {}) else "n/a"
                 for k, col in (("raw", "scale"), ("harmonized", "scale"),
                                ("harmonized", "outside_ratio"))]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def card_evaluation(summary: dict, meta: dict) -> dict:
    """The model card's ``evaluation``: the headline numbers of this benchmark."""
    out = {"benchmark": "benchmarks/accuracy/end_to_end.py (benchmarks/README.md: end-to-end "
                        "accuracy): participant and group outputs against the same subject's "
                        "PET-CT, simulated test subjects never seen in training",
           "date": meta["date"], "command": meta["command"],
           "metric": "mean absolute regional SUVR difference to PET-CT, % (synth atlas, tracer "
                     "reference region), mean [95 % bootstrap CI over subjects]; Centiloid "
                     "mean |dCL|", "sets": {}}
    for name, block in summary.items():
        m = block["methods"]
        entry = {"n_subjects": block["n_subjects"],
                 **{f"suvr_{k}_pct": [round(v, 2) for v in m[k]["mean_abs_pct"]]
                    for k in ("raw", "harmonized") if k in m},
                 "paired_harmonized_minus_raw": [
                     round(v, 2) for v in block["paired"]["harmonized - raw"]["mean_abs_pct"]]}
        for k in ("raw", "harmonized"):
            if "abs_dcl" in m.get(k, {}):
                entry[f"abs_dcl_{k}"] = round(m[k]["abs_dcl"][0], 2)
        out["sets"][name] = entry
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for datasets and outputs")
    p.add_argument("--subjects", type=int, default=8, help="subjects per dataset")
    p.add_argument("--sets", default="main,heldout,later",
                   help="datasets to run: main (seen and unseen tracers), heldout, later")
    p.add_argument("--model-dir", type=Path, default=None,
                   help="model to test (default: the shipped demo model)")
    p.add_argument("--training-out", type=Path, default=None,
                   help="participant outputs of the model's training set (for ComBat; 'group' "
                        "is run there when its tables are missing)")
    p.add_argument("--nprocs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="simulation processes")
    p.add_argument("--score-only", action="store_true", help="score what --work holds")
    p.add_argument("--record-in-card", type=Path, default=None, metavar="MODEL_DIR",
                   help="write the headline numbers into this model's card (evaluation)")
    p.add_argument("--results", type=Path, default=Path(__file__).with_name("END_TO_END"),
                   help="write RESULTS.md/.json/cases.tsv with this stem")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not args.score_only:
        for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
            run_dataset(name, args.work, subjects=args.subjects, model=args.model_dir,
                        nprocs=args.nprocs, jobs=args.jobs)
    combat = None
    if args.training_out is not None:
        if not (args.training_out / "group" / "regions_suvr.tsv").is_file():
            bids = args.training_out.parent / "bids"
            subprocess.run(["bids_harmonize", str(bids), str(args.training_out), "group"],
                           check=False)
        combat = combat_from_training(args.training_out)
    cases = case_rows(args.work, combat)
    if cases.empty:
        raise SystemExit(f"nothing to score under {args.work}")
    summary = summarise(cases)
    seconds = sum(json.loads((args.work / n / "seconds.json").read_text())["seconds"]
                  for n in DATASETS if (args.work / n / "seconds.json").is_file())
    meta = {"date": time.strftime("%Y-%m-%d"), "model": str(args.model_dir or "shipped demo"),
            "subjects": args.subjects, "minutes": seconds / 60,
            "machine": f"{os.cpu_count()} CPU cores",
            "command": "python benchmarks/accuracy/end_to_end.py " + shlex.join(argv or sys.argv[1:]),
            "scoring_seconds": round(time.perf_counter() - t0, 1)}
    text = markdown(summary, meta)
    print(text)
    stem = args.results
    cases.to_csv(f"{stem}_cases.tsv", sep="\t", index=False, float_format="%.5g")
    Path(f"{stem}.md").write_text(text)
    Path(f"{stem}.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=1,
                                               default=float) + "\n")
    if args.record_in_card is not None:
        from bids_harmonize.harmonizer.uncertainty import write_card
        from bids_harmonize.harmonizer.weights import read_card

        card, _ = read_card(args.record_in_card)
        card["evaluation"] = card_evaluation(summary, meta)
        write_card(args.record_in_card, card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
