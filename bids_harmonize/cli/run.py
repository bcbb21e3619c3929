"""``bids_harmonize``: the BIDS App entry point (participant, group, train)."""

from __future__ import annotations

import os

# No telemetry, no network at run time: set before nipype is ever imported.
os.environ.setdefault("NIPYPE_NO_ET", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# ITK's HDF5 locks .h5 transforms on open: parallel nodes reading one transform then fail
# ("unable to lock file") or crash; reading never needs the lock
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")

import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

from bids_harmonize.cli.parser import build_parser  # noqa: E402
from bids_harmonize.config import RunConfig, load_config, save_config  # noqa: E402

LOGGER = logging.getLogger("bids_harmonize")


class UsageError(RuntimeError):
    """A problem the user can fix; reported in one line, exit status 1."""


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * (verbose + 1) if verbose < 2 else logging.DEBUG
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S")
    logging.getLogger("bids_harmonize").setLevel(max(level, logging.DEBUG))
    for noisy in ("nipype.workflow", "nipype.interface", "nipype.utils"):
        logging.getLogger(noisy).propagate = False  # nipype has its own handler


def config_from_args(args) -> RunConfig:
    """Settings from the command line, or from ``--config-file`` with the positionals on top."""
    if args.config_file:
        config = load_config(args.config_file)
        config.bids_dir, config.output_dir = args.bids_dir, args.output_dir
        config.analysis_level = args.analysis_level
        return config
    epochs = {}
    for item in args.train_epochs:
        stage, _, number = item.partition("=")
        if stage not in ("ct", "mri", "residual") or not number.isdigit():
            raise UsageError(f"--train-epochs expects ct=N, mri=N or residual=N, got {item!r}")
        epochs[stage] = int(number)
    return RunConfig(
        bids_dir=args.bids_dir, output_dir=args.output_dir, analysis_level=args.analysis_level,
        participant_label=args.participant_label, session_label=args.session_label,
        tracer_label=args.tracer_label, bids_filter_file=args.bids_filter_file,
        skip_bids_validation=args.skip_bids_validation, platform_map=args.platform_map,
        output_spaces=args.output_spaces, model_dir=args.model_dir,
        no_harmonization=args.no_harmonization, device=args.device, nprocs=args.nprocs,
        nipype_plugin=args.nipype_plugin, plugin_args=args.plugin_args,
        omp_nthreads=args.omp_nthreads or max(1, min(args.nprocs, 8)), mem_gb=args.mem_gb,
        work_dir=args.work_dir, stop_on_first_crash=args.stop_on_first_crash,
        sloppy=args.sloppy, write_graph=args.write_graph, verbose=args.verbose,
        uptake_windows=dict(args.uptake_window), atlas=args.atlas,
        atlas_labels=args.atlas_labels, centiloid_vois=args.centiloid_vois,
        cutoffs=dict(args.cutoff), train_epochs=epochs,
        train_min_subjects=args.train_min_subjects, seed=args.seed,
    )


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


def run_participant(config: RunConfig) -> int:
    """Discover, build the Nipype graph, run it, write reports; return the exit status."""
    from bids_harmonize.bids import InputError, discover, read_platform_map, validate_bids
    from bids_harmonize.execution import (
        choose_plugin,
        request_node_resources,
        run_workflow,
        unfinished_nodes,
    )
    from bids_harmonize.provenance import write_dataset_description
    from bids_harmonize.slurm.scheduler import SlurmError
    from bids_harmonize.templates import TemplateNotFoundError, get_template

    run_id = time.strftime("%Y%m%d-%H%M%S") + "_" + uuid.uuid4().hex[:8]
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
        if not config.skip_bids_validation:
            validate_bids(config.bids_dir)
        bids_filters = (json.loads(config.bids_filter_file.read_text())
                        if config.bids_filter_file else {})
        plans, skipped = discover(
            config.bids_dir, participant_label=config.participant_label,
            session_label=config.session_label, tracer_label=config.tracer_label,
            bids_filters=bids_filters, platform_map=read_platform_map(config.platform_map),
            uptake_windows=config.uptake_windows,
        )
    except (InputError, json.JSONDecodeError) as exc:
        raise UsageError(str(exc)) from None
    if not plans:
        raise UsageError("no subject can be processed: " + "; ".join(skipped))

    from nipype import config as ncfg

    from bids_harmonize.workflows.base import init_bids_harmonize_wf

    out = config.output_dir
    work = config.work_dir or out / "work"
    write_dataset_description(out, config.bids_dir)
    config_file = save_config(config, out / "logs" / f"config-{run_id}.toml")
    LOGGER.info("Settings written to %s (replay with --config-file)", config_file)
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
    workflow = init_bids_harmonize_wf(
        plans, bids_dir=config.bids_dir, output_dir=out, template=template, model_dir=model_dir,
        device=config.device, sloppy=config.sloppy, seed=config.seed,
        omp_nthreads=config.omp_nthreads, uptake_windows=config.uptake_windows,
        atlas=config.atlas, atlas_labels=config.atlas_labels,
        centiloid_vois=config.centiloid_vois,
    )
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
    started = time.time()
    error = run_workflow(workflow, execution)
    elapsed = time.time() - started

    failed = {p.subject for p in plans
              if any((out / f"sub-{p.subject}" / "log" / run_id).glob("crash-*"))}
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
    failed = sorted(failed)
    _write_reports(out, plans, workflow, failed, run_id)
    LOGGER.info("Participant level finished in %.0f s", elapsed)
    if skipped:
        print("Skipped: " + "; ".join(skipped), file=sys.stderr)
    if failed:
        print(f"bids_harmonize: {len(failed)} of {len(plans)} subject(s) failed: "
              + ", ".join(f"sub-{s} (see {out / f'sub-{s}' / 'log' / run_id})" for s in failed),
              file=sys.stderr)
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
    try:
        written = group(config.output_dir, cutoffs=config.cutoffs or None)
    except (NoParticipantTablesError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    LOGGER.info("Group level wrote %d file(s) under %s", len(written), config.output_dir / "group")
    _write_run_summary(config.output_dir)
    return 0


def run_train(config: RunConfig) -> int:
    """Train the three-stage harmonizer on the paired sessions that 'participant' processed."""
    from bids_harmonize.harmonizer.dataset import (
        InsufficientDataError,
        load_pairs_from_derivatives,
    )
    from bids_harmonize.harmonizer.train import train_model

    check_device(config.device)
    try:
        pairs, excluded = load_pairs_from_derivatives(
            config.output_dir, participant_labels=config.participant_label or None,
            tracers=config.tracer_label or None, min_pairs=config.train_min_subjects,
        )
    except InsufficientDataError as exc:
        raise UsageError(str(exc)) from None
    for what, why in excluded:
        LOGGER.warning("Not used for training: %s (%s)", what, why)
    model_dir = config.model_dir or config.output_dir / "models" / "site"
    train_config = _train_config(config)
    path = train_model(pairs, model_dir, train_config, device=config.device)
    print(f"model written to {path}")
    return 0


def _train_config(config: RunConfig):
    from bids_harmonize.harmonizer.config import HarmonizerConfig

    stages = {"ct": "stage1", "mri": "stage2", "residual": "stage3"}
    changes = {stages[k]: {"epochs": v} for k, v in config.train_epochs.items()}
    return HarmonizerConfig().replace(seed=config.seed, **changes)


def main(argv: list[str] | None = None) -> int:
    """Run the BIDS App; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        _setup_logging(config.verbose)
        check_paths(config)
        if config.analysis_level == "participant":
            return run_participant(config)
        if config.analysis_level == "group":
            return run_group(config)
        return run_train(config)
    except UsageError as exc:
        print(f"bids_harmonize: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
