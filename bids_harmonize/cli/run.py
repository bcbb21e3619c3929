"""``bids_harmonize``: the BIDS App entry point (participant, group, train)."""

from __future__ import annotations

import os

# No telemetry, no network at run time: set before nipype is ever imported.
os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# ITK's HDF5 locks .h5 transforms on open: parallel nodes reading one transform then fail
# ("unable to lock file") or crash; reading never needs the lock
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import contextlib  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

from bids_harmonize.__about__ import __version__  # noqa: E402
from bids_harmonize.cli.parser import build_parser  # noqa: E402
from bids_harmonize.config import ConfigError, RunConfig, load_config, save_config  # noqa: E402

LOGGER = logging.getLogger("bids_harmonize")


class UsageError(RuntimeError):
    """A problem the user can fix; reported in one line, exit status 1 (or ``status``)."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def new_run_id() -> str:
    """``YYYYmmdd-HHMMSS_<8 hex>``: names the run's config, crash folders and status records."""
    return time.strftime("%Y%m%d-%H%M%S") + "_" + uuid.uuid4().hex[:8]


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
        omp_nthreads=args.omp_nthreads or max(1, min(args.nprocs, 8)), mem_gb=args.mem_gb,
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
        overwrite_model=args.overwrite_model,
    )


def resolution_checked(plans, excluded: dict, config: RunConfig) -> list:
    """Plans whose every PET scanner has a known effective resolution no coarser than
    ``--common-resolution``; the others join ``excluded`` with one line per problem."""
    from bids_harmonize.resolution import ResolutionError, resolution_record

    kept = []
    for plan in plans:
        problems = []
        for series in plan.pet:
            try:
                resolution_record(series.model_name, config.common_resolution,
                                  config.scanner_resolutions)
            except ResolutionError as exc:
                problems.append(f"{series.path.name}: --common-resolution: {exc}")
        if problems:
            excluded.setdefault(plan.subject, []).extend(problems)
        else:
            kept.append(plan)
    return kept


def check_paths(config: RunConfig) -> None:
    """Refuse outputs inside the input, and unwritable outputs, before anything is written."""
    bids, out = config.bids_dir.resolve(), config.output_dir.resolve()
    if out == bids or bids in out.parents:
        raise UsageError(f"output directory {out} must not be inside the BIDS dataset {bids}")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK):
        raise UsageError(f"output directory {out} is not writable")
    work = (config.work_dir or out / "work").resolve()
    existing = next((p for p in (work, *work.parents) if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK):
        raise UsageError(f"work directory {work} is not writable")


def resolve_model_dir(config: RunConfig) -> Path | None:
    """The model to use: ``--model-dir``, else the packaged demo model; None when disabled."""
    if config.no_harmonization:
        return None
    if config.model_dir is not None:
        return config.model_dir
    from bids_harmonize.harmonizer.weights import default_model_dir

    return default_model_dir()


def check_device(device: str) -> str:
    """Refuse ``cuda`` without a GPU; note a CPU fallback for ``auto``."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA GPU is available")
    if device == "auto" and not torch.cuda.is_available():
        LOGGER.info("No CUDA GPU found: the harmonizer runs on the CPU")
    return device


# --------------------------------------------------------------------------- participant


def run_participant(config: RunConfig, run_id: str | None = None) -> int:
    """Check every input, exclude broken participants, run the graph, record each outcome.

    Nothing is written to the output folder until every check has passed and the
    graph is built. Each participant gets a status record and an "incomplete"
    marker (removed when it finishes) under ``<out>/logs/status``, and a lock
    under ``<out>/logs/locks`` for the duration of the run.
    """
    from bids_harmonize.bids import (
        InputError,
        discover,
        read_bids_filters,
        read_participants,
        read_platform_map,
        validate_bids,
    )
    from bids_harmonize.execution import choose_plugin
    from bids_harmonize.locks import LockHeldError, acquire, acquire_path
    from bids_harmonize.slurm.scheduler import SlurmError
    from bids_harmonize.templates import TemplateNotFoundError, get_template

    run_id = run_id or new_run_id()
    try:  # first: no SLURM for a SLURM plugin is a one-line error before any work
        execution = choose_plugin(config.nipype_plugin, nprocs=config.nprocs,
                                  mem_gb=config.mem_gb, run_id=run_id,
                                  user_args=config.plugin_args)
    except (SlurmError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    templates = config.template_spaces
    if len(templates) != 1:
        raise UsageError(
            f"--output-spaces needs exactly one template besides T1w (got {templates or 'none'})"
        )
    try:
        template = get_template(templates[0], resolution=2)
    except TemplateNotFoundError as exc:
        raise UsageError(str(exc)) from None
    model_dir = resolve_model_dir(config)
    if model_dir is not None:
        from bids_harmonize.harmonizer.weights import ModelError, load_model

        try:
            load_model(model_dir)
        except ModelError as exc:
            raise UsageError(str(exc)) from None
        check_device(config.device)
    try:
        bids_filters = read_bids_filters(config.bids_filter_file)
        platform_map = read_platform_map(config.platform_map)
        if not config.skip_bids_validation:
            validate_bids(config.bids_dir)
        read_participants(config.bids_dir)
        found = discover(
            config.bids_dir, participant_label=config.participant_label,
            session_label=config.session_label, tracer_label=config.tracer_label,
            bids_filters=bids_filters, platform_map=platform_map,
            uptake_windows=config.uptake_windows, window_policy=config.window_policy,
            reference_regions=config.references(),
        )
    except InputError as exc:
        raise UsageError(str(exc)) from None
    excluded = dict(found.excluded)
    plans = found.plans
    if config.common_resolution:
        plans = resolution_checked(plans, excluded, config)
    if excluded and config.stop_on_first_crash:
        raise UsageError(f"--stop-on-first-crash: {_excluded_summary(excluded)}; nothing was run")
    if not plans:
        raise UsageError("no participant can be processed: "
                         + "; ".join(filter(None, [_excluded_summary(excluded),
                                                   "; ".join(found.skipped)])))

    out = config.output_dir
    out_existed = out.exists()
    work = config.work_dir or out / "work"
    work_existed = work.exists()
    held, locks = {}, []
    for plan in plans:
        try:
            locks.append(acquire(out, plan.subject, run_id=run_id))
            # the work folder too: two runs with different output folders may share it
            locks.append(acquire_path(work / WORK_LOCK_DIR / f"sub-{plan.subject}.lock",
                                      f"sub-{plan.subject} in work folder {work}",
                                      run_id=run_id))
        except LockHeldError as exc:
            LOGGER.error("%s", exc)
            held[plan.subject] = str(exc)
    try:
        if held and config.stop_on_first_crash:
            raise UsageError(f"--stop-on-first-crash: {next(iter(held.values()))}")
        plans = [p for p in plans if p.subject not in held]
        if not plans:
            raise UsageError("no participant can be processed: " + "; ".join(held.values()))
        try:
            return _run_plans(config, plans, excluded, held, found.skipped, run_id=run_id,
                              execution=execution, template=template, model_dir=model_dir)
        except BaseException as exc:  # never leave a participant recorded as running
            from bids_harmonize.runstatus import fail_running

            fail_running(out, [p.subject for p in plans], run_id=run_id,
                         reason=f"the run ended abnormally ({type(exc).__name__}: "
                                f"{_one_line(exc)})")
            raise
    finally:
        for lock in locks:
            lock.release()
        for folder in (work / WORK_LOCK_DIR, *(() if work_existed else (work,))):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        _remove_empty_folders(out, out_existed)


class Progress:
    """Nipype ``status_callback``: a log line when a participant's stage has finished every
    node (a rerun that finds everything cached says so too), and each participant's own time.

    A stage is a sub-workflow of the subject's workflow (``anat_wf``, ``pet_<key>_wf``, ...).
    A participant's own time is the sum of its nodes' run times (from "start" to "end";
    a node found cached on the local plugins gets no "start": 0 s), so participants run in
    parallel do not each get the whole run's time. Plain data only: Nipype deep-copies and
    pickles the plugin arguments along with MapNodes.
    """

    def __init__(self, workflow, subjects):
        from nipype.interfaces.utility import IdentityInterface
        from nipype.pipeline.engine import JoinNode

        self.expected: dict[tuple[str, str], int] = {}
        for subject in subjects:
            sub_wf = workflow.get_node(f"sub_{subject}_wf")
            for child in sub_wf._graph.nodes():
                nodes = child._get_all_nodes() if hasattr(child, "_get_all_nodes") else [child]
                count = sum(1 for n in nodes if not (isinstance(n.interface, IdentityInterface)
                                                     and not isinstance(n, JoinNode)))
                if count:
                    self.expected[(subject, child.name)] = count
        self.done: dict[tuple[str, str], int] = {}
        self.started: dict[int, float] = {}
        self.busy: dict[str, float] = dict.fromkeys(subjects, 0.0)
        self.t0 = time.time()

    @staticmethod
    def where(node) -> tuple[str | None, str | None]:
        """(participant, stage) of a node of the flattened graph, from its hierarchy; a
        MapNode's sub-node (no hierarchy) by its work folder, without a stage."""
        parts = str(getattr(node, "_hierarchy", None) or "").split(".")
        if len(parts) >= 2 and parts[1].startswith("sub_") and parts[1].endswith("_wf"):
            return parts[1][4:-3], (parts[2] if len(parts) > 2 else node.name)
        folder = Path(str(getattr(node, "base_dir", None) or ""))
        sub = next((p for p in folder.parts if p.startswith("sub_") and p.endswith("_wf")), None)
        return (sub[4:-3] if sub else None), None

    def __call__(self, node, status: str) -> None:
        subject, stage = self.where(node)
        if subject is None:
            return
        name = id(node)  # the plugins pass the same node object to "start" and "end"
        now = time.time()
        if status == "start":
            self.started[name] = now
            return
        if name in self.started:
            self.busy[subject] = self.busy.get(subject, 0.0) + now - self.started.pop(name)
        key = (subject, stage)
        if stage is None or key not in self.expected:
            return
        self.done[key] = self.done.get(key, 0) + 1
        if self.done[key] != self.expected[key]:
            return
        stages = [k for k in self.expected if k[0] == subject]
        finished = sum(1 for k in stages if self.done.get(k, 0) >= self.expected[k])
        LOGGER.info("sub-%s: %s finished (%d node(s)%s); %d of %d stage(s) done, %.0f s into "
                    "the run", subject, stage, self.expected[key],
                    ", with a failure" if status == "exception" else "", finished,
                    len(stages), now - self.t0)

    def own_time(self, subject: str) -> float | None:
        """The participant's own time (seconds), None when none of its nodes reported."""
        return self.busy.get(subject)


def _own_time(record: dict, progress: Progress | None) -> dict:
    """The record with ``runtime_s`` the participant's own time when it was measured (else
    the time from the start of the run, as :func:`runstatus.finish_record` sets it)."""
    own = progress.own_time(record["participant"]) if progress is not None else None
    return {**record, "runtime_s": round(own, 1)} if own is not None else record


#: Per-participant locks of a work folder (``<work>/.bids_harmonize-locks``).
WORK_LOCK_DIR = ".bids_harmonize-locks"


def _remove_empty_folders(out: Path, out_existed: bool) -> None:
    """Undo the lock folders of a run that stopped before writing anything."""
    for folder in (out / "logs" / "locks", out / "logs", *(() if out_existed else (out,))):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break


def _excluded_summary(excluded: dict[str, list[str]]) -> str:
    """``2 participant(s) excluded: sub-02 (reason; ...), sub-03 (...)`` in one line."""
    if not excluded:
        return ""
    parts = [f"sub-{s} ({reasons[0]}{f'; +{len(reasons) - 1} more' if len(reasons) > 1 else ''})"
             for s, reasons in sorted(excluded.items())]
    return f"{len(excluded)} participant(s) excluded for unusable inputs: " + ", ".join(parts)


def _crash_reason(path: Path) -> str:
    """One line from a Nipype crash file: the node and the last line of its traceback."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return f"crashed: {path.name}"
    node = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Node:")),
                path.name)
    last = next((line for line in reversed(lines) if line and not line.startswith("File ")), "")
    return f"node {node} failed: {last[:200]}" if last else f"node {node} failed"


def _run_plans(config: RunConfig, plans, excluded, held, skipped, *, run_id, execution,
               template, model_dir) -> int:
    """Build the graph, then write, run and record; the participants' locks are held."""
    from nipype import config as ncfg

    from bids_harmonize import runstatus
    from bids_harmonize.execution import request_node_resources, run_workflow, unfinished_nodes
    from bids_harmonize.provenance import write_dataset_description
    from bids_harmonize.workflows.base import init_bids_harmonize_wf

    out = config.output_dir
    work = config.work_dir or out / "work"
    # Nipype's settings first: nodes take them when they are created (crash file format)
    ncfg.update_config({
        "execution": {"crashfile_format": "txt", "stop_on_first_crash": config.stop_on_first_crash,
                      "remove_unnecessary_outputs": False, "hash_method": "timestamp",
                      # SLURM: each poll runs squeue once per queued job
                      "poll_sleep_duration": 2 if execution.on_slurm else 0.2,
                      "crashdump_dir": str(out / "logs" / "crash")},
        "monitoring": {"enabled": False},
        # node-by-node progress from the engine; interface chatter only with -v
        "logging": {"workflow_level": "INFO",
                    "interface_level": "INFO" if config.verbose else "WARNING",
                    "utils_level": "INFO" if config.verbose else "WARNING"},
    })
    from nipype import logging as nlogging

    nlogging.update_logging(ncfg)
    # the graph is built before anything is written: a factory error leaves no outputs
    workflow = init_bids_harmonize_wf(
        plans, bids_dir=config.bids_dir, output_dir=out, template=template, model_dir=model_dir,
        device=config.device, sloppy=config.sloppy, seed=config.seed,
        omp_nthreads=config.omp_nthreads, uptake_windows=config.uptake_windows,
        window_policy=config.window_policy,
        atlas=config.atlas, atlas_labels=config.atlas_labels,
        centiloid_vois=config.centiloid_vois, ood_policy=config.ood_policy,
        **({"common_resolution": config.common_resolution,
            "scanner_resolutions": config.scanner_resolutions}
           if config.common_resolution else {}),
    )
    records = {}
    for plan in plans:
        runstatus.mark_incomplete(out, plan.subject, run_id=run_id)
        records[plan.subject] = runstatus.new_record(plan.subject, run_id=run_id)
        runstatus.write_status(out, records[plan.subject])
    for subject, reasons in excluded.items():
        record = runstatus.new_record(subject, run_id=run_id, status="excluded", reasons=reasons)
        runstatus.write_status(out, runstatus.finish_record(record, "excluded"))
    write_dataset_description(out, config.bids_dir)
    config_file = save_config(config, out / "logs" / f"config-{run_id}.toml")
    LOGGER.info("Settings written to %s (replay with --config-file)", config_file)
    workflow.base_dir = str(work)
    for plan in plans:  # per-subject crash folders
        crash_dir = str(out / f"sub-{plan.subject}" / "log" / run_id)
        for node in workflow.get_node(f"sub_{plan.subject}_wf")._get_all_nodes():
            node.config = {"execution": {"crashdump_dir": crash_dir}}
    if config.write_graph:
        try:
            workflow.write_graph(graph2use="colored", format="svg", simple_form=True)
        except OSError as exc:  # graphviz's 'dot' is not installed: the .dot file is there
            LOGGER.warning("Workflow graph written as .dot only under %s (%s)", work, exc)
    LOGGER.info("Running %d subject(s) (%s); skipped: %s", len(plans),
                ", ".join(f"sub-{p.subject}" for p in plans), skipped or "none")
    request_node_resources(workflow, execution)
    progress = None
    if execution.plugin != "SLURMGraph":  # Nipype's graph plugins take no status callback
        progress = Progress(workflow, [p.subject for p in plans])
        execution.plugin_args = {**execution.plugin_args, "status_callback": progress}
    started = time.time()
    error = run_workflow(workflow, execution)
    elapsed = time.time() - started

    crashes = {p.subject: sorted((out / f"sub-{p.subject}" / "log" / run_id).glob("crash-*"))
               for p in plans}
    failed = {s for s, files in crashes.items() if files}
    unfinished = []
    if error is not None:
        unfinished = unfinished_nodes(workflow)
        LOGGER.error("Nipype stopped with %s: %s", type(error).__name__,
                     str(error).strip().splitlines()[0] if str(error).strip() else "(no message)")
        if unfinished:
            LOGGER.error("%d node(s) did not finish: %s%s", len(unfinished),
                         ", ".join(unfinished[:10]), " ..." if len(unfinished) > 10 else "")
        failed |= {p.subject for p in plans
                   if any(n.split(".")[1:2] == [f"sub_{p.subject}_wf"] for n in unfinished)}
        failed = failed or {p.subject for p in plans}
    for plan in plans:
        record = records[plan.subject]
        if plan.subject in failed:
            files = crashes[plan.subject]
            reasons = [_crash_reason(f) for f in files] or [
                "the workflow did not finish for this participant"
                + (f" ({type(error).__name__})" if error is not None else "")]
            record = runstatus.finish_record(
                record, "failed", reasons=reasons,
                crash_files=[f.relative_to(out).as_posix() for f in files])
            runstatus.write_status(out, _own_time(record, progress))
            if files:  # nodes failed and the run went on: every file written is whole
                runstatus.clear_incomplete(out, plan.subject)
        else:
            record = runstatus.finish_record(record, "ok")
            runstatus.write_status(out, _own_time(record, progress))
            runstatus.clear_incomplete(out, plan.subject)
    failed = sorted(failed)
    _write_reports(out, plans, workflow, failed, run_id)
    LOGGER.info("Participant level finished in %.0f s", elapsed)
    if skipped:
        print("Skipped: " + "; ".join(skipped), file=sys.stderr)
    problems = []
    if excluded:
        problems.append(_excluded_summary(excluded))
    if held:
        problems.append(f"{len(held)} participant(s) locked by another run: "
                        + ", ".join(f"sub-{s}" for s in sorted(held)))
    if failed:
        problems.append(f"{len(failed)} of {len(plans)} subject(s) failed: "
                        + ", ".join(f"sub-{s} (see {out / f'sub-{s}' / 'log' / run_id})"
                                    for s in failed))
    if problems:
        print("bids_harmonize: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


def _write_reports(out: Path, plans, workflow, failed: list[str], run_id: str) -> None:
    from bids_harmonize.reports.boilerplate import (
        boilerplate_from,
        collect_descriptions,
        write_citation_files,
    )
    from bids_harmonize.reports.subject import build_subject_report

    try:
        boilerplate = boilerplate_from(collect_descriptions(workflow))
    except Exception:  # descriptions are a courtesy; never fail a run on them
        LOGGER.warning("Methods boilerplate could not be collected", exc_info=True)
        boilerplate = boilerplate_from([])
    write_citation_files(out / "logs", boilerplate)
    for plan in plans:
        errors = []
        if plan.subject in failed:
            crash_dir = out / f"sub-{plan.subject}" / "log" / run_id
            errors = [f"crashed: {c.name}" for c in sorted(crash_dir.glob("crash-*"))]
            errors = errors or ["the workflow did not finish for this subject"]
        build_subject_report(out, plan.subject, boilerplate=boilerplate, errors=errors)
    _write_run_summary(out)


def _write_run_summary(out: Path) -> None:
    """``<out>/index.html``: every participant's status and report (never fails a run)."""
    from bids_harmonize.reports.runsummary import write_run_summary

    try:
        write_run_summary(out)
    except Exception:
        LOGGER.warning("Run summary %s could not be written", out / "index.html", exc_info=True)


# --------------------------------------------------------------------------- group, train


def run_group(config: RunConfig) -> int:
    """Group tables, agreement statistics and the group report from participant outputs."""
    from bids_harmonize.group.collect import NoParticipantTablesError
    from bids_harmonize.group.run import run_group as group

    if not config.output_dir.is_dir():
        raise UsageError(f"{config.output_dir} does not exist: run the participant level first")
    incomplete = _warn_incomplete(config.output_dir, "group")
    try:
        written = group(config.output_dir, cutoffs=config.cutoffs or None)
    except (NoParticipantTablesError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    LOGGER.info("Group level wrote %d file(s) under %s", len(written), config.output_dir / "group")
    _write_run_summary(config.output_dir)
    if incomplete:
        print("bids_harmonize: group tables leave out incomplete participant(s): "
              + ", ".join(f"sub-{s}" for s in incomplete), file=sys.stderr)
    return 0


def _warn_incomplete(out: Path, level: str) -> list[str]:
    """Participants marked incomplete (a run started them and never finished), logged."""
    from bids_harmonize.runstatus import incomplete_participants

    incomplete = incomplete_participants(out)
    if incomplete:
        LOGGER.warning("%s: leaving out %d participant(s) whose outputs are marked incomplete "
                       "(a run did not finish them; rerun 'participant' for them): %s", level,
                       len(incomplete), ", ".join(f"sub-{s}" for s in incomplete))
    return incomplete


def run_train(config: RunConfig, run_id: str | None = None) -> int:
    """Train the three-stage harmonizer on the paired sessions that 'participant' processed.

    Participants marked incomplete are left out (and listed). The model is trained in
    ``.<name>.partial/<name>`` next to ``--model-dir`` (checkpoints there: a rerun resumes)
    and renamed into place only when complete, so a kill never leaves a half-written
    model and never destroys the previous one. A non-empty ``--model-dir`` is refused
    unless ``--overwrite-model`` is given.
    """
    import torch

    from bids_harmonize.harmonizer.dataset import (
        InsufficientDataError,
        load_pairs_from_derivatives,
    )
    from bids_harmonize.harmonizer.train import train_model
    from bids_harmonize.locks import LockHeldError, acquire_path

    run_id = run_id or new_run_id()
    check_device(config.device)
    torch.set_num_threads(max(1, config.omp_nthreads))
    model_dir = (config.model_dir or config.output_dir / "models" / "site").absolute()
    if model_dir.exists() and (not model_dir.is_dir() or any(model_dir.iterdir())):
        if not config.overwrite_model:
            raise UsageError(f"--model-dir {model_dir} is not empty: choose another folder or "
                             "pass --overwrite-model to replace it", status=2)
        if not (model_dir / "model.json").is_file():
            raise UsageError(f"--model-dir {model_dir} is not empty and holds no model.json: "
                             "refusing to replace a folder that is not a model")
    labels = list(config.participant_label)
    incomplete = _warn_incomplete(config.output_dir, "train")
    if incomplete:
        if not labels:
            labels = sorted(p.name.removeprefix("sub-") for p in config.output_dir.glob("sub-*")
                            if p.is_dir())
        labels = [label for label in labels if label not in incomplete]
        if not labels:
            raise UsageError("every selected participant is marked incomplete: "
                             + ", ".join(f"sub-{s}" for s in incomplete))
    try:
        pairs, excluded = load_pairs_from_derivatives(
            config.output_dir, participant_labels=labels or None,
            tracers=config.tracer_label or None, min_pairs=config.train_min_subjects,
            atlas=config.atlas, atlas_labels=config.atlas_labels,
        )
    except InsufficientDataError as exc:
        raise UsageError(str(exc)) from None
    for what, why in excluded:
        LOGGER.warning("Not used for training: %s (%s)", what, why)
    train_config = _train_config(config)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    # Under torchrun every process runs this; rank 0 alone owns the folder (lock, ensemble,
    # renaming into place), the others join the distributed stages and stop there.
    rank = torchrun_rank()
    try:
        lock = acquire_path(model_dir.parent / f".{model_dir.name}.lock",
                            f"model folder {model_dir}", run_id=run_id) if rank == 0 else None
    except LockHeldError as exc:
        raise UsageError(str(exc)) from None
    try:
        staging = model_dir.parent / f".{model_dir.name}.partial"
        partial = staging / model_dir.name  # same folder name: the card names the model by it
        train_pairs, calibration_pairs = split_calibration(pairs, config.calibration_subjects)
        train_model(train_pairs, partial, train_config, device=config.device)
        if rank != 0:
            return 0
        if config.ensemble_members > 0:
            from bids_harmonize.harmonizer.uncertainty import fit_uncertainty

            with single_process_env():  # members are trained in one process, by design
                fit_uncertainty(partial, train_pairs, validation_pairs=calibration_pairs,
                                n_members=config.ensemble_members, device=config.device)
        # checkpoints only serve a resumed run of this training; the model ships without them
        shutil.rmtree(partial / "checkpoints", ignore_errors=True)
        install_model(partial, model_dir, run_id=run_id)
        shutil.rmtree(staging, ignore_errors=True)
    finally:
        if lock is not None:
            lock.release()
    print(f"model written to {model_dir}")
    return 0


def torchrun_rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 otherwise.

    >>> import os; os.environ.pop("RANK", None) and None; torchrun_rank()
    0
    """
    return int(os.environ.get("RANK", "0") or 0)


@contextlib.contextmanager
def single_process_env():
    """Hide torchrun's variables for a step that runs in this one process only.

    >>> os.environ["WORLD_SIZE"] = "2"
    >>> with single_process_env():
    ...     os.environ.get("WORLD_SIZE")
    >>> os.environ.pop("WORLD_SIZE")
    '2'
    """
    names = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def split_calibration(pairs, n_subjects: int):
    """Training pairs and the pairs of the last ``n_subjects`` subjects (held out to
    calibrate the ensemble); a usage error when fewer than two subjects would remain."""
    subjects = sorted({p.subject for p in pairs})
    if n_subjects <= 0:
        return pairs, []
    if len(subjects) - n_subjects < 2:
        raise UsageError(f"--calibration-subjects {n_subjects} leaves {len(subjects) - n_subjects} "
                         f"of {len(subjects)} subjects for training (at least 2 needed)", status=2)
    held = set(subjects[-n_subjects:])
    LOGGER.info("held out for calibration: %s", ", ".join(f"sub-{s}" for s in sorted(held)))
    return [p for p in pairs if p.subject not in held], [p for p in pairs if p.subject in held]


def install_model(partial: Path, model_dir: Path, *, run_id: str) -> None:
    """Rename a finished model folder into place; an old model is moved aside, then removed."""
    old = None
    if model_dir.exists() and any(model_dir.iterdir()):
        old = model_dir.parent / f".{model_dir.name}.old-{run_id}"
        os.replace(model_dir, old)
    elif model_dir.exists():
        model_dir.rmdir()
    os.replace(partial, model_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _train_config(config: RunConfig):
    from bids_harmonize.harmonizer.config import HarmonizerConfig

    stages = {"ct": "stage1", "mri": "stage2", "residual": "stage3"}
    changes = {stages[k]: {"epochs": v} for k, v in config.train_epochs.items()}
    base = HarmonizerConfig.site(steps_scale=config.train_steps_scale,
                                 batch_size=config.train_batch_size)
    return base.replace(seed=config.seed, **changes)


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
        if config.analysis_level == "participant":
            return run_participant(config, run_id)
        if config.analysis_level == "group":
            return run_group(config)
        return run_train(config, run_id)
    except UsageError as exc:
        print(f"bids_harmonize: error: {_one_line(exc)}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("bids_harmonize: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the top-level handler: never a bare traceback
        try:
            crash = write_crash_file(exc, config, run_id)
        except Exception:  # noqa: BLE001 - nowhere to write: the traceback is all there is
            raise exc from None
        print(f"bids_harmonize: error: unexpected {type(exc).__name__}: {_one_line(exc)} "
              f"(this is a bug; the traceback is in {crash})", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:500] if text else type(exc).__name__


if __name__ == "__main__":
    raise SystemExit(main())
