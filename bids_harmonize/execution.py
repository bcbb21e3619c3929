"""How the Nipype graph is executed: plugin choice, SLURM fan-out, and failure accounting.

The app treats *any* exception from ``workflow.run`` as a failed run (Nipype's
SLURM plugin, for one, raises a ``TypeError`` from its crash reporter when a job
is killed: nipype issue 3372), then asks the work directory which nodes never
wrote their result file, and cancels the SLURM jobs it submitted that are still
queued (they carry a ``--comment`` tag unique to the run).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path

from bids_harmonize.slurm import scheduler

LOGGER = logging.getLogger("bids_harmonize")
PLUGINS = ("Linear", "MultiProc", "SLURM", "SLURMGraph")
SLURM_PLUGINS = ("SLURM", "SLURMGraph")
#: sbatch memory floor per node: a node that imports torch or ANTs needs more than Nipype's 0.2 GB
MIN_NODE_MEM_GB = 1.0


@dataclass
class Execution:
    """A resolved plugin: its Nipype name, its arguments, and the run's SLURM tag."""

    plugin: str
    plugin_args: dict = field(default_factory=dict)
    tag: str | None = None

    @property
    def on_slurm(self) -> bool:
        return self.plugin in SLURM_PLUGINS


def choose_plugin(name: str | None, *, nprocs: int, mem_gb: float | None, run_id: str,
                  user_args: dict | None = None) -> Execution:
    """The Nipype plugin and its arguments for this run.

    ``name`` None picks ``MultiProc`` for ``nprocs`` > 1, else ``Linear``. SLURM
    plugins need SLURM's commands on ``PATH`` (:class:`~bids_harmonize.slurm.scheduler.SlurmError`
    otherwise) and get ``--comment=<tag>`` on every job so that leftovers can be cancelled.

    >>> choose_plugin(None, nprocs=1, mem_gb=None, run_id="x").plugin
    'Linear'
    >>> ex = choose_plugin("MultiProc", nprocs=4, mem_gb=8, run_id="x", user_args={"maxtasksperchild": 1})
    >>> ex.plugin_args["n_procs"], ex.plugin_args["memory_gb"], ex.plugin_args["maxtasksperchild"]
    (4, 8, 1)
    """
    user_args = dict(user_args or {})
    if name is None:
        name = "MultiProc" if nprocs > 1 else "Linear"
    if name not in PLUGINS:
        raise ValueError(f"unknown Nipype plugin {name!r}; choose from {', '.join(PLUGINS)}")
    if name == "Linear":
        return Execution("Linear", user_args)
    if name == "MultiProc":
        # forkserver: workers never inherit torch/OpenMP thread state (fork deadlocks);
        # the server preloads the light, thread-free modules every node needs
        multiprocessing.set_forkserver_preload(
            ["numpy", "nibabel", "nipype.pipeline.engine", "bids_harmonize.interfaces.bids"]
        )
        args = {"n_procs": nprocs, "raise_insufficient": False, "mp_context": "forkserver"}
        if mem_gb:
            args["memory_gb"] = mem_gb
        return Execution("MultiProc", {**args, **user_args})
    scheduler.require_slurm()
    os.environ["LOGNAME"] = scheduler.slurm_environ()["LOGNAME"]  # Nipype names jobs with it
    tag = f"bids_harmonize-{run_id}"
    sbatch_args = f"{user_args.pop('sbatch_args', '')} --comment={tag}".strip()
    args = {"sbatch_args": sbatch_args, "max_tries": 2, "retry_timeout": 2}
    if name == "SLURMGraph":
        args["dont_resubmit_completed_jobs"] = True
    return Execution(name, {**args, **user_args}, tag=tag)


def request_node_resources(workflow, execution: Execution) -> None:
    """Give every node's sbatch job the CPUs and memory the node declares (SLURM plugins only)."""
    if not execution.on_slurm:
        return
    for node in workflow._get_all_nodes():
        cpus = max(1, int(getattr(node, "n_procs", 1) or 1))
        mem_mb = math.ceil(max(float(getattr(node, "mem_gb", 0) or 0), MIN_NODE_MEM_GB) * 1024)
        # leading space: SLURMGraph appends node arguments to the plugin's without one
        node.plugin_args = {**node.plugin_args,
                            "sbatch_args": f" --cpus-per-task={cpus} --mem={mem_mb}M"}


@contextlib.contextmanager
def atomic_crash_files():
    """Nipype's text crash files written whole (temporary name, then rename) meanwhile.

    Nipype writes a crash file in place (``open(name, "w")``): on a full disk that left an
    empty ``crash-*.txt`` under its final name, which the failure accounting then read as a
    crash without a reason. The file is now written next to it under a hidden name and
    renamed; a write that fails leaves nothing. The crash reports are written by the
    process that runs the plugin (Linear, MultiProc, SLURM alike).
    """
    from nipype.pipeline.plugins import tools

    original = tools.crash2txt

    def crash2txt(filename, record):
        folder, name = os.path.split(filename)
        tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
        try:
            original(tmp, record)
            os.replace(tmp, filename)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    tools.crash2txt = crash2txt
    try:
        yield
    finally:
        tools.crash2txt = original


#: Nodes that start first when several are ready under MultiProc: the participant graph's
#: critical path (N4, then the template registration that the brain mask, the PET-to-T1w
#: registrations and everything after them wait for; the harmonizer). Nipype starts ready
#: nodes in graph order, which put both PET frame realignments ahead of the template
#: registration: on 2 cores it started 13 s late (benchmarks/README.md, "Participant level").
START_FIRST = ("n4", "register_template", "harmonize")


def multiproc_runner(plugin_args: dict):
    """Nipype's MultiProc plugin, starting :data:`START_FIRST` nodes before other ready ones
    (the rest keep Nipype's order)."""
    from nipype.pipeline.plugins.multiproc import MultiProcPlugin

    class CriticalPathFirstPlugin(MultiProcPlugin):
        def _sort_jobs(self, jobids, scheduler="tsort"):
            jobids = super()._sort_jobs(jobids, scheduler=scheduler)
            return sorted(jobids, key=lambda j: self.procs[j].name not in START_FIRST)

    return CriticalPathFirstPlugin(plugin_args=plugin_args)


def run_workflow(workflow, execution: Execution, poll: float = 2.0) -> BaseException | None:
    """Run the graph; return the exception it ended with (None on success).

    SLURMGraph submits the whole graph and returns at once: wait here until no job
    with the run's tag is queued. Whatever happens, the run's queued jobs are cancelled
    before returning.
    """
    error = None
    try:
        with atomic_crash_files():
            if execution.plugin == "MultiProc":
                workflow.run(plugin=multiproc_runner(execution.plugin_args))
            else:
                workflow.run(plugin=execution.plugin, plugin_args=execution.plugin_args)
        if execution.plugin == "SLURMGraph":
            LOGGER.info("SLURMGraph submitted the graph; waiting for jobs tagged %s", execution.tag)
            scheduler.wait(comment=execution.tag, poll=poll)
            # a failed or killed job only shows as dependents cancelled by SLURM: ask the work dir
            missing = unfinished_nodes(workflow)
            if missing:
                raise RuntimeError(f"{len(missing)} node(s) of the SLURMGraph run did not finish")
    except BaseException as exc:  # noqa: BLE001 - any plugin error is a failed run (nipype #3372)
        error = exc
    finally:
        if execution.on_slurm:
            try:
                left = scheduler.queued(comment=execution.tag)
                if left:
                    LOGGER.warning("Cancelling %d leftover SLURM job(s) of this run: %s",
                                   len(left), " ".join(sorted(left)))
                    scheduler.cancel(left)
            except scheduler.SlurmError as exc:
                LOGGER.warning("Could not cancel this run's SLURM jobs: %s", exc)
    if isinstance(error, KeyboardInterrupt):
        raise error
    return error


def unfinished_nodes(workflow) -> list[str]:
    """Nodes without a successful result: never run, failed, or killed while running.

    Node folders are found as ``Workflow.run`` lays them out: the flattened graph's
    hierarchy under the workflow's ``base_dir``. A failed node's result file holds
    its traceback (local plugins); the batch plugins rename it to ``crashstore.pklz``.
    """
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline.engine import JoinNode
    from nipype.utils.filemanip import loadpkl

    missing = []
    for node in workflow._create_flat_graph().nodes():
        if isinstance(node.interface, IdentityInterface) and not isinstance(node, JoinNode):
            continue  # inputnode/outputnode: Nipype drops them before running (never a result)
        node.base_dir = workflow.base_dir
        name = f"{node._hierarchy}.{node.name}" if node._hierarchy else node.name
        results = sorted(Path(node.output_dir()).glob("result_*.pklz"))
        try:
            failed = not results or getattr(loadpkl(results[0]).runtime, "traceback", None)
        except Exception:  # noqa: BLE001 - unreadable (truncated by a kill): not finished
            failed = True
        if failed:
            missing.append(name)
    return sorted(missing)
