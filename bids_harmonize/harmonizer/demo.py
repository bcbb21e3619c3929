"""Train the shipped demo model on simulated subjects (in memory, no files but the model).

    python -m bids_harmonize.harmonizer.demo --out bids_harmonize/data/models/demo

simulates ``--subjects`` paired PET-CT/PET-MR subjects with ``bids_harmonize.synth``
(simulator v2: the PET-MR attenuation-correction setups of ``--setups`` in turn, each with
the scanner's own mu-map), trains the three stages of the physics-guided configuration
(:func:`demo_config`: stage 3 gets the expected attenuation-correction error as an input
channel) on CPU, optionally an ensemble for the uncertainty (``--ensemble-members``,
:mod:`.uncertainty`), and writes a model directory whose card says plainly that it is
trained on simulated data, for demonstration only, and which setups and tracers it covers.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

LOGGER = logging.getLogger(__name__)

DEFAULT_TRACERS = ("PiB", "FDG", "flortaucipir", "florbetaben")
#: the PET-MR attenuation-correction setups of simulator v2 (``data/acsetups.tsv``)
DEFAULT_SETUPS = ("dixon-nobone", "dixon-bone", "zte", "atlas")


def demo_config(scale: float = 1.0, batch_size: int = 4):
    """Configuration of the demo model: small, physics-guided, CPU-trainable in minutes.

    ``scale`` multiplies the training steps (epochs stay); ``batch_size`` is the patches per
    step of every stage (4 on a CPU; a GPU takes 8-16 at the same cost per step).
    """
    from .config import HarmonizerConfig

    def steps(n):
        return max(1, int(round(n * scale)))

    return HarmonizerConfig().replace(
        correction={"inputs": ("pet", "t1w", "ac_error")},
        stage1={"epochs": 8, "steps_per_epoch": steps(40), "batch_size": batch_size, "lr": 2e-3},
        stage2={"epochs": 8, "steps_per_epoch": steps(40), "batch_size": batch_size, "lr": 2e-3},
        stage3={"epochs": 10, "steps_per_epoch": steps(40), "batch_size": batch_size, "lr": 2e-3},
    )


def _simulate_one(task):
    """Pool worker: one subject's training pairs (one torch thread per process)."""
    import torch

    from bids_harmonize.synth import simulate_subject

    from .dataset import pairs_from_simulation

    torch.set_num_threads(1)
    index, tracers, seed, synth_config = task
    t0 = time.perf_counter()
    subject = simulate_subject(index, seed=seed, tracers=tracers, config=synth_config)
    return index, pairs_from_simulation(subject), time.perf_counter() - t0


def simulate_pairs(indices, tracers, seed=0, synth_config=None, jobs: int = 1):
    """Simulate subjects ``indices`` and return their training pairs (in memory).

    ``synth_config`` (a :class:`bids_harmonize.synth.SynthConfig`) picks the setups;
    ``jobs`` > 1 simulates that many subjects at a time in forked processes (the pairs are
    the same: each subject is a function of its index and the seed alone).
    """
    tasks = [(index, tracers, seed, synth_config) for index in indices]
    if jobs > 1 and len(tasks) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(min(jobs, len(tasks))) as pool:
            results = pool.map(_simulate_one, tasks, chunksize=1)
    else:
        results = map(_simulate_one, tasks)
    pairs = []
    for index, subject_pairs, seconds in results:
        pairs += subject_pairs
        LOGGER.info("simulated subject %d (%.1f s)", index, seconds)
    return pairs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bids_harmonize.harmonizer.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="model directory to write")
    parser.add_argument("--subjects", type=int, default=6, help="simulated training subjects")
    parser.add_argument("--tracers", default=",".join(DEFAULT_TRACERS), help="comma-separated tracers")
    parser.add_argument(
        "--setups",
        default=",".join(DEFAULT_SETUPS),
        help="comma-separated PET-MR attenuation-correction setups (data/acsetups.tsv), "
        "assigned to the simulated subjects in turn",
    )
    parser.add_argument("--seed", type=int, default=0, help="simulator and training seed")
    parser.add_argument(
        "--steps-scale", type=float, default=1.0, help="multiply the training steps of every stage"
    )
    parser.add_argument(
        "--ensemble-members",
        type=int,
        default=0,
        help="extra stage-3 nets for the uncertainty (bids_harmonize.harmonizer.uncertainty); "
        "calibrated on the --eval-subjects",
    )
    parser.add_argument(
        "--eval-subjects",
        type=int,
        default=1,
        help="held-out simulated subjects scored into the card's evaluation section",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="patches per training step")
    parser.add_argument("--jobs", type=int, default=1,
                        help="processes simulating subjects at a time (does not change the model)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv=None) -> int:
    import torch

    from .train import train_model

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    tracers = [t.strip() for t in args.tracers.split(",") if t.strip()]
    setups = tuple(t.strip() for t in args.setups.split(",") if t.strip())
    from bids_harmonize.synth import SynthConfig

    try:
        synth_config = SynthConfig(petmr_setups=setups)
    except ValueError as err:
        LOGGER.error("--setups: %s", err)
        return 2
    command = "python -m bids_harmonize.harmonizer.demo " + shlex.join(
        [
            "--out",
            str(args.out),
            "--subjects",
            str(args.subjects),
            "--tracers",
            ",".join(tracers),
            "--setups",
            ",".join(setups),
            "--seed",
            str(args.seed),
            "--steps-scale",
            f"{args.steps_scale:g}",
            "--batch-size",
            str(args.batch_size),
            "--ensemble-members",
            str(args.ensemble_members),
            "--eval-subjects",
            str(args.eval_subjects),
            "--threads",
            str(args.threads),
        ]
    )
    # training and held-out subjects in one go, before any CUDA work (the pool forks)
    n_all = args.subjects + max(args.eval_subjects, 0)
    all_pairs = simulate_pairs(range(1, n_all + 1), tracers, seed=args.seed, synth_config=synth_config,
                               jobs=args.jobs)
    train_ids = {f"{i:02d}" for i in range(1, args.subjects + 1)}
    pairs = [p for p in all_pairs if p.subject in train_ids]
    held_out = [p for p in all_pairs if p.subject not in train_ids]
    config = demo_config(args.steps_scale, args.batch_size).replace(seed=args.seed)
    from .device import resolve_device

    where = "a GPU" if resolve_device(args.device).type == "cuda" else "CPU"
    card = {
        "name": "demo",
        "version": "0.3.0",
        "changelog": {
            "0.1.0": "first demo model, trained on bids_harmonize.synth subjects",
            "0.2.0": "simulator v2 (four PET-MR attenuation-correction setups, scanner mu-maps); "
            "physics-guided stage 3 (expected attenuation-correction error channel)",
            "0.3.0": "retrained with more subjects and steps per stage (retrain_command), ensemble "
            "calibrated on held-out subjects",
        },
        "description": (
            "DEMONSTRATION MODEL trained on SIMULATED data only (bids_harmonize.synth v2 "
            f"subjects 1-{args.subjects}, seed {args.seed}). It is small and trained for "
            f"minutes on {where}. Not validated on real scans: do not use for research or "
            "clinical conclusions; train a site model with the `train` level instead. "
            f"Supports the PET-MR attenuation-correction setups {', '.join(setups)} and the "
            f"tracers {', '.join(tracers)} (others are out of distribution)."
        ),
        "supported": {"ac_setups": list(setups), "tracers": list(tracers)},
        "intended_use": "demonstration and testing of the bids_harmonize pipeline only",
        "retrain_command": command,
        "authors": "bids_harmonize developers",
        "license": "Apache-2.0",
    }
    t0 = time.perf_counter()
    out = train_model(
        pairs,
        args.out,
        config,
        device=args.device,
        progress=not args.no_progress,
        card=card,
        checkpoint_dir=args.out.parent / f".{args.out.name}-checkpoints",
        keep_checkpoints=False,
    )
    LOGGER.info("demo model written to %s in %.0f s", out, time.perf_counter() - t0)
    if args.ensemble_members > 0:
        from .uncertainty import fit_uncertainty

        t1 = time.perf_counter()
        fit_uncertainty(
            out, pairs, validation_pairs=held_out, n_members=args.ensemble_members, device=args.device
        )
        LOGGER.info("ensemble of %d members in %.0f s", args.ensemble_members, time.perf_counter() - t1)
    if held_out:
        add_evaluation(out, held_out)
    import shutil

    shutil.rmtree(Path(args.out) / "checkpoints", ignore_errors=True)  # ensemble checkpoints
    return 0


def regional_bias(image, reference, labels) -> float:
    """Mean absolute regional percent bias of ``image`` against ``reference``."""
    import numpy as np

    lab = labels.ravel().astype(np.int64)
    counts = np.bincount(lab)[1:]
    ok = counts > 0
    a = np.bincount(lab, weights=image.ravel().astype(np.float64))[1:][ok]
    b = np.bincount(lab, weights=reference.ravel().astype(np.float64))[1:][ok]
    return float(np.mean(np.abs(100.0 * (a / b - 1.0))))


BIAS_KEYS = ("regional_bias_petmr_pct", "regional_bias_harmonized_pct")


def _mean_of(rows, key, setup) -> float:
    import numpy as np

    return round(float(np.mean([r[key] for r in rows if r["ac_setup"] == setup])), 3)


def add_evaluation(model_dir, pairs) -> dict:
    """Score held-out pairs (mean abs regional bias vs PET-CT) into the model card."""
    import json

    import numpy as np

    from .infer import harmonize_volume
    from .weights import CARD_NAME, load_model

    model = load_model(model_dir)
    rows = []
    for p in pairs:
        res = harmonize_volume(
            p.pet_mr, p.t1w, p.brain_mask, model, tracer=p.tracer, device="cpu",
            mu_map=p.mu_map, ac_setup=p.ac_setup,
        )
        rows.append(
            {
                "subject": p.subject,
                "tracer": p.tracer,
                "ac_setup": p.ac_setup,
                "regional_bias_petmr_pct": round(regional_bias(p.pet_mr, p.pet_ct, p.labels), 3),
                "regional_bias_harmonized_pct": round(regional_bias(res.harmonized, p.pet_ct, p.labels), 3),
            }
        )
    evaluation = {
        "data": "held-out bids_harmonize.synth subjects " + ", ".join(sorted({r["subject"] for r in rows})),
        "metric": "mean absolute regional percent bias vs PET-CT over the 24 synth regions",
        "mean_regional_bias_petmr_pct": round(
            float(np.mean([r["regional_bias_petmr_pct"] for r in rows])), 3
        ),
        "mean_regional_bias_harmonized_pct": round(
            float(np.mean([r["regional_bias_harmonized_pct"] for r in rows])), 3
        ),
        "per_setup": {
            setup: {key: _mean_of(rows, key, setup) for key in BIAS_KEYS}
            for setup in sorted({r["ac_setup"] for r in rows})
        },
        "per_pair": rows,
        "benchmark": "benchmarks/accuracy/RESULTS.md in the source tree",
    }
    path = Path(model_dir) / CARD_NAME
    card = json.loads(path.read_text())
    card["evaluation"] = evaluation
    path.write_text(json.dumps(card, indent=2) + "\n")  # the card's own hash is not in the card
    LOGGER.info(
        "evaluation: regional bias %.2f %% -> %.2f %%",
        evaluation["mean_regional_bias_petmr_pct"],
        evaluation["mean_regional_bias_harmonized_pct"],
    )
    return evaluation


if __name__ == "__main__":
    sys.exit(main())
