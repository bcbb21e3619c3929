"""``bids_harmonize-synth``: write a simulated paired PET-CT / PET-MR BIDS dataset.

    bids_harmonize-synth OUT --subjects 3 --tracers PiB,FDG --seed 0
"""

from __future__ import annotations

import argparse
import logging
import sys

from bids_harmonize.__about__ import __version__

PROG = "bids_harmonize-synth"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _comma_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("empty list")
    return items


def _resolution(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1.0 <= value <= 4.0:
        raise argparse.ArgumentTypeError("resolution must be between 1 and 4 mm")
    return value


def build_parser() -> argparse.ArgumentParser:
    from bids_harmonize.synth.api import PETCT_MODELS, PETMR_SETUPS

    p = _Parser(prog=PROG, description="Simulate N subjects scanned on the same day on "
                "PET-CT and PET-MR and write them as a BIDS dataset with ground truth.")
    p.add_argument("output_dir", help="folder to create (must be empty or absent)")
    p.add_argument("--subjects", type=_positive_int, default=3, help="number of subjects")
    p.add_argument("--tracers", type=_comma_list, default=["PiB"],
                   help="comma-separated tracers of tracers.yaml, e.g. PiB,FDG")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed = same files)")
    p.add_argument("--petct-models", type=_comma_list, default=list(PETCT_MODELS),
                   help="PET-CT scanner models to draw from (default: %(default)s)")
    p.add_argument("--petmr-setups", type=_comma_list, default=list(PETMR_SETUPS),
                   help="PET-MR attenuation-correction setups of data/acsetups.tsv, given to "
                   "subjects in turn; each fixes the scanner model, software version, "
                   "AttenuationCorrection text and how its mu-map is made "
                   "(default: %(default)s)")
    p.add_argument("--petmr-delay", type=float, default=0.0, metavar="MIN",
                   help="same-day protocol: the PET-MR scan starts MIN minutes later after "
                   "injection than the PET-CT (uptake drifts by the tracer's kinetic model; "
                   "tracers without one are refused; default 0)")
    p.add_argument("--consortium", default=None, metavar="NAME|FILE",
                   help="simulate a consortium: a preset of bids_harmonize/data/consortia.yaml "
                   "(paper: 3 sites, 4 PET-MR setups) or a YAML file of that schema; each "
                   "site's PET-CT model, PET-MR setups, PET-MR delay, session "
                   "variability, count levels and InstitutionName replace --petct-models, "
                   "--petmr-setups, --petmr-delay and --session-sd, and its cohort draws "
                   "amyloid status and Centiloid (participants.tsv gets a site column)")
    p.add_argument("--resolution", type=_resolution, default=2.0,
                   help="voxel size (mm) of the anatomy grid; scanners scale with it")
    p.add_argument("--n-frames", type=_positive_int, default=None,
                   help="number of PET frames (default: cover the tracer's window)")
    p.add_argument("--frame-duration", type=float, default=5.0, help="frame length (min)")
    p.add_argument("--dynamic", action="store_true",
                   help="acquire from injection with short early frames and head drift")
    p.add_argument("--no-motion", action="store_true",
                   help="same head position in both sessions")
    p.add_argument("--no-noise", action="store_true",
                   help="noiseless sinograms and no between-session variability")
    p.add_argument("--session-sd", type=float, default=0.0, metavar="SD",
                   help="between-session (test-retest) variability: each session's "
                   "brain-to-reference uptake ratio times exp(N(0, SD)), drawn per session "
                   "and tracer (default 0: the same true uptake in both sessions; a "
                   "--consortium site's protocol.session_sd replaces it)")
    p.add_argument("--count-scale", type=float, default=1.0,
                   help="multiply the detected counts (noise level)")
    p.add_argument("--jobs", type=_positive_int, default=1,
                   help="subjects simulated at a time, in separate processes (the files do "
                        "not depend on it; each process holds about 1.3 GB)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, no table")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def format_ratio_table(summary) -> str:
    """A text table of the per-region PET-MR/PET-CT ratio."""
    lines = [f"{'region':32s} {'PET-MR/PET-CT':>13s} {'sd':>7s} {'min':>7s} {'max':>7s}"]
    for _, row in summary.iterrows():
        sd = row["ratio_sd"]
        lines.append(f"{row['region']:32s} {row['ratio_mean']:13.3f} "
                     f"{(0.0 if sd != sd else sd):7.3f} {row['ratio_min']:7.3f} "
                     f"{row['ratio_max']:7.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from bids_harmonize.synth.api import SynthConfig
    from bids_harmonize.synth.bids_writer import SynthError, ratio_summary, write_dataset

    try:
        consortium = None
        if args.consortium:
            from bids_harmonize.synth.consortium import load_consortium

            consortium = load_consortium(args.consortium)
        config = SynthConfig(
            resolution_mm=args.resolution, petct_models=tuple(args.petct_models),
            petmr_setups=tuple(args.petmr_setups), petmr_delay_min=args.petmr_delay,
            frame_duration_min=args.frame_duration, n_frames=args.n_frames,
            dynamic=args.dynamic, motion=not args.no_motion, noise=not args.no_noise,
            count_scale=args.count_scale, consortium=consortium,
            session_sd=args.session_sd)
        table = write_dataset(args.output_dir, n_subjects=args.subjects, tracers=args.tracers,
                              seed=args.seed, config=config, overwrite=args.overwrite,
                              jobs=args.jobs)
    except (SynthError, ValueError, OSError) as err:
        sys.stderr.write(f"{PROG}: error: {err}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted, nothing written\n")
        return 130
    if not args.quiet:
        print(f"Wrote {args.subjects} subject(s) to {args.output_dir}")
        print("Mean PET-MR / PET-CT ratio per region (recovery ratio, all subjects and tracers):")
        print(format_ratio_table(ratio_summary(table)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
