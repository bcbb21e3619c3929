"""Accuracy benchmark of the harmonizer against baselines, on simulator v2 subjects.

    pip install -e ".[benchmarks]"                 # the ComBat baseline (neuroHarmonize)
    python benchmarks/accuracy/run.py --quick      # minutes on 2 CPU cores
    python benchmarks/accuracy/run.py              # larger default (see RESULTS.md for its time)

Simulates training subjects (PET-MR attenuation-correction setups ``TRAIN_SETUPS``, tracers
without florbetapir and FPCIT) and held-out test sets with ``bids_harmonize.synth`` (v2:
each PET-MR session has a setup and the scanner's own mu-map), trains

- **v2**: the three-stage harmonizer with the physics channel (expected attenuation-
  correction error from the pseudo-CT and the scanner's mu-map, :mod:`bids_harmonize.
  harmonizer.physics`), plus (``--ensemble-members``) an ensemble for the uncertainty and
  the out-of-distribution score (:mod:`bids_harmonize.harmonizer.uncertainty`, ``.ood``);
- **v1**: the same three stages without the physics channel (stages 1-2 shared with v2);
- **U-Net**: the stage-3 net alone (no anatomy, no physics);
- **linear**: a global linear cross-calibration per tracer; **ComBat** (neuroHarmonize,
  reference batch PET-CT) on regional values;

and scores every method on every test set against PET-CT (and the simulator's truth):
mean and worst-region absolute regional bias, voxel MAE/PSNR/SSIM, Centiloid difference
and classification changes at the cut-off, each with a 95 % bootstrap confidence interval
over subjects; the coverage of the ensemble's 90 % intervals and the OOD flag rates.

Writes ``RESULTS.md`` (and ``RESULTS.json``) next to this file, or where ``--out`` says.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parents[1]))
LOGGER = logging.getLogger("benchmark")

N_LABELS = 24
CL_CUTOFF = 24.1  #: Centiloid positivity cut-off (Klunk et al. 2015 scale; Jack et al. 2017 use ~24)
BOOTSTRAP = 2000  #: bootstrap resamples of subjects for the 95 % intervals
JOBS = 1  #: processes for simulation and scoring (``--jobs``)

# --------------------------------------------------------------------------- data sets
# (the simulator's engineer maintains this section: which setups, tracers and protocol
# options make each set)
TRAIN_TRACERS = ("PiB", "FDG", "flortaucipir", "florbetaben")
UNSEEN_TRACERS = ("florbetapir", "FPCIT")
TRAIN_SETUPS = ("dixon-nobone", "dixon-bone", "zte")
HELDOUT_SETUPS = ("atlas",)
#: Delay (min) of the PET-MR scan in the later-scan test set (synth kinetic model per tracer)
LATER_SCAN_MIN = 20.0


@dataclass(frozen=True)
class TestSet:
    """One held-out set: its subjects are simulated with ``synth`` (SynthConfig fields)."""

    title: str
    tracers: tuple[str, ...]
    synth: dict = field(default_factory=dict)
    shares_subjects_with: str | None = None  #: scored on the subjects of another set


TEST_SETS = {
    "seen": TestSet("Seen setups and tracers, held-out subjects", TRAIN_TRACERS,
                    {"petmr_setups": TRAIN_SETUPS}),
    "unseen": TestSet("Unseen tracers (florbetapir, FPCIT), seen setups", UNSEEN_TRACERS,
                      {"petmr_setups": TRAIN_SETUPS}, shares_subjects_with="seen"),
    "heldout-setup": TestSet("Held-out PET-MR setup (atlas MR-AC, GE SIGNA MP24), seen tracers",
                             TRAIN_TRACERS, {"petmr_setups": HELDOUT_SETUPS}),
    # same-day protocol: PET-MR 20 min later after injection than PET-CT (training has none)
    "later-scan": TestSet(f"PET-MR scan {LATER_SCAN_MIN:g} min later than PET-CT, seen setups "
                          "and tracers", TRAIN_TRACERS,
                          {"petmr_setups": TRAIN_SETUPS, "petmr_delay_min": LATER_SCAN_MIN}),
}
TRAIN_SYNTH = {"petmr_setups": TRAIN_SETUPS}


@dataclass
class Settings:
    name: str
    train_subjects: int
    test_subjects: dict  #: per test set (sets sharing subjects are not listed)
    calibration_subjects: int  #: held out from training, for the ensemble's calibration
    stage_steps: dict  #: stage -> (epochs, steps per epoch, batch size)
    ensemble_members: int
    test_tracers: tuple[str, ...] | None = None  #: keep only these tracers in the test sets


SETTINGS = {
    "quick": Settings("quick", 3, {"seen": 3, "heldout-setup": 2, "later-scan": 2}, 1,
                      {"stage1": (6, 20, 4), "stage2": (6, 20, 4), "stage3": (8, 25, 4)}, 1,
                      ("PiB", "FDG", "florbetapir", "FPCIT")),
    "default": Settings("default", 12, {"seen": 6, "heldout-setup": 4, "later-scan": 4}, 3,
                        {"stage1": (8, 40, 8), "stage2": (8, 40, 8), "stage3": (10, 40, 8)}, 2),
    # plumbing check only (seconds of training; the numbers mean nothing)
    "smoke": Settings("smoke", 2, {"seen": 1, "heldout-setup": 1, "later-scan": 1}, 1,
                      {"stage1": (1, 2, 2), "stage2": (1, 2, 2), "stage3": (2, 2, 2)}, 2,
                      ("PiB", "florbetapir")),
    # GPU scale (run with --device cuda --jobs 14 on a 16-core GPU machine): 24 training
    # subjects and about 10x the quick run's samples, the scale that measured well on an H100
    # (issue 13); the nets stay the CPU configuration, so the model runs on a CPU afterwards.
    "gpu": Settings("gpu", 24, {"seen": 8, "heldout-setup": 6, "later-scan": 6}, 4,
                    {"stage1": (10, 60, 8), "stage2": (10, 60, 8), "stage3": (12, 80, 8)}, 3,
                    ("PiB", "FDG", "florbetaben", "florbetapir", "FPCIT")),
}


# --------------------------------------------------------------------------- simulation
@dataclass
class Case:
    """One held-out (subject, tracer) with everything the scores need."""

    group: str
    subject: str
    tracer: str
    t1w: np.ndarray
    brain: np.ndarray
    labels: np.ndarray
    pet_mr: np.ndarray
    pet_ct: np.ndarray
    truth: np.ndarray
    petmr_model: str
    ac_setup: str
    mu_map: np.ndarray | None
    ct_hu: np.ndarray | None = None


def _synth_version() -> str:
    """Hash of the simulator's source (and the setup table): a changed simulator never
    reuses old cached subjects."""
    import hashlib

    import bids_harmonize.synth as synth

    digest = hashlib.sha256()
    for path in sorted(Path(synth.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    for name in ("acsetups.py", "data/acsetups.tsv", "data/scanners.tsv"):
        path = Path(synth.__file__).parents[1] / name
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _cache_path(cache_dir, index, tracers, seed, synth_config):
    import hashlib

    key = json.dumps([index, sorted(tracers), seed, repr(synth_config), _synth_version()]).encode()
    return Path(cache_dir) / f"sub-{index:02d}_{hashlib.sha256(key).hexdigest()[:16]}.npz"


def _simulate_into_cache(args):
    """Pool worker: simulate one subject into the cache (one torch thread per process)."""
    import torch

    torch.set_num_threads(1)
    index, tracers, seed, synth_config, cache_dir = args
    simulate([index], tracers, seed, synth_config, cache_dir)
    return index


def simulate_parallel(jobs, cache_dir):
    """Fill the cache for ``jobs`` = [(indices, tracers, seed, synth_config)] with a process pool.

    Forked before any CUDA work; each subject is one task, so a pool of N processes
    simulates N subjects at a time. Subjects already cached are skipped.
    """
    import multiprocessing as mp

    tasks = [(i, tracers, seed, cfg, cache_dir) for indices, tracers, seed, cfg in jobs for i in indices
             if not _cache_path(cache_dir, i, tracers, seed, cfg).exists()]
    if not tasks:
        return
    n = min(len(tasks), max(1, JOBS))
    LOGGER.info("simulating %d subjects in %d processes", len(tasks), n)
    with mp.get_context("fork").Pool(n) as pool:
        for index in pool.imap_unordered(_simulate_into_cache, tasks):
            LOGGER.info("cached subject %d", index)


def simulate(indices, tracers, seed, synth_config, cache_dir=None):
    """Simulated subjects as namespaces (only what the benchmark needs), cached as .npz."""
    from types import SimpleNamespace

    subjects = []
    for i in indices:
        path = _cache_path(cache_dir, i, tracers, seed, synth_config) if cache_dir else None
        if path is not None and path.exists():
            d = np.load(path, allow_pickle=False)
            meta = json.loads(str(d["meta"]))
        else:
            from bids_harmonize.synth import simulate_subject

            t0 = time.perf_counter()
            s = simulate_subject(i, seed=seed, tracers=tracers, config=synth_config)
            LOGGER.info("simulated subject %s %s %s (%.1f s)", s.subject, s.sessions["petmr"].ac_setup,
                        list(tracers), time.perf_counter() - t0)
            meta = {
                "subject": s.subject,
                "tracers": s.tracers,
                "petct_model": s.sessions["petct"].model,
                "petmr_model": s.sessions["petmr"].model,
                "mrac": s.sessions["petmr"].attenuation_correction,
                "ac_setup": s.sessions["petmr"].ac_setup,
            }
            d = {
                "t1w": s.t1w,
                "ct_hu": s.ct_hu,
                "labels": s.labels,
                "brain_mask": s.brain_mask,
                "mu_mr": s.mu_mr,
                "meta": np.array(json.dumps(meta)),
            }
            for t in s.tracers:
                d[f"activity_{t}"] = s.activity[t]
                d[f"pet_ct_{t}"] = s.pet_ct[t]
                d[f"pet_mr_{t}"] = s.pet_mr[t]
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, **d)
        subjects.append(
            SimpleNamespace(
                subject=meta["subject"],
                tracers=meta["tracers"],
                t1w=d["t1w"],
                ct_hu=d["ct_hu"],
                labels=d["labels"],
                brain_mask=d["brain_mask"],
                mu_mr=d["mu_mr"],
                activity={t: d[f"activity_{t}"] for t in meta["tracers"]},
                pet_ct={t: d[f"pet_ct_{t}"] for t in meta["tracers"]},
                pet_mr={t: d[f"pet_mr_{t}"] for t in meta["tracers"]},
                sessions={
                    "petct": SimpleNamespace(model=meta["petct_model"]),
                    "petmr": SimpleNamespace(model=meta["petmr_model"], attenuation_correction=meta["mrac"],
                                             ac_setup=meta["ac_setup"]),
                },
            )
        )
    return subjects


def cases_of(subjects, tracers, group):
    out = []
    for s in subjects:
        for t in tracers:
            petmr = s.sessions["petmr"]
            out.append(Case(group, s.subject, t, s.t1w, s.brain_mask > 0, s.labels, s.pet_mr[t], s.pet_ct[t],
                            s.activity[t], petmr.model, petmr.ac_setup, s.mu_mr, s.ct_hu))
    return out


# --------------------------------------------------------------------------- metrics
def region_stats(img, labels):
    lab = labels.ravel().astype(np.int64)
    counts = np.bincount(lab, minlength=N_LABELS + 1)[1:].astype(float)
    sums = np.bincount(lab, weights=img.ravel().astype(np.float64), minlength=N_LABELS + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts, counts


def composite(means, counts, name):
    from bids_harmonize.atlas import composite_labels

    idx = [i - 1 for i in composite_labels(name)]
    w = counts[idx]
    return float(np.nansum(means[idx] * w) / w.sum())


def centiloid(tracer, means, counts):
    from bids_harmonize.tracers import get_tracer

    info = get_tracer(tracer)
    if info.family != "amyloid" or not info.centiloid:
        return None
    suvr = composite(means, counts, "cortical_composite") / composite(means, counts, "whole_cerebellum")
    return float(info.centiloid_from_suvr(suvr))


def ssim3d(a, b, mask, data_range, sigma=1.5):
    from scipy.ndimage import gaussian_filter

    a = a.astype(np.float64)
    b = b.astype(np.float64)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = gaussian_filter(a, sigma), gaussian_filter(b, sigma)
    saa = gaussian_filter(a * a, sigma) - mu_a**2
    sbb = gaussian_filter(b * b, sigma) - mu_b**2
    sab = gaussian_filter(a * b, sigma) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return float(s[mask].mean())


def image_scores(h, ct, brain):
    diff = (h - ct)[brain].astype(np.float64)
    ref = float(ct[brain].mean())
    rng = float(ct[brain].max())
    mse = float(np.mean(diff**2))
    return {
        "mae_pct": 100.0 * float(np.mean(np.abs(diff))) / ref,
        "psnr": 10.0 * np.log10(rng**2 / mse) if mse > 0 else float("inf"),
        "ssim": ssim3d(h, ct, brain, rng),
    }


def pseudo_ct_scores(pseudo_hu, ct_hu):
    """Pseudo-CT vs CT: MAE (HU) in the head and Dice of bone (> 300 HU)."""
    head = ct_hu > -500
    bone_p, bone_t = pseudo_hu > 300, ct_hu > 300
    dice = 2 * np.sum(bone_p & bone_t) / max(1, np.sum(bone_p) + np.sum(bone_t))
    return {
        "pct_mae_hu": float(np.mean(np.abs(pseudo_hu[head] - ct_hu[head]))),
        "pct_bone_dice": float(dice),
    }


def regional_scores(means_h, case, ct_stats, truth_stats):
    (m_ct, counts), (m_true, _) = ct_stats, truth_stats
    ok = counts > 0
    bias = 100.0 * (means_h[ok] / m_ct[ok] - 1.0)
    bias_true = 100.0 * (means_h[ok] / m_true[ok] - 1.0)
    out = {
        "bias_mean": float(np.mean(np.abs(bias))),
        "bias_max": float(np.max(np.abs(bias))),
        "bias_true": float(np.mean(np.abs(bias_true))),
    }
    cl_h = centiloid(case.tracer, means_h, counts)
    if cl_h is not None:
        cl_ct = centiloid(case.tracer, m_ct, counts)
        out["cl_diff"] = cl_h - cl_ct
        out["cl_change"] = float((cl_h >= CL_CUTOFF) != (cl_ct >= CL_CUTOFF))
    return out


# --------------------------------------------------------------------------- baselines
def fit_linear(pairs):
    """Per-tracer least squares PET-CT = a * PET-MR + b in brain-mean units (+ pooled)."""
    from bids_harmonize.harmonizer.intensity import brain_mean

    xs, ys = {}, {}
    for p in pairs:
        brain = p.brain_mask > 0
        scale = brain_mean(p.pet_mr, brain)
        xs.setdefault(p.tracer, []).append(p.pet_mr[brain] / scale)
        ys.setdefault(p.tracer, []).append(p.pet_ct[brain] / scale)
    fits = {}
    for t in [*xs, None]:
        x = np.concatenate(xs[t] if t else [v for vs in xs.values() for v in vs])
        y = np.concatenate(ys[t] if t else [v for vs in ys.values() for v in vs])
        a, b = np.polyfit(x.astype(np.float64), y.astype(np.float64), 1)
        fits[t] = (float(a), float(b))
    return fits


def apply_linear(fits, case):
    from bids_harmonize.harmonizer.intensity import brain_mean

    a, b = fits.get(case.tracer, fits[None])
    scale = brain_mean(case.pet_mr, case.brain)
    return (a * case.pet_mr / scale + b) * scale * (case.pet_mr > 0)


class ComBat:
    """neuroHarmonize ComBat on log regional means, batch = platform, reference PET-CT.

    Seen tracers: one model per tracer on log regional means. Unseen tracers: one model
    pooled over the training tracers on log regional means minus the image's log brain
    mean, plus the mean training log ratio of brain means (PET-CT / PET-MR).
    """

    def __init__(self, pairs):
        import pandas as pd
        from neuroHarmonize import harmonizationLearn

        self.models = {}
        rows = {}
        for p in pairs:
            m_ct, _ = region_stats(p.pet_ct, p.labels)
            m_mr, _ = region_stats(p.pet_mr, p.labels)
            rows.setdefault(p.tracer, []).append((np.log(m_ct), np.log(m_mr), p))
        pooled_x, pooled_site, offsets = [], [], []
        for tracer, items in rows.items():
            data = np.array([v for ct, mr, _ in items for v in (ct, mr)])
            site = ["PET-CT", "PET-MR"] * len(items)
            covars = pd.DataFrame({"SITE": site})
            self.models[tracer], _ = harmonizationLearn(data, covars, ref_batch="PET-CT")
            for ct, mr, p in items:
                wb_ct = np.log(p.pet_ct[p.brain_mask > 0].mean())
                wb_mr = np.log(p.pet_mr[p.brain_mask > 0].mean())
                pooled_x += [ct - wb_ct, mr - wb_mr]
                pooled_site += site[:2]
                offsets.append(wb_ct - wb_mr)
        self.pooled, _ = harmonizationLearn(
            np.array(pooled_x), pd.DataFrame({"SITE": pooled_site}), ref_batch="PET-CT"
        )
        self.offset = float(np.mean(offsets))

    def apply(self, case):
        import pandas as pd
        from neuroHarmonize import harmonizationApply

        m_mr, _ = region_stats(case.pet_mr, case.labels)
        # neuroHarmonize needs every site in the data it adjusts: a dummy PET-CT row rides
        # along (rows are adjusted independently) and is dropped
        covars = pd.DataFrame({"SITE": ["PET-MR", "PET-CT"]})
        if case.tracer in self.models:
            x = np.log(m_mr)
            out = harmonizationApply(np.stack([x, x]), covars, self.models[case.tracer])
            return np.exp(out[0])
        wb = np.log(case.pet_mr[case.brain].mean())
        x = np.log(m_mr) - wb
        out = harmonizationApply(np.stack([x, x]), covars, self.pooled)
        return np.exp(out[0] + wb + self.offset)


# --------------------------------------------------------------------------- speed
SPEED_SNIPPET = r"""
import json, sys, time
import numpy as np, torch
def peak_mb():  # VmHWM: this process's own peak RSS (ru_maxrss keeps the parent's after fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
torch.set_num_threads(int(sys.argv[3]))
from bids_harmonize.harmonizer.infer import harmonize_volume
from bids_harmonize.harmonizer.weights import load_model
d = np.load(sys.argv[2])
t0 = time.perf_counter()
model = load_model(sys.argv[1])
t1 = time.perf_counter()
res = harmonize_volume(d["pet"], d["t1w"], d["mask"], model, device="cpu", mu_map=d["mu_map"],
                       ac_setup=str(d["ac_setup"]))
t2 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "infer_s": t2 - t1,
                  "peak_rss_mb": peak_mb(),
                  "shape": list(d["pet"].shape)}))
"""


def measure_inference(model_dir, case, threads, tmp):
    try:
        return _measure_inference(model_dir, case, threads, tmp)
    except (subprocess.CalledProcessError, ValueError) as err:
        LOGGER.error("speed measurement failed: %s", getattr(err, "stderr", err))
        return {"error": str(err)[:200]}


def _measure_inference(model_dir, case, threads, tmp):
    path = Path(tmp) / "case.npz"
    np.savez(path, pet=case.pet_mr, t1w=case.t1w, mask=case.brain, mu_map=case.mu_map,
             ac_setup=np.array(case.ac_setup))
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", SPEED_SNIPPET, str(model_dir), str(path), str(threads)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def tiny_training_times(threads):
    """Per-stage training seconds of the test-suite configuration on phantoms."""
    import torch

    from bids_harmonize.harmonizer.config import HarmonizerConfig
    from bids_harmonize.harmonizer.phantom import phantom_pair
    from bids_harmonize.harmonizer.train import train_model

    torch.set_num_threads(threads)
    cfg = HarmonizerConfig.tiny()  # the test suite's configuration
    pairs = [phantom_pair(i, shape=(24, 28, 24)) for i in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        out = train_model(pairs, Path(tmp) / "m", cfg, device="cpu", progress=False)
        card = json.loads((out / "model.json").read_text())
    return {s: card["training"][s]["seconds"] for s in ("stage1", "stage2", "stage3")}


# --------------------------------------------------------------------------- models
def config_for(settings, *, use_anatomy=True, physics=True, prefer="setup"):
    from bids_harmonize.harmonizer.config import HarmonizerConfig

    changes = {
        name: {"epochs": e, "steps_per_epoch": s, "batch_size": b}
        for name, (e, s, b) in settings.stage_steps.items()
    }
    inputs = ("pet", "t1w", "ac_error") if physics else ("pet", "t1w")
    return HarmonizerConfig().replace(correction={"use_anatomy": use_anatomy, "inputs": inputs},
                                      physics={"prefer": prefer}, **changes)


METHODS = ("none", "linear", "combat", "unet", "v1", "v2m", "v2")
LABELS = {
    "none": "No correction (PET-MR)",
    "linear": "Global linear cross-calibration per tracer",
    "combat": "ComBat on regional values (neuroHarmonize)",
    "unet": "U-Net, no anatomy, no physics (ablation)",
    "v1": "Three-stage v1 (no physics channel)",
    "v2m": "Three-stage v2, physics map against the scanner's own mu-map (prefer=scanner)",
    "v2": "**Three-stage v2 (physics channel, map from the setup's model of the pseudo-CT)**",
    "petct": "PET-CT itself (reference, vs truth)",
}


def assessment_available(model) -> bool:
    """Whether the ensemble/OOD side (HARM-B's modules) is there and the model has members."""
    try:
        from bids_harmonize.harmonizer import uncertainty
    except ImportError:
        return False
    return hasattr(uncertainty, "harmonize_with_assessment") and bool(model.card.get("uncertainty"))


def run_v2(case, model, with_assessment):
    """v2's harmonized image, plus coverage counts and the OOD result when available."""
    from bids_harmonize.harmonizer.infer import harmonize_volume

    if not with_assessment:
        res = harmonize_volume(case.pet_mr, case.t1w, case.brain, model, tracer=case.tracer, device="cpu",
                               mu_map=case.mu_map, ac_setup=case.ac_setup)
        return res, {}
    from bids_harmonize.harmonizer import uncertainty as U
    from bids_harmonize.tracers import UnknownTracerError, get_tracer

    try:
        family = get_tracer(case.tracer).family
    except UnknownTracerError:
        family = None
    res, _, members, ood = U.harmonize_with_assessment(
        case.pet_mr, case.t1w, case.brain, model, tracer=case.tracer, tracer_family=family,
        scanner=case.petmr_model, mu_map=case.mu_map, ac_setup=case.ac_setup, policy="warn", device="cpu")
    extra = {"ood_score": float(ood.score), "ood_flag": float(ood.is_ood)}
    if len(members) > 1:
        err, sd, _ = U.regional_errors_and_sds(members, case.pet_ct, case.labels, case.brain)
        scale = float(U.card_uncertainty(model.card).get("scale", 1.0))
        z = U.z_value(0.9)
        inside = np.abs(err) <= z * scale * sd
        extra.update({"cov_in": float(inside.sum()), "cov_n": float(inside.size),
                      # per-region log errors and ensemble SDs: other calibrations can be
                      # checked on these rows without rerunning (--report-from)
                      "reg_err": [round(float(v), 5) for v in np.ravel(err)],
                      "reg_sd": [round(float(v), 5) for v in np.ravel(sd)], "cal_scale": scale})
    return res, extra


def evaluate(cases, models, fits, combat):
    from bids_harmonize.harmonizer.infer import harmonize_volume

    with_assessment = assessment_available(models["v2"])
    rows = []
    for case in cases:
        t0 = time.perf_counter()
        ct_stats = region_stats(case.pet_ct, case.labels)
        truth_stats = region_stats(case.truth, case.labels)
        v2, extra = run_v2(case, models["v2"], with_assessment)
        images = {"none": case.pet_mr, "linear": apply_linear(fits, case), "v2": v2.harmonized}
        for name in ("unet", "v1", "v2m"):
            if name not in models:
                continue
            images[name] = harmonize_volume(case.pet_mr, case.t1w, case.brain, models[name], device="cpu",
                                            mu_map=case.mu_map, ac_setup=case.ac_setup).harmonized
        for method in METHODS:
            img = images.get(method)
            if method == "v2m" and img is None:
                continue
            if img is None:
                means = combat.apply(case)
                scores = {}
            else:
                means, _ = region_stats(img, case.labels)
                scores = image_scores(img, case.pet_ct, case.brain)
            scores.update(regional_scores(means, case, ct_stats, truth_stats))
            if method == "v2":
                scores.update(extra)
                if case.ct_hu is not None:
                    scores.update(pseudo_ct_scores(v2.pseudo_ct_hu, case.ct_hu))
            rows.append({"group": case.group, "subject": case.subject, "tracer": case.tracer,
                         "setup": case.ac_setup, "method": method, **scores})
        truth_row = regional_scores(ct_stats[0], case, ct_stats, truth_stats)
        rows.append({"group": case.group, "subject": case.subject, "tracer": case.tracer,
                     "setup": case.ac_setup, "method": "petct", "bias_true": truth_row["bias_true"]})
        LOGGER.info("scored %s sub-%s %s %s (%.1f s)", case.group, case.subject, case.tracer, case.ac_setup,
                    time.perf_counter() - t0)
    return rows


_WORKER = {}


def _init_scorer(model_dirs, fits, combat, threads):
    import torch

    from bids_harmonize.harmonizer.weights import load_model

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")  # spawned: fresh
    _WORKER.update(models={k: load_model(v) for k, v in model_dirs.items()}, fits=fits, combat=combat)


def _score_one(case):
    return evaluate([case], _WORKER["models"], _WORKER["fits"], _WORKER["combat"])


def evaluate_parallel(cases, model_dirs, fits, combat, jobs, threads=1):
    """:func:`evaluate` over ``jobs`` spawned processes (CPU inference, ``threads`` each);
    rows in the order of ``cases``."""
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(jobs, initializer=_init_scorer,
                                      initargs=(model_dirs, fits, combat, threads)) as pool:
        parts = pool.map(_score_one, cases, chunksize=1)
    return [row for part in parts for row in part]


# --------------------------------------------------------------------------- statistics
def bootstrap_ci(per_subject: dict, rng, n=BOOTSTRAP, stat=np.mean):
    """Mean over subjects of per-subject values and its 95 % percentile bootstrap interval.

    >>> rng = np.random.default_rng(0)
    >>> m, lo, hi = bootstrap_ci({"a": 1.0, "b": 2.0, "c": 3.0}, rng)
    >>> m, lo <= m <= hi
    (2.0, True)
    """
    values = np.array(list(per_subject.values()), dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None, None, None
    if len(values) == 1:
        return float(values[0]), None, None
    draws = rng.integers(0, len(values), size=(n, len(values)))
    boots = stat(values[draws], axis=1)
    return float(stat(values)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def paired_difference_ci(a: dict, b: dict, rng, n=BOOTSTRAP):
    """Mean over shared subjects of ``a - b`` and its 95 % bootstrap interval."""
    keys = sorted(set(a) & set(b))
    return bootstrap_ci({k: a[k] - b[k] for k in keys}, rng, n)


def per_subject(df, column, how="mean", where=None):
    d = df if where is None else df[where]
    d = d[["subject", column]].dropna()
    if d.empty:
        return {}
    g = d.groupby("subject")[column]
    return (g.mean() if how == "mean" else g.max()).to_dict()


def summarise(rows, seed=0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rows)
    out, subjects = {}, {}
    none_cl = {}
    for group, d in df[df.method == "none"].groupby("group"):
        if "cl_diff" in d:
            none_cl[group] = d.assign(key=d.subject + "/" + d.tracer).set_index("key")["cl_diff"].abs()
    for (group, method), d in df.groupby(["group", "method"], sort=False):
        entry = {"n_cases": int(len(d)), "n_subjects": int(d.subject.nunique())}
        for col in ("bias_mean", "bias_max", "bias_true", "mae_pct", "psnr", "ssim"):
            if col in d and d[col].notna().any():
                subj = per_subject(d, col)
                subjects.setdefault(group, {}).setdefault(method, {})[col] = subj
                entry[col] = bootstrap_ci(subj, rng)
        if "cl_diff" in d and d["cl_diff"].notna().any():
            cl = d.assign(abs_cl=d["cl_diff"].abs())
            entry["cl_abs"] = bootstrap_ci(per_subject(cl, "abs_cl"), rng)
            entry["cl_signed"] = float(cl["cl_diff"].mean())
            entry["cl_changes"] = int(cl["cl_change"].sum())
            entry["n_amyloid"] = int(cl["cl_diff"].notna().sum())
            key = cl.subject + "/" + cl.tracer
            big = none_cl.get(group)
            if big is not None:
                large = key.map(big).fillna(0) >= 12.0
                if large.any():
                    entry["cl_abs_large"] = bootstrap_ci(per_subject(cl[large.values], "abs_cl"), rng)
                    entry["n_large"] = int(large.sum())
        for col in ("pct_mae_hu", "pct_bone_dice"):
            if col in d and d[col].notna().any():
                entry[col] = float(d[col].mean())
        if "ood_flag" in d and d["ood_flag"].notna().any():
            entry["ood_rate"] = float(d["ood_flag"].mean())
            entry["ood_score"] = float(d["ood_score"].mean())
        if "cov_n" in d and d["cov_n"].notna().any():
            entry["coverage"] = float(d["cov_in"].sum() / d["cov_n"].sum())
            entry["coverage_n"] = int(d["cov_n"].sum())
        out.setdefault(group, {})[method] = entry
    # paired differences of v2 against every other method (mean abs regional bias)
    for group, methods in subjects.items():
        v2 = methods.get("v2", {}).get("bias_mean")
        if not v2:
            continue
        for method, cols in methods.items():
            if method != "v2" and "bias_mean" in cols:
                out[group][method]["v2_minus"] = paired_difference_ci(v2, cols["bias_mean"], rng)
    return out


# --------------------------------------------------------------------------- report
def fmt(v, digits=2):
    return "—" if v is None else f"{v:.{digits}f}"


def fmt_ci(t, digits=2):
    if not t or t[0] is None:
        return "—"
    m, lo, hi = t
    if lo is None:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def targets_of(summary, settings_has_ensemble):
    def get(group, method, key):
        return summary.get(group, {}).get(method, {}).get(key)

    out = []
    for group, limit in (("seen", 2.0), ("unseen", 3.0), ("heldout-setup", 3.0)):
        t = get(group, "v2", "bias_mean")
        if t and t[0] is not None:
            text = f"v2 mean abs regional bias, {group}: {fmt_ci(t)} % (target < {limit} %)"
            out.append((text, t[0] < limit))
    t = get("heldout-setup", "none", "v2_minus")
    if t and t[2] is not None:
        out.append((f"held-out setup: v2 never worse than no correction (v2 - none = {fmt_ci(t)} "
                    "percentage points; upper bound <= 0)", t[2] <= 0.0))
    for group in summary:
        t = get(group, "v2", "cl_abs_large")
        if t and t[0] is not None:
            n = get(group, "v2", "n_large")
            out.append((f"v2 mean abs ΔCL where uncorrected |ΔCL| >= 12, {group} ({n} cases): {fmt_ci(t)} "
                        "(target < 3)", t[0] < 3.0))
    for group in summary:
        mine = get(group, "v2", "bias_mean")
        if not mine or mine[0] is None:
            continue
        worst = []
        for m in ("none", "linear", "combat", "unet", "v1"):
            other = get(group, m, "bias_mean")
            if other and other[0] is not None:
                separated = mine[2] is not None and other[1] is not None and mine[2] < other[1]
                worst.append((m, other, separated))
        ok = all(sep for _, _, sep in worst)
        text = ", ".join(f"{m} {fmt_ci(o)}{'' if sep else ' (overlaps)'}" for m, o, sep in worst)
        out.append((f"v2 better than every baseline with non-overlapping 95 % CIs, {group}: "
                    f"v2 {fmt_ci(mine)} vs {text}", ok))
    hit = get("heldout-setup", "v2", "ood_rate")
    fa = [get(g, "v2", "ood_rate") for g in ("seen",) if get(g, "v2", "ood_rate") is not None]
    if hit is not None:
        out.append((f"OOD flag on the held-out (unknown) setup: {100 * hit:.0f} % (target >= 90 %)",
                    hit >= 0.9))
    if fa:
        out.append((f"OOD flag on in-distribution cases (seen set): {100 * fa[0]:.0f} % (target <= 10 %)",
                    fa[0] <= 0.1))
    for group in summary:
        cov = get(group, "v2", "coverage")
        if cov is not None:
            n_cov = get(group, "v2", "coverage_n")
            out.append((f"coverage of the 90 % intervals, {group}: {100 * cov:.0f} % of {n_cov} "
                        "regional errors (target 85-95 %)", 0.85 <= cov <= 0.95))
    if not settings_has_ensemble:
        out.append(("uncertainty coverage and OOD rates: not measured (no ensemble in this run)", False))
    return out


def markdown(summary, meta):
    lines = [
        "# Accuracy benchmark: PET-MR → PET-CT harmonization (simulator v2)",
        "",
        f"Generated {meta['date']} by `{meta['command']}` ({meta['settings']} settings) on "
        f"{meta['machine']}, {meta['threads']} torch thread(s); nets trained on "
        f"{meta.get('train_device', 'CPU')}, scored on the CPU. All data simulated with "
        "`bids_harmonize.synth` (v2: PET-MR attenuation-correction setups with the scanner's own "
        "mu-map); nothing here is a claim about real scanners.",
        "",
        f"Training: {meta['train_subjects']} subjects, setups {', '.join(TRAIN_SETUPS)} in turn, tracers "
        f"{', '.join(TRAIN_TRACERS)}. Test sets: {meta['test_subjects']}. Calibration of the ensemble: "
        f"{meta['calibration_subjects']} further held-out subjects of the training setups.",
        "",
        "Every figure is the mean over subjects (per subject: mean over its cases) with its 95 % "
        f"bootstrap interval over subjects ({BOOTSTRAP} resamples) in brackets. Columns: mean abs "
        "regional bias = mean over the 24 synth regions of |method / PET-CT - 1| (%); worst region = "
        "the largest of those per case; bias vs truth = the same against the simulator's true "
        "activity; MAE in % of the PET-CT brain mean; ΔCL = Centiloid on the method minus on PET-CT "
        f"(amyloid tracers), mean |ΔCL| and signed mean; class changes = cases whose class at "
        f"{CL_CUTOFF} CL differs from PET-CT's. ComBat corrects regional values only (no voxel "
        "figures). v2 - method: paired bootstrap interval of the difference in mean abs regional "
        "bias (negative: v2 better).",
        "",
    ]
    for group, ts in TEST_SETS.items():
        if group not in summary:
            continue
        lines += [
            f"## {ts.title}",
            "",
            "| Method | subjects / cases | mean abs regional bias % | worst region % | bias vs truth % "
            "| MAE % | SSIM | mean abs ΔCL (signed) | class changes | v2 - method |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for method in (*METHODS, "petct"):
            s = summary[group].get(method)
            if not s:
                continue
            cl = "—"
            if s.get("cl_abs"):
                cl = f"{fmt_ci(s['cl_abs'], 1)} ({s['cl_signed']:+.1f})"
            changes = f"{s['cl_changes']}/{s['n_amyloid']}" if "cl_changes" in s else "—"
            lines.append(
                f"| {LABELS[method]} | {s['n_subjects']} / {s['n_cases']} | {fmt_ci(s.get('bias_mean'))} "
                f"| {fmt_ci(s.get('bias_max'), 1)} | {fmt_ci(s.get('bias_true'))} "
                f"| {fmt_ci(s.get('mae_pct'))} | {fmt_ci(s.get('ssim'), 3)} | {cl} | {changes} "
                f"| {fmt_ci(s.get('v2_minus'))} |"
            )
        lines.append("")
        v2 = summary[group].get("v2", {})
        extra = []
        if v2.get("cl_abs_large"):
            nl = summary[group].get("none", {}).get("cl_abs_large")
            extra.append(f"cases with uncorrected |ΔCL| >= 12 ({v2['n_large']}): mean |ΔCL| none "
                         f"{fmt_ci(nl, 1)}, v2 {fmt_ci(v2['cl_abs_large'], 1)}")
        if v2.get("pct_mae_hu") is not None:
            extra.append(f"pseudo-CT MAE {v2['pct_mae_hu']:.0f} HU in the head, "
                         f"bone Dice {v2['pct_bone_dice']:.2f}")
        if v2.get("coverage") is not None:
            extra.append(f"90 % interval coverage {100 * v2['coverage']:.0f} % "
                         f"({v2['coverage_n']} regional errors)")
        if v2.get("ood_rate") is not None:
            extra.append(f"OOD flag rate {100 * v2['ood_rate']:.0f} % (mean score {v2['ood_score']:.2f})")
        if extra:
            lines += ["v2: " + "; ".join(extra) + ".", ""]
    lines += ["## Targets (issue 13)", ""]
    for text, ok in meta["targets"]:
        lines.append(f"- {'met' if ok else '**not met**'}: {text}")
    lines += ["", "## Speed and memory", ""]
    for n_threads, sp in zip((1, 2), meta["speed"], strict=True):
        if "error" in sp:
            lines.append(f"- Inference speed, {n_threads} thread(s): failed ({sp['error']})")
            continue
        lines.append(
            f"- v2 inference, one subject at 2 mm (grid {sp['shape']}), CPU, {n_threads} torch "
            f"thread(s), fresh process: {sp['infer_s']:.1f} s (+ {sp['load_s']:.2f} s model "
            f"load), peak resident memory {sp['peak_rss_mb']:.0f} MB (whole process)."
        )
    lines += [
        "- Training, seconds per stage: v2 "
        + ", ".join(f"{k} {v:.0f}" for k, v in meta["train_seconds"].items())
        + f"; v1 stage 3 {meta['v1_seconds']:.0f} (stages 1-2 shared with v2); U-Net stage 3 "
        f"{meta['unet_seconds']:.0f}; ensemble and calibration {meta['ensemble_s']:.0f}.",
        f"- Simulation {meta['simulate_s']:.0f} s (cached subjects are not re-simulated); evaluation "
        f"{meta['evaluate_s']:.0f} s; whole benchmark {meta['total_s']:.0f} s. Load average at the "
        f"start {meta['load_start']}, at the end {meta['load_end']} (shared machine: wall times inflated).",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(meta["config"], indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (same as --settings quick)")
    parser.add_argument("--settings", choices=sorted(SETTINGS), default=None,
                        help="scale of the run: quick (CPU, minutes), default, gpu (24 training "
                        "subjects, about 10x the samples; use with --device cuda)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                        help="where the nets train and the ensemble is fitted (scoring runs on the "
                        "CPU, --jobs processes)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes for simulating subjects and scoring cases (1: in this process)")
    parser.add_argument("--scanner-variant", action="store_true",
                        help="also train and score v2m: v2 with the physics map against the "
                        "scanner's own mu-map instead of the setup's model of the pseudo-CT "
                        "(PhysicsConfig.prefer='scanner')")
    parser.add_argument("--save-models", type=Path, default=None,
                        help="copy the trained model folders (v2, v1, unet, v2m) here")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown table to write (default: RESULTS.md; RESULTS-quick.md with --quick)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a loaded 2-core machine)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bids_harmonize-benchmark",
        help="where simulated subjects are cached (.npz); 'none' disables the cache",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ensemble-members", type=int, default=None,
                        help="ensemble members of v2 for uncertainty/OOD (default: per settings; 0: none)")
    parser.add_argument("--train-subjects", type=int, default=None, help="override the settings")
    parser.add_argument("--test-subjects", type=int, default=None, help="override: subjects per test set")
    parser.add_argument("--report-from", type=Path, default=None,
                        help="rebuild the report from the rows of an earlier run's JSON (no simulation, "
                        "no training)")
    args = parser.parse_args(argv)
    if args.settings is None:
        args.settings = "quick" if args.quick else "default"
    args.quick = args.settings == "quick"
    if args.out is None:
        args.out = HERE / {"quick": "RESULTS-quick.md", "default": "RESULTS.md"}.get(
            args.settings, f"RESULTS-{args.settings}.md")
    global JOBS
    JOBS = max(1, int(args.jobs))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.report_from is not None:
        return report(json.loads(args.report_from.read_text()), args)
    import torch

    from bids_harmonize.harmonizer.dataset import pairs_from_simulation
    from bids_harmonize.harmonizer.train import train_model
    from bids_harmonize.harmonizer.weights import load_model
    from bids_harmonize.synth import SynthConfig

    torch.set_num_threads(args.threads)
    settings = SETTINGS[args.settings]
    if args.train_subjects:
        settings.train_subjects = args.train_subjects
    if args.test_subjects:
        settings.test_subjects = {k: args.test_subjects for k in settings.test_subjects}
    members = settings.ensemble_members if args.ensemble_members is None else args.ensemble_members
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()
    cache = None if str(args.cache_dir).lower() == "none" else args.cache_dir
    next_index = 1

    def indices(n):
        nonlocal next_index
        out = range(next_index, next_index + n)
        next_index += n
        return out

    def kept(tracers):
        return tuple(t for t in tracers if settings.test_tracers is None or t in settings.test_tracers)

    # one plan of who is simulated with what: (indices, tracers, synth config) per set; the
    # calibration subjects keep their indices even without an ensemble, so test subjects do too
    plan = {"train": (indices(settings.train_subjects), TRAIN_TRACERS, SynthConfig(**TRAIN_SYNTH))}
    calib_idx = indices(settings.calibration_subjects)
    plan["calibration"] = (calib_idx if members else range(0), TRAIN_TRACERS, SynthConfig(**TRAIN_SYNTH))
    for group, ts in TEST_SETS.items():
        if not ts.shares_subjects_with:
            tracers = kept(tuple(dict.fromkeys(ts.tracers + tuple(
                tr for t in TEST_SETS.values() if t.shares_subjects_with == group for tr in t.tracers))))
            plan[group] = (indices(settings.test_subjects[group]), tracers, SynthConfig(**ts.synth))
    if JOBS > 1 and cache is not None:  # fill the cache in parallel, then load it below
        simulate_parallel([(idx, tracers, args.seed, cfg) for idx, tracers, cfg in plan.values()], cache)
    simulated = {name: simulate(idx, tracers, args.seed, cfg, cache)
                 for name, (idx, tracers, cfg) in plan.items()}
    train_idx = plan["train"][0]
    train, calib = simulated["train"], simulated["calibration"]
    test_subjects = {group: simulated[group] for group in plan if group in TEST_SETS}
    described = [f"{group} {len(idx)} subjects ({idx.start}-{idx.stop - 1})"
                 for group, (idx, _, _) in plan.items() if group in TEST_SETS]
    cases = []
    for group, ts in TEST_SETS.items():
        subjects = test_subjects[ts.shares_subjects_with or group]
        cases += cases_of(subjects, kept(ts.tracers), group)
    simulate_s = time.perf_counter() - t_start
    pairs = [p for s in train for p in pairs_from_simulation(s)]
    calib_pairs = [p for s in calib for p in pairs_from_simulation(s)]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = tmp / "checkpoints"
        kw = {"device": args.device, "progress": False, "checkpoint_dir": ckpt}
        v2_dir = train_model(pairs, tmp / "v2", config_for(settings), **kw)
        v1_dir = train_model(pairs, tmp / "v1", config_for(settings, physics=False), **kw)
        unet_dir = train_model(pairs, tmp / "unet", config_for(settings, use_anatomy=False, physics=False),
                               device=args.device, progress=False)
        dirs = {"v2": v2_dir, "v1": v1_dir, "unet": unet_dir}
        if args.scanner_variant:
            dirs["v2m"] = train_model(pairs, tmp / "v2m", config_for(settings, prefer="scanner"), **kw)
        t_ens = time.perf_counter()
        if members:
            from bids_harmonize.harmonizer.uncertainty import fit_uncertainty

            fit_uncertainty(v2_dir, pairs, validation_pairs=calib_pairs, n_members=members,
                            device=args.device)
        ensemble_s = time.perf_counter() - t_ens
        if args.save_models is not None:
            import shutil

            for name, d in dirs.items():
                shutil.copytree(d, args.save_models / name, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("checkpoints"))
        models = {name: load_model(d) for name, d in dirs.items()}
        fits = fit_linear(pairs)
        combat = ComBat(pairs)
        t_eval = time.perf_counter()
        if JOBS > 1:
            rows = evaluate_parallel(cases, dirs, fits, combat, min(JOBS, len(cases)), threads=1)
        else:
            rows = evaluate(cases, models, fits, combat)
        evaluate_s = time.perf_counter() - t_eval
        args.out.with_suffix(".rows.json").write_text(json.dumps(rows, default=str))  # before the report
        speed = [measure_inference(v2_dir, cases[0], n, tmp) for n in (1, 2)]
        card = models["v2"].card
        train_seconds = {s: card["training"][s]["seconds"] for s in ("stage1", "stage2", "stage3")}
        v1_seconds = models["v1"].card["training"]["stage3"]["seconds"]
        unet_seconds = models["unet"].card["training"]["stage3"]["seconds"]
    command = "python benchmarks/accuracy/run.py" + (" --quick" if args.quick else "")
    if args.settings not in ("quick", "default"):
        command += f" --settings {args.settings}"
    overrides = (("--ensemble-members", args.ensemble_members), ("--train-subjects", args.train_subjects),
                 ("--test-subjects", args.test_subjects),
                 ("--device", None if args.device == "cpu" else args.device),
                 ("--jobs", None if JOBS == 1 else JOBS),
                 ("--scanner-variant", "" if args.scanner_variant else None))
    for flag, value in overrides:
        if value is not None:
            command += f" {flag} {value}".rstrip()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command,
        "settings": settings.name,
        "machine": f"{platform.machine()} CPU ({os.cpu_count()} cores visible)",
        "train_device": _device_text(args.device),
        "threads": args.threads,
        "train_subjects": f"{len(train)} ({train_idx.start}-{train_idx.stop - 1})",
        "calibration_subjects": len(calib),
        "test_subjects": "; ".join(described),
        "speed": speed,
        "train_seconds": train_seconds,
        "v1_seconds": v1_seconds,
        "unet_seconds": unet_seconds,
        "ensemble_s": ensemble_s,
        "simulate_s": simulate_s,
        "evaluate_s": evaluate_s,
        "total_s": time.perf_counter() - t_start,
        "load_start": round(load_start, 1),
        "load_end": round(os.getloadavg()[0], 1),
        "ensemble_members": members,
        "config": config_for(settings).to_dict(),
    }
    data = {"meta": meta, "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1, default=str))  # --report-from
    args.out.with_suffix(".rows.json").unlink(missing_ok=True)
    return report(data, args)


def _device_text(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    return "CPU"


def report(data, args):
    """Summarise rows, check the targets and write the Markdown and JSON results."""
    rows, meta = data["rows"], data["meta"]
    summary = summarise(rows, args.seed)
    meta["targets"] = targets_of(summary, meta.get("ensemble_members", 0) > 0)
    text = markdown(summary, meta)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps({"summary": summary, "meta": meta, "rows": rows}, indent=1, default=str)
    )
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
