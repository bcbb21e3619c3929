"""The participant level: pre-flight checks, plan, graph, run, record.

:func:`run_participant` checks everything that can be checked before work starts
(execution plugin, template, model, inputs), plans every participant once
(:func:`bids_harmonize.app.plan.plan`), takes the participants' locks and hands over to
:func:`run_plans`, which builds the graph from the plans, writes, runs and records
(:mod:`bids_harmonize.app.record`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from bids_harmonize.app import record
from bids_harmonize.app.common import UsageError, check_device, new_run_id, one_line
from bids_harmonize.app.plan import Plan, Settings, plan
from bids_harmonize.config import RunConfig, save_config

LOGGER = logging.getLogger("bids_harmonize")

#: Per-participant locks of a work folder (``<work>/.bids_harmonize-locks``).
WORK_LOCK_DIR = ".bids_harmonize-locks"


def run_participant(config: RunConfig, run_id: str | None = None) -> int:
    """Check every input, exclude broken participants, run the graph, record each outcome.

    Nothing is written to the output folder until every check has passed and the
    graph is built. Each participant gets a status record and an "incomplete"
    marker (removed when it finishes) under ``<out>/logs/status``, and a lock
    under ``<out>/logs/locks`` for the duration of the run.
    """
    from bids_harmonize.bids import InputError

    run_id = run_id or new_run_id()
    execution = choose_execution(config, run_id)
    settings = Settings.from_config(config, template=output_template(config),
                                    model_dir=checked_model_dir(config))
    found = discover_inputs(config)
    try:
        planned = plan(found.plans, settings)
    except InputError as exc:
        raise UsageError(str(exc)) from None
    excluded = {**found.excluded, **planned.excluded}
    plans = list(planned.participants)
    if excluded and config.stop_on_first_crash:
        raise UsageError(f"--stop-on-first-crash: {record.excluded_summary(excluded)}; "
                         "nothing was run")
    if not plans:
        raise UsageError("no participant can be processed: "
                         + "; ".join(filter(None, [record.excluded_summary(excluded),
                                                   "; ".join(found.skipped)])))
    out = config.output_dir
    out_existed = out.exists()
    work = config.work_dir or out / "work"
    work_existed = work.exists()
    held, locks = take_locks(plans, out, work, run_id=run_id)
    try:
        if held and config.stop_on_first_crash:
            raise UsageError(f"--stop-on-first-crash: {next(iter(held.values()))}")
        plans = [p for p in plans if p.subject not in held]
        if not plans:
            raise UsageError("no participant can be processed: " + "; ".join(held.values()))
        try:
            return run_plans(config, plans, excluded, held, found.skipped, run_id=run_id,
                             execution=execution, settings=settings)
        except BaseException as exc:  # never leave a participant recorded as running
            from bids_harmonize.runstatus import fail_running

            fail_running(out, [p.subject for p in plans], run_id=run_id,
                         reason=f"the run ended abnormally ({type(exc).__name__}: "
                                f"{one_line(exc)})")
            raise
    finally:
        for lock in locks:
            lock.release()
        for folder in (work / WORK_LOCK_DIR, *(() if work_existed else (work,))):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
        _remove_empty_folders(out, out_existed)


# --------------------------------------------------------------------------- pre-flight


def choose_execution(config: RunConfig, run_id: str):
    """The Nipype plugin; first, so that SLURM without SLURM is one line before any work."""
    from bids_harmonize.execution import choose_plugin
    from bids_harmonize.slurm.scheduler import SlurmError

    try:
        return choose_plugin(config.nipype_plugin, nprocs=config.nprocs, mem_gb=config.mem_gb,
                             run_id=run_id, user_args=config.plugin_args)
    except (SlurmError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def output_template(config: RunConfig):
    """The output template's files (exactly one template besides T1w)."""
    from bids_harmonize.templates import TemplateNotFoundError, get_template

    templates = config.template_spaces
    if len(templates) != 1:
        raise UsageError(
            f"--output-spaces needs exactly one template besides T1w (got {templates or 'none'})"
        )
    try:
        return get_template(templates[0], resolution=2)
    except TemplateNotFoundError as exc:
        raise UsageError(str(exc)) from None


def resolve_model_dir(config: RunConfig) -> Path | None:
    """The model to use: ``--model-dir``, else the packaged demo model; None when disabled."""
    if config.no_harmonization:
        return None
    if config.model_dir is not None:
        return config.model_dir
    from bids_harmonize.harmonizer.weights import default_model_dir

    return default_model_dir()


def checked_model_dir(config: RunConfig) -> Path | None:
    """:func:`resolve_model_dir`, its model loaded (hashes, format) and the device checked."""
    model_dir = resolve_model_dir(config)
    if model_dir is not None:
        from bids_harmonize.harmonizer.weights import ModelError, load_model

        try:
            load_model(model_dir)
        except ModelError as exc:
            raise UsageError(str(exc)) from None
        check_device(config.device)
    return model_dir


def discover_inputs(config: RunConfig):
    """Validate the dataset and discover every selected participant
    (:func:`bids_harmonize.bids.discover`)."""
    from bids_harmonize.bids import (
        InputError,
        discover,
        read_bids_filters,
        read_participants,
        read_platform_map,
        validate_bids,
    )

    try:
        bids_filters = read_bids_filters(config.bids_filter_file)
        platform_map = read_platform_map(config.platform_map)
        if not config.skip_bids_validation:
            validate_bids(config.bids_dir)
        read_participants(config.bids_dir)
        return discover(
            config.bids_dir, participant_label=config.participant_label,
            session_label=config.session_label, tracer_label=config.tracer_label,
            bids_filters=bids_filters, platform_map=platform_map,
            uptake_windows=config.uptake_windows, window_policy=config.window_policy,
            reference_regions=config.references(),
        )
    except InputError as exc:
        raise UsageError(str(exc)) from None


def take_locks(plans, out: Path, work: Path, *, run_id: str) -> tuple[dict, list]:
    """Lock each participant in the output and the work folder; ``(held, locks)``: who is
    locked by another run (one line each), and the locks taken."""
    from bids_harmonize.locks import LockHeldError, acquire, acquire_path

    held, locks = {}, []
    for item in plans:
        try:
            locks.append(acquire(out, item.subject, run_id=run_id))
            # the work folder too: two runs with different output folders may share it
            locks.append(acquire_path(work / WORK_LOCK_DIR / f"sub-{item.subject}.lock",
                                      f"sub-{item.subject} in work folder {work}",
                                      run_id=run_id))
        except LockHeldError as exc:
            LOGGER.error("%s", exc)
            held[item.subject] = str(exc)
    return held, locks


def _remove_empty_folders(out: Path, out_existed: bool) -> None:
    """Undo the lock folders of a run that stopped before writing anything."""
    for folder in (out / "logs" / "locks", out / "logs", *(() if out_existed else (out,))):
        try:
            folder.rmdir()  # only when empty
        except OSError:
            break


# --------------------------------------------------------------------------- graph, run


def build_workflow(subjects, settings: Settings, *, name: str = "bids_harmonize_wf"):
    """The participant graph of discovered subjects (plan, then the factories); a subject
    that planning excludes is an :class:`~bids_harmonize.bids.InputError`."""
    from bids_harmonize.bids import InputError
    from bids_harmonize.workflows.base import init_bids_harmonize_wf

    planned: Plan = plan(subjects, settings)
    if planned.excluded:
        problems = [p for reasons in planned.excluded.values() for p in reasons]
        raise InputError(problems[0], problems)
    return init_bids_harmonize_wf(list(planned.participants), settings, name=name)


def configure_nipype(config: RunConfig, execution) -> None:
    """Nipype's settings; first: nodes take them when they are created (crash file format)."""
    from nipype import config as ncfg
    from nipype import logging as nlogging

    out = config.output_dir
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
    nlogging.update_logging(ncfg)


def run_plans(config: RunConfig, plans, excluded, held, skipped, *, run_id, execution,
              settings: Settings) -> int:
    """Build the graph, then write, run and record; the participants' locks are held."""
    from bids_harmonize.execution import request_node_resources, run_workflow
    from bids_harmonize.provenance import write_dataset_description
    from bids_harmonize.workflows.base import init_bids_harmonize_wf

    out = config.output_dir
    configure_nipype(config, execution)
    # the graph is built before anything is written: a factory error leaves no outputs
    workflow = init_bids_harmonize_wf(plans, settings)
    records = record.open_records(out, plans, excluded, run_id=run_id)
    write_dataset_description(out, config.bids_dir)
    config_file = save_config(config, out / "logs" / f"config-{run_id}.toml")
    LOGGER.info("Settings written to %s (replay with --config-file)", config_file)
    _prepare(workflow, config, plans, run_id=run_id)
    LOGGER.info("Running %d subject(s) (%s); skipped: %s", len(plans),
                ", ".join(f"sub-{p.subject}" for p in plans), skipped or "none")
    request_node_resources(workflow, execution)
    progress = None
    if execution.plugin != "SLURMGraph":  # Nipype's graph plugins take no status callback
        progress = record.Progress(workflow, [p.subject for p in plans])
        execution.plugin_args = {**execution.plugin_args, "status_callback": progress}
    started = time.time()
    error = run_workflow(workflow, execution)
    elapsed = time.time() - started

    failed, crashes = record.failed_participants(out, plans, run_id=run_id, error=error,
                                                 workflow=workflow)
    reasons = record.close_records(out, plans, records, failed, crashes, error=error,
                                   progress=progress)
    failed = sorted(failed)
    record.write_reports(out, plans, workflow, failed, crashes)
    LOGGER.info("Participant level finished in %.0f s", elapsed)
    return record.report_problems(out, plans, excluded=excluded, held=held, skipped=skipped,
                                  failed=failed, reasons=reasons, run_id=run_id)


def _prepare(workflow, config: RunConfig, plans, *, run_id: str) -> None:
    """Work folder, per-subject crash folders and (``--write-graph``) the graph's picture."""
    out = config.output_dir
    work = config.work_dir or out / "work"
    workflow.base_dir = str(work)
    for item in plans:  # per-subject crash folders
        crash_dir = str(out / f"sub-{item.subject}" / "log" / run_id)
        for node in workflow.get_node(f"sub_{item.subject}_wf")._get_all_nodes():
            node.config = {"execution": {"crashdump_dir": crash_dir}}
    if config.write_graph:
        try:
            workflow.write_graph(graph2use="colored", format="svg", simple_form=True)
        except OSError as exc:  # graphviz's 'dot' is not installed: the .dot file is there
            LOGGER.warning("Workflow graph written as .dot only under %s (%s)", work, exc)
