"""The BIDS App's command line, built in one function.

Validators run through ``type=`` so that a bad argument exits with status 2
and a one-line message; nothing here touches the network.
"""

from __future__ import annotations

import argparse
import math
import os
import textwrap
from pathlib import Path

from bids_harmonize.__about__ import __version__
from bids_harmonize.config import ANALYSIS_LEVELS, DEFAULT_OUTPUT_SPACES


def default_omp_nthreads(nprocs: int) -> int:
    """Threads per process when ``--omp-nthreads`` is not given: fMRIPrep's rule
    (``min(nprocs - 1, 8)``, fmriprep/cli/parser.py), at least 1.

    With 2 processes a node that takes both cores runs alone and its threads mostly wait
    (ITK and torch scale poorly on small images); two 1-thread nodes side by side took a
    simulated subject's participant level from 157 s to 97 s on this project's 2-core VM
    (benchmarks/README.md, "Participant level").

    >>> [default_omp_nthreads(n) for n in (1, 2, 4, 16)]
    [1, 1, 3, 8]
    """
    return max(1, min(int(nprocs) - 1, 8))


def existing_dir(value: str) -> Path:
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"not an existing directory: {value}")
    return path


def _existing_file(value: str) -> Path:
    path = Path(value).expanduser().absolute()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"not an existing file: {value}")
    return path


def _checked_file(reader_name: str, what: str, name: str):
    """An argparse type: an existing file that ``bids_harmonize.bids.<reader_name>`` reads
    without error, checked now (one line, exit 2, when bad)."""

    def check(value: str) -> Path:
        from bids_harmonize import bids

        path = _existing_file(value)
        try:
            getattr(bids, reader_name)(path)
        except bids.InputError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return path

    check.__name__ = name
    check.__doc__ = f"An existing {what}, checked now (one line, exit 2, when bad)."
    return check


_bids_filter_file = _checked_file("read_bids_filters", "JSON file of pybids filters",
                                  "_bids_filter_file")
_platform_map = _checked_file("read_platform_map", "``--platform-map`` TSV", "_platform_map")


def _int_at_least(value: str, minimum: int, bound: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value}") from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"must be {bound}: {value}")
    return number


def positive_int(value: str) -> int:
    return _int_at_least(value, 1, "at least 1")


def _model_source(value: str) -> Path:
    """A model folder holding model.json, or 'demo' (the shipped model)."""
    if value == "demo":
        from bids_harmonize.harmonizer.weights import default_model_dir

        return Path(default_model_dir())
    path = Path(value).expanduser().absolute()
    if not (path / "model.json").is_file():
        raise argparse.ArgumentTypeError(f"{value!r} is not a model folder (no model.json)")
    return path


def _non_negative_int(value: str) -> int:
    return _int_at_least(value, 0, "0 or more")


def _positive_float(value: str) -> float:
    try:
        number = float(value.lower().removesuffix("gb").removesuffix("g"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of GB: {value}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return number


def _scale(value: str) -> float:
    """A positive, finite multiplier."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value}") from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number: {value}")
    return number


def _resolution_mm(value: str) -> float:
    """A common effective resolution (FWHM, mm), 1-20.

    >>> _resolution_mm("8")
    8.0
    """
    try:
        number = float(value.lower().removesuffix("mm"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of mm: {value}") from None
    if not 1.0 <= number <= 20.0:
        raise argparse.ArgumentTypeError(f"must be between 1 and 20 mm: {value}")
    return number


def _scanner_resolution(value: str) -> tuple[str, float]:
    """``MODEL=MM``: a scanner's effective resolution (FWHM, mm).

    >>> _scanner_resolution("Biograph 64=6.5")
    ('Biograph 64', 6.5)
    """
    model, equals, number = value.rpartition("=")
    if not equals or not model.strip():
        raise argparse.ArgumentTypeError(f"expected MODEL=MM (e.g. 'Biograph 64=6.5'): {value}")
    try:
        return model.strip(), _resolution_mm(number)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{value}: {exc}") from None


def _plugin_args(value: str) -> dict:
    """A JSON object, given inline or as a ``.json`` file."""
    import json

    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value).expanduser()
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"neither a JSON object nor an existing file: {value}")
        text = path.read_text()
    try:
        args = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg}): {value}") from None
    if not isinstance(args, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object: {value}")
    return args


class _ListAction(argparse.Action):
    """The one behaviour of every list-valued option: the values after one flag
    (``--participant-label 01 02``), the flag repeated (``--participant-label 01
    --participant-label 02``), or both, add up; the first use replaces the default."""

    def __init__(self, option_strings, dest, **kwargs):
        kwargs.setdefault("nargs", "+")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None)
        if current is None or current is self.default:
            current = []
        setattr(namespace, self.dest, [*current, *values])


#: Said once in ``--help``: how list-valued options take their values.
LIST_OPTIONS_HELP = (
    "Options that take several values (--participant-label, --session-label, "
    "--tracer-label, --output-spaces, --uptake-window, --reference-region, --cutoff, "
    "--train-epochs) take them space-separated after one flag, or the flag repeated, or "
    "both: '--uptake-window PiB=50-70 AZ-10419369=20-60' is '--uptake-window PiB=50-70 "
    "--uptake-window AZ-10419369=20-60'. Give them after the three positional arguments. "
    "TRACER is a tracer as the sidecar's TracerName or the file's trc- label spells it, "
    "case and punctuation aside ('[11C]PiB', '18F-AV45', 'AZ-10419369'); quote names with "
    "brackets or spaces."
)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Argparse's help with defaults, never breaking a line inside ``--an-option``."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text, width, indent):
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent,
                             subsequent_indent=indent, break_on_hyphens=False)


def _label(value: str) -> str:
    label = value.removeprefix("sub-").removeprefix("ses-").removeprefix("trc-")
    if not label or not (label.isascii() and label.isalnum()):  # BIDS: [a-zA-Z0-9], not "٣"
        raise argparse.ArgumentTypeError(f"a BIDS label is alphanumeric: {value}")
    return label


def _uptake_window(value: str) -> tuple[str, list[float]]:
    """``[ses-LABEL:]TRACER=START-END`` in minutes after injection.

    >>> _uptake_window("ses-petmr:florbetaben=130-150")
    ('ses-petmr:florbetaben', [130.0, 150.0])
    >>> _uptake_window("AZ-10419369=20-60")  # TRACER is free text, as TracerName spells it
    ('AZ-10419369', [20.0, 60.0])
    """
    try:
        key, equals, span = value.rpartition("=")
        if not equals:
            raise ValueError(value)
        start, end = (float(v) for v in span.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected [ses-LABEL:]TRACER=START-END in minutes (e.g. PiB=50-70 or "
            f"ses-petmr:florbetaben=130-150): {value!r}"
        ) from None
    scope, _, tracer = key.rpartition(":")
    if not tracer.strip() or (scope and not scope.removeprefix("ses-").isalnum()):
        raise argparse.ArgumentTypeError(f"expected [ses-LABEL:]TRACER=START-END: {value!r}")
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        raise argparse.ArgumentTypeError(f"window start must be >= 0 and before its end: "
                                         f"{value!r}")
    key = f"ses-{scope.removeprefix('ses-')}:{tracer}" if scope else tracer
    return key, [start, end]


def _reference_region(value: str) -> tuple[str, str]:
    """``TRACER=REGION`` (a region or composite of the atlas), or ``TRACER=none``.

    >>> _reference_region("[11C]UCB-J=centrum_semiovale")
    ('[11C]UCB-J', 'centrum_semiovale')
    """
    tracer, _, region = value.rpartition("=")
    if not tracer.strip() or not region.strip() or any(c.isspace() for c in region):
        raise argparse.ArgumentTypeError(
            f"expected TRACER=REGION or TRACER=none (e.g. UCBJ=centrum_semiovale): {value!r}")
    return tracer, region


def _cutoff(value: str) -> tuple[str, float]:
    """``TRACER=VALUE``.

    >>> _cutoff("18F-AV45=1.11")
    ('18F-AV45', 1.11)
    """
    try:
        tracer, equals, number = value.rpartition("=")
        if not equals or not tracer.strip():
            raise ValueError(value)
        return tracer, float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TRACER=VALUE (e.g. PiB=24.1): {value}") from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bids_harmonize``."""
    parser = argparse.ArgumentParser(
        prog="bids_harmonize",
        description=(
            "Harmonize PET-MR brain PET towards PET-CT for any tracer: a BIDS App. "
            "Run 'participant' on every subject, then 'group'; 'train' fits a site's own model "
            "on paired PET-CT/PET-MR sessions that 'participant' has processed."
        ),
        epilog=LIST_OPTIONS_HELP,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("bids_dir", type=existing_dir, help="the root of the BIDS dataset")
    parser.add_argument(
        "output_dir", type=lambda v: Path(v).expanduser().absolute(),
        help="where the BIDS-Derivatives go (created when missing)",
    )
    parser.add_argument(
        "analysis_level", choices=ANALYSIS_LEVELS,
        help="processing stage. 'group' exits 0 once its tables are written, also when "
             "subjects are left out of the paired PET-MR vs PET-CT comparisons (no PET-CT, a "
             "failed harmonization): one warning line per such subject on stderr, and "
             "group/left_out.tsv and the group report list them with the reason",
    )
    parser.add_argument("--version", action="version", version=f"bids_harmonize {__version__}")

    bids = parser.add_argument_group("Selecting data")
    bids.add_argument(
        "--participant-label", "--participant_label", action=_ListAction, type=_label, default=[],
        metavar="LABEL", help="subjects to process, with or without 'sub-' (default: all)",
    )
    bids.add_argument(
        "--session-label", action=_ListAction, type=_label, default=[], metavar="LABEL",
        help="PET sessions to process, with or without 'ses-' (default: all)",
    )
    bids.add_argument(
        "--tracer-label", action=_ListAction, type=_label, default=[], metavar="LABEL",
        help="tracers (BIDS trc- labels) to process (default: all)",
    )
    bids.add_argument(
        "--bids-filter-file", type=_bids_filter_file, metavar="JSON",
        help="a JSON of pybids filters per query ('t1w', 'pet', 'ct'), as in fMRIPrep",
    )
    bids.add_argument(
        "--skip-bids-validation", action="store_true",
        help="do not run the BIDS validator on the input dataset",
    )
    bids.add_argument(
        "--platform-map", type=_platform_map, metavar="TSV",
        help="TSV with columns 'key' and 'platform' (PET-MR, PET-CT, or PET for a PET-only "
        "scanner with transmission attenuation correction: never harmonized); key is a session "
        "('ses-petmr'), a subject and session ('sub-01_ses-petmr') or a scanner model name. "
        "Wins over inference from the sidecars and the scanner table "
        "(bids_harmonize/data/scanners.tsv)",
    )

    proc = parser.add_argument_group("Processing")
    proc.add_argument(
        "--output-spaces", action=_ListAction, default=list(DEFAULT_OUTPUT_SPACES), metavar="SPACE",
        help="T1w and/or TemplateFlow templates (read from TEMPLATEFLOW_HOME, never downloaded)",
    )
    proc.add_argument(
        "--uptake-window", action=_ListAction, type=_uptake_window, default=[],
        metavar="TRACER=START-END",
        help="override a tracer's uptake window in minutes after injection (several: "
        "'PiB=50-70 FDG=30-60'); "
        "'ses-LABEL:TRACER=START-END' sets one session's window (e.g. the later scan of a "
        "same-day pair); a tracer named in no table runs with the window given here",
    )
    proc.add_argument(
        "--window-policy", choices=("strict", "nearest"), default="strict",
        help="frames that do not cover the uptake window: 'strict' refuses the series, "
        "'nearest' averages the nearest span of the same length that the frames cover "
        "(the window used is in the sidecar's TimeWindow)",
    )
    proc.add_argument(
        "--common-resolution", type=_resolution_mm, metavar="MM",
        help="smooth every PET (PET-CT and PET-MR) to this common effective resolution "
        "(FWHM, mm; e.g. 8, as ADNI and AMYPAD do) before registration, harmonization and "
        "quantification, from each scanner's effective resolution "
        "(bids_harmonize/data/scanner_resolution.tsv or --scanner-resolution); recorded in "
        "the sidecars (ResolutionHarmonization) and the methods text; off by default",
    )
    proc.add_argument(
        "--scanner-resolution", action=_ListAction, type=_scanner_resolution, default=[],
        metavar="MODEL=MM",
        help="effective resolution (FWHM, mm) of a scanner model as reconstructed, for "
        "--common-resolution; overrides the built-in table (several: "
        "'Biograph 64=6.5' 'Discovery 690=5.3')",
    )
    proc.add_argument(
        "--tracer-file", type=_existing_file, metavar="YAML",
        help="a tracer table with the schema of the built-in one (bids_harmonize/data/"
        "tracers.yaml), validated; its tracers add to (and override) the built-in ones",
    )
    proc.add_argument(
        "--reference-region", action=_ListAction, type=_reference_region, default=[],
        metavar="TRACER=REGION",
        help="reference region of a tracer named in no table ('none': regional means only, "
        "no SUVR); such a tracer gets no tracer-specific measures (several: 'A=REGION B=none')",
    )
    proc.add_argument(
        "--model-dir", type=lambda v: Path(v).expanduser().absolute(), metavar="DIR",
        help="participant: harmonization model to use (default: the demo model shipped in the "
        "package); train: where the new model is written (default: <output_dir>/models/site)",
    )
    proc.add_argument(
        "--no-harmonization", action="store_true",
        help="preprocess and quantify only; do not run the harmonizer",
    )
    proc.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto",
        help="where the harmonizer runs; 'auto' uses CUDA when present",
    )
    proc.add_argument(
        "--ood-policy", choices=("warn", "passthrough", "fail"), default="warn",
        help="what a PET-MR image outside the model's training distribution (unknown "
        "attenuation-correction setup, scanner or tracer family, unusual image, ensemble "
        "disagreement) gets: 'warn' harmonizes it and warns, 'passthrough' writes it "
        "unchanged as the harmonized image, 'fail' fails that subject; the decision and its "
        "score are in the harmonized PET's sidecar",
    )
    proc.add_argument(
        "--sloppy", action="store_true",
        help="fast, low-accuracy registration settings (for tests and demos only)",
    )
    proc.add_argument("--seed", type=int, default=0, help="random seed for registration and training")

    quant = parser.add_argument_group("Quantification")
    quant.add_argument(
        "--atlas", default="synth", metavar="NAME|NIFTI",
        help="regional atlas in template space: 'synth' (the simulator's labels), or a NIfTI "
        "with --atlas-labels",
    )
    quant.add_argument(
        "--atlas-labels", type=_existing_file, metavar="TSV",
        help="label table (columns 'index', 'name') of an --atlas NIfTI",
    )
    quant.add_argument(
        "--centiloid-vois", type=existing_dir, metavar="DIR",
        help="folder with the GAAIN Centiloid VOIs (voi_ctx_2mm.nii.gz, voi_WhlCbl_2mm.nii.gz, ...)",
    )
    quant.add_argument(
        "--cutoff", action=_ListAction, type=_cutoff, default=[], metavar="TRACER=VALUE",
        help="positivity cut-off for the group level (e.g. PiB=24.1 Centiloid; several: "
        "'PiB=24.1 18F-AV45=1.11')",
    )

    train = parser.add_argument_group("Training (analysis level 'train')")
    train.add_argument(
        "--train-epochs", action=_ListAction, default=[], metavar="STAGE=N",
        help="epochs per stage: ct, mri, residual (e.g. ct=200)",
    )
    train.add_argument(
        "--train-steps-scale", type=_scale, default=1.0, metavar="X",
        help="multiply the training steps per epoch of every stage (default 1: 40 steps up "
        "to 12 training subjects, in proportion beyond, so each subject is drawn as often; "
        "0.1 for a quick check that training runs, far too little for a useful model)",
    )
    train.add_argument(
        "--train-batch-size", type=positive_int, default=8, metavar="N",
        help="patches per training step of every stage (default 8; 16 on a GPU)",
    )
    train.add_argument(
        "--overwrite-model", action="store_true",
        help="replace the model already in --model-dir (the new one is written aside and "
        "renamed into place when complete; without this option a non-empty --model-dir is "
        "refused)",
    )
    train.add_argument(
        "--train-min-subjects", type=positive_int, default=2,
        help="fewest paired subjects that 'train' accepts",
    )
    train.add_argument(
        "--ensemble-members", type=_non_negative_int, default=3, metavar="N",
        help="stage-3 nets trained besides the model's own, with other seeds: their spread is "
        "the uncertainty map, the regional SDs and part of the out-of-distribution score "
        "(0: no ensemble)",
    )
    train.add_argument(
        "--calibration-subjects", type=_non_negative_int, default=0, metavar="N",
        help="paired subjects held out of training (the last N by label) to calibrate the "
        "ensemble's spread (90 %% intervals cover 90 %% of their regional errors against "
        "PET-CT) and to choose the correction's do-no-harm guard per attenuation-correction "
        "setup; 0: uncalibrated, no guard",
    )
    train.add_argument(
        "--calibrate-model", type=_model_source, default=None, metavar="DIR|demo",
        help="instead of training, calibrate this existing model ('demo': the shipped one) on "
        "the paired subjects of output_dir, which must not be among its training subjects: "
        "its uncertainty scale and its do-no-harm guard are refitted and the calibrated copy "
        "is written to --model-dir (a site with a few paired PET-CT/PET-MR subjects adapts "
        "a model to its scanners this way without retraining)",
    )

    perf = parser.add_argument_group("Resources")
    perf.add_argument(
        "--nprocs", "--n-cpus", type=positive_int, default=os.cpu_count() or 1,
        help="processes Nipype may run at once",
    )
    perf.add_argument(
        "--nipype-plugin", choices=("Linear", "MultiProc", "SLURM", "SLURMGraph"), default=None,
        help="how Nipype runs the graph: in this process (Linear), in --nprocs local processes "
        "(MultiProc; the default when --nprocs > 1), or one SLURM job per node from this "
        "controller process (SLURM: it waits and polls; SLURMGraph: submits the whole graph "
        "with dependencies, then this process waits for the jobs)",
    )
    perf.add_argument(
        "--plugin-args", type=_plugin_args, default={}, metavar="JSON|FILE",
        help='extra Nipype plugin arguments as a JSON object or .json file, e.g. '
        '\'{"sbatch_args": "--partition=short --time=1:00:00"}\' (SLURM: every node job gets '
        "its CPUs and memory plus these sbatch arguments)",
    )
    perf.add_argument(
        "--omp-nthreads", type=positive_int, default=None,
        help="threads per process (default: --nprocs minus 1, at most 8, as in fMRIPrep: "
        "with --nprocs 2 two 1-thread nodes run side by side); 1 makes the ANTs "
        "registrations repeat exactly for a --seed (multi-threaded metric sampling does not)",
    )
    perf.add_argument("--mem", "--mem-gb", dest="mem_gb", type=_positive_float, help="memory cap (GB)")
    perf.add_argument(
        "-w", "--work-dir", type=lambda v: Path(v).expanduser().absolute(),
        help="Nipype working directory; reuse it to resume (default: <output_dir>/../work)",
    )
    perf.add_argument(
        "--stop-on-first-crash", action="store_true",
        help="stop at the first failing node instead of running the other subjects",
    )
    perf.add_argument("--write-graph", action="store_true", help="write the workflow graph (SVG)")
    perf.add_argument(
        "--config-file", type=_existing_file, metavar="TOML",
        help="replay a run from the TOML it wrote to <output_dir>/logs/",
    )
    perf.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv)")
    return parser
