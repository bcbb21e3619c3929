"""Accuracy benchmark of the three-stage harmonizer against baselines, on simulated subjects.

    pip install -e ".[benchmarks]"                 # the ComBat baseline (neuroHarmonize)
    python benchmarks/accuracy/run.py --quick      # a few minutes on 2 CPU cores
    python benchmarks/accuracy/run.py              # larger default

Simulates training subjects (tracers without florbetapir and FPCIT) and held-out test
subjects with ``bids_harmonize.synth``, trains the three-stage harmonizer and an
image-to-image ablation (the same stage-3 net without the anatomy stages), fits a global
linear cross-calibration per tracer and ComBat (neuroHarmonize, reference batch PET-CT) on
regional values, and scores every method on the held-out subjects against the PET-CT image
and the simulator's true activity, side by side:

- voxel-wise MAE (% of the PET-CT brain mean), PSNR and SSIM against PET-CT inside the brain;
- regional percent bias against PET-CT over the 24 synth-atlas regions (mean and max of
  absolute values), and the mean absolute regional bias against the true activity;
- Centiloid difference (method on PET-MR minus PET-CT) for amyloid tracers, with the
  tracers' equations (``bids_harmonize.tracers``), cortical_composite / whole_cerebellum
  (``bids_harmonize.atlas``), and classification agreement at 24.1 CL;

for three test sets: seen tracers; unseen tracers (florbetapir, FPCIT); seen tracers on a
held-out PET-MR attenuation-correction setup (``atlas``: GE SIGNA PET/MR head atlas; training
and seen test sets use ``dixon-nobone``, ``dixon-bone`` and ``zte``).

Writes ``RESULTS.md`` (and ``results.json``) next to this file, or where ``--out`` says.
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

TRAIN_TRACERS = ("PiB", "FDG", "flortaucipir", "florbetaben")
UNSEEN_TRACERS = ("florbetapir", "FPCIT")
#: PET-MR attenuation-correction setups (``bids_harmonize/data/acsetups.tsv``) of the training
#: and seen-setup test subjects, and the setup held out of training ("variant" test set).
TRAIN_SETUPS = ("dixon-nobone", "dixon-bone", "zte")
HELDOUT_SETUPS = ("atlas",)
N_LABELS = 24
CL_CUTOFF = 24.1


@dataclass
class Settings:
    name: str
    train_subjects: int
    test_subjects: int
    variant_subjects: int
    train_tracers: tuple[str, ...]
    stage_steps: dict = field(default_factory=dict)


SETTINGS = {
    "quick": Settings(
        "quick",
        4,
        2,
        1,
        ("PiB", "FDG", "flortaucipir"),
        {"stage1": (4, 20, 4), "stage2": (4, 20, 4), "stage3": (6, 20, 2)},
    ),
    "default": Settings(
        "default",
        8,
        4,
        2,
        TRAIN_TRACERS,
        {"stage1": (8, 30, 4), "stage2": (8, 30, 4), "stage3": (12, 30, 2)},
    ),
}


# --------------------------------------------------------------------------- data
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
    ct_hu: np.ndarray | None = None


def _synth_version() -> str:
    """Hash of the simulator's source: a changed simulator never reuses old cached subjects."""
    import hashlib

    import bids_harmonize.synth as synth

    digest = hashlib.sha256()
    for path in sorted(Path(synth.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _cache_path(cache_dir, index, tracers, seed, synth_config):
    import hashlib

    key = json.dumps([index, sorted(tracers), seed, repr(synth_config), _synth_version()]).encode()
    return Path(cache_dir) / f"sub-{index:02d}_{hashlib.sha256(key).hexdigest()[:16]}.npz"


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
            LOGGER.info(
                "simulated subject %s %s (%.1f s)", s.subject, list(tracers), time.perf_counter() - t0
            )
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
                activity={t: d[f"activity_{t}"] for t in meta["tracers"]},
                pet_ct={t: d[f"pet_ct_{t}"] for t in meta["tracers"]},
                pet_mr={t: d[f"pet_mr_{t}"] for t in meta["tracers"]},
                sessions={
                    "petct": SimpleNamespace(model=meta["petct_model"]),
                    "petmr": SimpleNamespace(
                        model=meta["petmr_model"],
                        attenuation_correction=meta["mrac"],
                        ac_setup=meta.get("ac_setup"),
                    ),
                },
            )
        )
    return subjects


def simulate_phantoms(indices, tracers, seed, synth_config, cache_dir=None):
    """Stand-in for :func:`simulate` with the unit-test phantom (pipeline check only)."""
    from types import SimpleNamespace

    from bids_harmonize.acsetups import get_setup
    from bids_harmonize.harmonizer.phantom import phantom_pair

    subjects = []
    for i in indices:
        pairs = {t: phantom_pair(i, shape=(48, 56, 48), tracer=t, seed=seed) for t in tracers}
        first = next(iter(pairs.values()))
        subjects.append(
            SimpleNamespace(
                subject=first.subject,
                t1w=first.t1w,
                ct_hu=first.ct_hu,
                labels=first.labels,
                brain_mask=first.brain_mask,
                tracers=list(tracers),
                pet_ct={t: p.pet_ct for t, p in pairs.items()},
                pet_mr={t: p.pet_mr for t, p in pairs.items()},
                activity={t: p.pet_ct for t, p in pairs.items()},
                sessions={
                    "petmr": SimpleNamespace(
                        model=get_setup(synth_config.petmr_setups[0]).model,
                        attenuation_correction=get_setup(synth_config.petmr_setups[0]).ac_text,
                        ac_setup=synth_config.petmr_setups[0],
                    )
                },
            )
        )
    return subjects


def cases_of(subjects, tracers, group):
    out = []
    for s in subjects:
        for t in tracers:
            out.append(
                Case(
                    group,
                    s.subject,
                    t,
                    s.t1w,
                    s.brain_mask > 0,
                    s.labels,
                    s.pet_mr[t],
                    s.pet_ct[t],
                    s.activity[t],
                    getattr(s.sessions.get("petmr"), "model", "?"),
                    s.ct_hu,
                )
            )
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
        out["cl_agree"] = float((cl_h >= CL_CUTOFF) == (cl_ct >= CL_CUTOFF))
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
res = harmonize_volume(d["pet"], d["t1w"], d["mask"], model, device="cpu")
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
    np.savez(path, pet=case.pet_mr, t1w=case.t1w, mask=case.brain)
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


# --------------------------------------------------------------------------- main
CORRECTION_OVERRIDES: dict = {}  # set from the command line (--correction-norm)


def config_for(settings, use_anatomy=True):
    from bids_harmonize.harmonizer.config import HarmonizerConfig

    changes = {
        name: {"epochs": e, "steps_per_epoch": s, "batch_size": b}
        for name, (e, s, b) in settings.stage_steps.items()
    }
    return HarmonizerConfig().replace(
        correction={"use_anatomy": use_anatomy, **CORRECTION_OVERRIDES}, **changes
    )


METHODS = ("none", "linear", "combat", "unet", "three-stage")
LABELS = {
    "none": "No correction (PET-MR)",
    "linear": "Global linear cross-calibration per tracer",
    "combat": "ComBat on regional values (neuroHarmonize)",
    "unet": "Image-to-image U-Net, no anatomy (ablation)",
    "three-stage": "**Three-stage harmonizer**",
    "petct": "PET-CT itself (reference, vs truth)",
}
GROUPS = {
    "seen": "Seen tracers, held-out subjects",
    "unseen": "Unseen tracers (florbetapir, FPCIT; not in training)",
    "variant": "Held-out PET-MR AC setup (atlas, GE SIGNA PET/MR), seen tracers",
}


def evaluate(cases, model, ablation, fits, combat, threads):
    from bids_harmonize.harmonizer.infer import harmonize_volume

    rows = []
    for case in cases:
        ct_stats = region_stats(case.pet_ct, case.labels)
        truth_stats = region_stats(case.truth, case.labels)
        mine = harmonize_volume(case.pet_mr, case.t1w, case.brain, model, tracer=case.tracer, device="cpu")
        ablated = harmonize_volume(case.pet_mr, case.t1w, case.brain, ablation, device="cpu")
        images = {
            "none": case.pet_mr,
            "linear": apply_linear(fits, case),
            "unet": ablated.harmonized,
            "three-stage": mine.harmonized,
        }
        for method in METHODS:
            img = images.get(method)
            if img is None:
                means = combat.apply(case)
                scores = {}
            else:
                means, _ = region_stats(img, case.labels)
                scores = image_scores(img, case.pet_ct, case.brain)
            scores.update(regional_scores(means, case, ct_stats, truth_stats))
            if method == "three-stage" and case.ct_hu is not None:
                scores.update(pseudo_ct_scores(mine.pseudo_ct_hu, case.ct_hu))
            rows.append(
                {
                    "group": case.group,
                    "subject": case.subject,
                    "tracer": case.tracer,
                    "method": method,
                    **scores,
                }
            )
        truth_row = regional_scores(ct_stats[0], case, ct_stats, truth_stats)
        rows.append(
            {
                "group": case.group,
                "subject": case.subject,
                "tracer": case.tracer,
                "method": "petct",
                "bias_true": truth_row["bias_true"],
            }
        )
        LOGGER.info("scored %s sub-%s %s", case.group, case.subject, case.tracer)
    return rows


def summarise(rows):
    import pandas as pd

    df = pd.DataFrame(rows)
    out = {}
    for (group, method), d in df.groupby(["group", "method"], sort=False):

        def col(name, how="mean", d=d):
            if name not in d or d[name].isna().all():
                return None
            v = d[name].dropna()
            return float(getattr(v, how)())

        cl = d["cl_diff"].dropna() if "cl_diff" in d else pd.Series(dtype=float)
        out.setdefault(group, {})[method] = {
            "n": int(len(d)),
            "mae_pct": col("mae_pct"),
            "psnr": col("psnr"),
            "ssim": col("ssim"),
            "bias_mean": col("bias_mean"),
            "bias_max": col("bias_max", "max"),
            "bias_true": col("bias_true"),
            "cl_absdiff": float(cl.abs().mean()) if len(cl) else None,
            "cl_meandiff": float(cl.mean()) if len(cl) else None,
            "cl_agree": col("cl_agree"),
            "pct_mae_hu": col("pct_mae_hu"),
            "pct_bone_dice": col("pct_bone_dice"),
            "n_amyloid": int(len(cl)),
        }
    return out


def fmt(v, digits=2, pct=False):
    if v is None:
        return "—"
    if pct:
        return f"{100 * v:.0f} %"
    return f"{v:.{digits}f}"


def markdown(summary, meta):
    lines = [
        "# Accuracy benchmark: PET-MR → PET-CT harmonization (simulated data)",
        "",
        f"Generated {meta['date']} by `{meta['command']}` ({meta['settings']} settings) on "
        f"{meta['machine']}, {meta['threads']} torch threads. All data simulated with "
        "`bids_harmonize.synth`; nothing here is a claim about real scanners.",
        "",
        f"Training: subjects {meta['train_subjects']} with tracers "
        f"{', '.join(meta['train_tracers'])}, PET-MR AC setups {', '.join(TRAIN_SETUPS)}. "
        "Test: held-out subjects " + meta["test_subjects"] + ".",
        "",
        "Columns: MAE in % of the PET-CT brain mean, PSNR and SSIM vs PET-CT inside the "
        "brain mask; |regional bias| vs PET-CT over the 24 synth regions (mean over regions "
        "and cases; max over all); |bias| vs truth = mean absolute regional bias against "
        "the simulator's true activity; ΔCL = Centiloid on the method minus Centiloid on "
        "PET-CT (amyloid tracers only), mean of |ΔCL| (signed mean in brackets) and "
        "classification agreement at 24.1 CL. ComBat corrects regional values only, so it "
        "has no voxel-wise figures.",
        "",
    ]
    for group, title in GROUPS.items():
        if group not in summary:
            continue
        lines += [
            f"## {title}",
            "",
            "| Method | n | MAE % | PSNR dB | SSIM | mean abs regional bias % "
            "| max abs regional bias % | abs bias vs truth % | mean abs ΔCL (signed) "
            "| CL agreement |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for method in (*METHODS, "petct"):
            s = summary[group].get(method)
            if not s:
                continue
            cl = "—" if s["cl_absdiff"] is None else (f"{s['cl_absdiff']:.2f} ({s['cl_meandiff']:+.2f})")
            lines.append(
                f"| {LABELS[method]} | {s['n']} | {fmt(s['mae_pct'])} | {fmt(s['psnr'], 1)} "
                f"| {fmt(s['ssim'], 3)} | {fmt(s['bias_mean'])} | {fmt(s['bias_max'])} "
                f"| {fmt(s['bias_true'])} | {cl} | {fmt(s['cl_agree'], pct=True)} |"
            )
        lines.append("")
        s = summary[group].get("three-stage", {})
        if s.get("pct_mae_hu") is not None:
            lines += [
                f"Pseudo-CT from the T1w (stage 2 through the stage-1 decoder): MAE "
                f"{s['pct_mae_hu']:.0f} HU inside the head, bone (> 300 HU) Dice "
                f"{s['pct_bone_dice']:.2f}.",
                "",
            ]
    lines += ["## Targets", ""]
    for text, ok in meta["targets"]:
        lines.append(f"- {'met' if ok else '**not met**'}: {text}")
    lines += ["", "## Speed and memory", ""]
    for n_threads, sp in zip((1, 2), meta["speed"], strict=True):
        if "error" in sp:
            lines.append(f"- Inference speed, {n_threads} thread(s): failed ({sp['error']})")
            continue
        lines.append(
            f"- Inference, one subject at 2 mm (grid {sp['shape']}), CPU, {n_threads} torch "
            f"thread(s), fresh process: {sp['infer_s']:.1f} s (+ {sp['load_s']:.2f} s model "
            f"load), peak resident memory {sp['peak_rss_mb']:.0f} MB (whole process, torch "
            "included)."
        )
    lines += [
        "- Training time per stage, benchmark configuration ("
        + ", ".join(f"{k}: {v:.0f} s" for k, v in meta["train_seconds"].items())
        + f"); ablation U-Net stage 3: {meta['ablation_seconds']:.0f} s.",
        "- Training time per stage, test-suite configuration (16^3 patches, phantoms): "
        + ", ".join(f"{k}: {v:.2f} s" for k, v in meta["tiny_seconds"].items())
        + ".",
        f"- Simulation: {meta['simulate_s']:.0f} s; whole benchmark: {meta['total_s']:.0f} s.",
        "",
        "## Settings",
        "",
        "```json",
        json.dumps(meta["config"], indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run (a few minutes)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Markdown table to write (default: RESULTS.md, or RESULTS-quick.md with --quick)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest on a loaded 2-core machine)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bids_harmonize-benchmark",
        help="where simulated subjects are cached (.npz); 'none' disables the cache",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--phantom",
        action="store_true",
        help="use the unit-test phantom instead of the simulator (pipeline check only)",
    )
    parser.add_argument(
        "--correction-norm",
        choices=("instance", "none"),
        default=None,
        help="normalisation inside the stage-3 blocks (default: the package default)",
    )
    args = parser.parse_args(argv)
    if args.correction_norm:
        CORRECTION_OVERRIDES["norm"] = args.correction_norm
    if args.out is None:
        args.out = HERE / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    from bids_harmonize.harmonizer.dataset import pairs_from_simulation
    from bids_harmonize.harmonizer.train import train_model
    from bids_harmonize.harmonizer.weights import load_model
    from bids_harmonize.synth import SynthConfig

    torch.set_num_threads(args.threads)
    settings = SETTINGS["quick" if args.quick else "default"]
    t_start = time.perf_counter()
    n_tr, n_te, n_va = settings.train_subjects, settings.test_subjects, settings.variant_subjects
    train_idx = range(1, n_tr + 1)
    test_idx = range(n_tr + 1, n_tr + n_te + 1)
    var_idx = range(n_tr + n_te + 1, n_tr + n_te + n_va + 1)
    train_cfg = SynthConfig(petmr_setups=TRAIN_SETUPS)
    var_cfg = SynthConfig(petmr_setups=HELDOUT_SETUPS)
    tracers = settings.train_tracers
    sim = simulate_phantoms if args.phantom else simulate
    cache = None if str(args.cache_dir).lower() == "none" else args.cache_dir
    train = sim(train_idx, tracers, args.seed, train_cfg, cache)
    test = sim(test_idx, (*tracers, *UNSEEN_TRACERS), args.seed, train_cfg, cache)
    variant = sim(var_idx, tracers, args.seed, var_cfg, cache)
    simulate_s = time.perf_counter() - t_start
    pairs = [p for s in train for p in pairs_from_simulation(s)]
    cases = (
        cases_of(test, tracers, "seen")
        + cases_of(test, UNSEEN_TRACERS, "unseen")
        + cases_of(variant, tracers, "variant")
    )

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = train_model(
            pairs, tmp / "three-stage", config_for(settings), device="cpu", progress=False
        )
        ablation_dir = train_model(
            pairs, tmp / "unet", config_for(settings, False), device="cpu", progress=False
        )
        model, ablation = load_model(model_dir), load_model(ablation_dir)
        fits = fit_linear(pairs)
        combat = ComBat(pairs)
        rows = evaluate(cases, model, ablation, fits, combat, args.threads)
        speed = [measure_inference(model_dir, cases[0], n, tmp) for n in (1, 2)]
        train_seconds = {s: model.card["training"][s]["seconds"] for s in ("stage1", "stage2", "stage3")}
        ablation_seconds = ablation.card["training"]["stage3"]["seconds"]
    tiny = tiny_training_times(args.threads)
    summary = summarise(rows)

    def get(group, method, key):
        return summary.get(group, {}).get(method, {}).get(key)

    three = "three-stage"
    targets = []
    for group, limit in (("seen", 2.0), ("unseen", 3.0)):
        v = get(group, three, "bias_mean")
        if v is not None:
            targets.append((f"mean abs regional bias, {group} tracers: {v:.2f} % (< {limit} %)", v < limit))
    for group in ("seen", "unseen", "variant"):
        v = get(group, three, "cl_absdiff")
        if v is not None:
            targets.append((f"mean abs ΔCL, {group}: {v:.2f} CL (< 3 CL)", v < 3.0))
    for group in GROUPS:
        mine = get(group, three, "bias_mean")
        if mine is None:
            continue
        base = {m: get(group, m, "bias_mean") for m in ("none", "linear", "combat", "unet")}
        best = min((v, m) for m, v in base.items() if v is not None)
        targets.append(
            (
                f"better than every baseline on regional bias, {group}: {mine:.2f} % "
                f"vs best baseline {best[1]} {best[0]:.2f} %",
                mine < best[0],
            )
        )
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python benchmarks/accuracy/run.py"
        + (" --quick" if args.quick else "")
        + (f" --correction-norm {args.correction_norm}" if args.correction_norm else ""),
        "settings": settings.name,
        "machine": f"{platform.machine()} CPU ({os.cpu_count()} cores visible)",
        "threads": args.threads,
        "train_subjects": f"{len(train)} ({train_idx.start}-{train_idx.stop - 1})",
        "train_tracers": tracers,
        "test_subjects": (
            f"{len(test)} ({test_idx.start}-{test_idx.stop - 1}) for seen and "
            f"unseen tracers, {len(variant)} ({var_idx.start}-"
            f"{var_idx.stop - 1}) for the PET-MR variant"
        ),
        "targets": targets,
        "speed": speed,
        "train_seconds": train_seconds,
        "ablation_seconds": ablation_seconds,
        "tiny_seconds": tiny,
        "simulate_s": simulate_s,
        "total_s": time.perf_counter() - t_start,
        "config": config_for(settings).to_dict(),
    }
    text = markdown(summary, meta)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps({"summary": summary, "meta": meta, "rows": rows}, indent=1, default=str)
    )
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
