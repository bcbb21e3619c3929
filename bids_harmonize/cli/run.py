"""``bids_harmonize``: the BIDS App entry point. Parses the command line and dispatches to
the analysis levels of :mod:`bids_harmonize.app` (participant, group, train); known problems
end in one line, anything else in one line naming a crash file."""

from __future__ import annotations

import os

# No telemetry, no network at run time: set before nipype is ever imported.
os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# HDF5 file locking: set per process before its first ANTs call, and only where the user
# has not (bids_harmonize.registration.hdf5_file_locking), not switched off for the process

import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from bids_harmonize.__about__ import __version__  # noqa: E402
from bids_harmonize.app.common import UsageError, check_paths, new_run_id, one_line  # noqa: E402
from bids_harmonize.cli.parser import build_parser, default_omp_nthreads  # noqa: E402
from bids_harmonize.config import ConfigError, RunConfig, load_config  # noqa: E402
from bids_harmonize.safeio import DiskFullError  # noqa: E402

LOGGER = logging.getLogger("bids_harmonize")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * (verbose + 1) if verbose < 2 else logging.DEBUG
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("bids_harmonize").setLevel(max(level, logging.DEBUG))
    for noisy in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(noisy).propagate = False  # nipype has its own handler
        if not any(isinstance(f, NoTracebacks) for f in logging.getLogger(noisy).filters):
            logging.getLogger(noisy).addFilter(NoTracebacks())


class NoTracebacks(logging.Filter):
    r"""Nipype's messages without their tracebacks: those are in the crash files.

    Nipype logs "Saving crash info to <file>" followed by the whole traceback, and may
    attach exception information; the terminal gets the text before the traceback.

    >>> record = logging.LogRecord("nipype.workflow", logging.ERROR, "", 0,
    ...     "Saving crash info to %s\n%s", ("/o/crash.txt", "Traceback (most recent "
    ...     "call last):\n  File x\nValueError: boom"), None)
    >>> NoTracebacks().filter(record), record.getMessage()
    (True, 'Saving crash info to /o/crash.txt (traceback in the crash file)')
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is nipype's to print
            return True
        cut = text.find("Traceback (most recent call last)")
        if cut >= 0 or record.exc_info:
            head = (text[:cut] if cut >= 0 else text).rstrip()
            record.msg = f"{head} (traceback in the crash file)"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def config_from_args(args) -> RunConfig:
    """Settings from the command line, or from ``--config-file`` with the positionals on top."""
    if args.config_file:
        try:
            config = load_config(args.config_file)
        except ConfigError as exc:
            raise UsageError(f"--config-file {exc}", status=2) from None
        config.bids_dir, config.output_dir = args.bids_dir, args.output_dir
        config.analysis_level = args.analysis_level
        return config
    epochs = {}
    for item in args.train_epochs:
        stage, _, number = item.partition("=")
        if stage not in ("ct", "mri", "residual") or not number.isdigit():
            raise UsageError(f"--train-epochs expects ct=N, mri=N or residual=N, got {item!r}",
                             status=2)
        epochs[stage] = int(number)
    return RunConfig(
        bids_dir=args.bids_dir, output_dir=args.output_dir, analysis_level=args.analysis_level,
        participant_label=args.participant_label, session_label=args.session_label,
        tracer_label=args.tracer_label, bids_filter_file=args.bids_filter_file,
        skip_bids_validation=args.skip_bids_validation, platform_map=args.platform_map,
        output_spaces=args.output_spaces, model_dir=args.model_dir,
        no_harmonization=args.no_harmonization, device=args.device, ood_policy=args.ood_policy,
        nprocs=args.nprocs,
        nipype_plugin=args.nipype_plugin, plugin_args=args.plugin_args,
        omp_nthreads=args.omp_nthreads or default_omp_nthreads(args.nprocs), mem_gb=args.mem_gb,
        work_dir=args.work_dir, stop_on_first_crash=args.stop_on_first_crash,
        sloppy=args.sloppy, write_graph=args.write_graph, verbose=args.verbose,
        uptake_windows=dict(args.uptake_window), window_policy=args.window_policy,
        common_resolution=args.common_resolution,
        scanner_resolutions=dict(args.scanner_resolution) or None,
        tracer_file=args.tracer_file, reference_regions=dict(args.reference_region),
        atlas=args.atlas,
        atlas_labels=args.atlas_labels, centiloid_vois=args.centiloid_vois,
        cutoffs=dict(args.cutoff), train_epochs=epochs,
        train_min_subjects=args.train_min_subjects, seed=args.seed,
        train_steps_scale=args.train_steps_scale, train_batch_size=args.train_batch_size,
        ensemble_members=args.ensemble_members, calibration_subjects=args.calibration_subjects,
        calibrate_model=args.calibrate_model, overwrite_model=args.overwrite_model,
    )


def write_crash_file(exc: BaseException, config: RunConfig | None, run_id: str) -> Path:
    """Write the traceback of an unexpected error, fMRIPrep style; return the file.

    Under ``<out>/logs/`` when the output folder already exists (a run that failed
    before writing anything does not create it), else in the temporary folder. The file
    is readable by its owner only (mode 0600); in the shared temporary folder it leaves
    out the command line (paths and labels of the study).
    """
    from bids_harmonize.safeio import atomic_write_text

    text = "".join(traceback.format_exception(exc))
    folder = None
    if config is not None and config.output_dir.is_dir() and os.access(config.output_dir,
                                                                         os.W_OK):
        folder = config.output_dir / "logs"
    for candidate in filter(None, (folder, Path(tempfile.gettempdir()))):
        command = (" ".join(sys.argv) if candidate == folder
                   else f"{Path(sys.argv[0]).name} (arguments not written to a shared folder)")
        header = f"bids_harmonize {__version__} crashed (run {run_id})\ncommand: {command}\n\n"
        try:
            return atomic_write_text(candidate / f"crash-{run_id}-bids_harmonize.txt",
                                     header + text, mode=0o600)
        except OSError:
            continue
    raise exc


def dispatch(config: RunConfig, run_id: str) -> int:
    """Run the analysis level the configuration names."""
    if config.analysis_level == "participant":
        from bids_harmonize.app.participant import run_participant

        return run_participant(config, run_id)
    if config.analysis_level == "group":
        from bids_harmonize.app.group import run_group

        return run_group(config)
    from bids_harmonize.app.train import run_train

    return run_train(config, run_id)


def _terminate(signum, _frame):
    """SIGTERM (SLURM's time limit, ``kill``): unwind so that locks are released."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the BIDS App; return the exit status.

    Known problems end in one line (exit 1, or 2 for bad arguments); anything else
    ends in one line naming a crash file that holds the traceback.
    """
    args = build_parser().parse_args(argv)
    run_id = new_run_id()
    config = None
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        config = config_from_args(args)
        _setup_logging(config.verbose)
        if config.tracer_file is not None:  # the user's tracer table, for every process
            from bids_harmonize.tracers import TracerError, use_tracer_file

            try:
                use_tracer_file(config.tracer_file)
            except TracerError as exc:
                raise UsageError(f"--tracer-file {exc}", status=2) from None
        check_paths(config)
        return dispatch(config, run_id)
    except (UsageError, DiskFullError) as exc:
        print(f"bids_harmonize: error: {one_line(exc)}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("bids_harmonize: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the top-level handler: never a bare traceback
        try:
            crash = write_crash_file(exc, config, run_id)
        except Exception:  # noqa: BLE001 - nowhere to write: the traceback is all there is
            raise exc from None
        print(f"bids_harmonize: error: unexpected {type(exc).__name__}: {one_line(exc)} "
              f"(this is a bug; the traceback is in {crash})", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
