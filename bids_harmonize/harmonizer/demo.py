"""Train the shipped demo model on simulated subjects (in memory, no files but the model).

    python -m bids_harmonize.harmonizer.demo --out bids_harmonize/data/models/demo

simulates ``--subjects`` paired PET-CT/PET-MR subjects with ``bids_harmonize.synth``,
trains the three stages with the demo configuration (:func:`demo_config`) on CPU and writes
a model directory whose card says plainly that it is trained on simulated data and is for
demonstration only.
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


def demo_config():
    """Configuration of the demo model: small, CPU-trainable in minutes."""
    from .config import HarmonizerConfig

    return HarmonizerConfig().replace(
        stage1={"epochs": 6, "steps_per_epoch": 25, "batch_size": 4, "lr": 2e-3},
        stage2={"epochs": 6, "steps_per_epoch": 25, "batch_size": 4, "lr": 2e-3},
        stage3={"epochs": 8, "steps_per_epoch": 25, "batch_size": 2, "lr": 2e-3},
    )


def simulate_pairs(indices, tracers, seed=0, synth_config=None):
    """Simulate subjects ``indices`` and return their training pairs (in memory)."""
    from bids_harmonize.synth import simulate_subject

    from .dataset import pairs_from_simulation

    pairs = []
    for index in indices:
        t0 = time.perf_counter()
        subject = simulate_subject(index, seed=seed, tracers=tracers, config=synth_config)
        pairs += pairs_from_simulation(subject)
        LOGGER.info("simulated subject %d (%.1f s)", index, time.perf_counter() - t0)
    return pairs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bids_harmonize.harmonizer.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="model directory to write")
    parser.add_argument("--subjects", type=int, default=6, help="simulated training subjects")
    parser.add_argument("--tracers", default=",".join(DEFAULT_TRACERS), help="comma-separated tracers")
    parser.add_argument("--seed", type=int, default=0, help="simulator and training seed")
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
    command = "python -m bids_harmonize.harmonizer.demo " + shlex.join(
        [
            "--out",
            str(args.out),
            "--subjects",
            str(args.subjects),
            "--tracers",
            ",".join(tracers),
            "--seed",
            str(args.seed),
        ]
    )
    pairs = simulate_pairs(range(1, args.subjects + 1), tracers, seed=args.seed)
    config = demo_config().replace(seed=args.seed)
    card = {
        "name": "demo",
        "version": "0.1.0",
        "changelog": {"0.1.0": "first demo model, trained on bids_harmonize.synth subjects"},
        "description": (
            "DEMONSTRATION MODEL trained on SIMULATED data only (bids_harmonize.synth "
            f"subjects 1-{args.subjects}, seed {args.seed}). It is small and trained for "
            "minutes on CPU. Not validated on real scans: do not use for research or "
            "clinical conclusions; train a site model with the `train` level instead."
        ),
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
