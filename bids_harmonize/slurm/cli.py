"""``bids_harmonize-slurm``: write (and optionally submit) the sbatch recipe for a dataset.

    bids_harmonize-slurm /bids /out --partition P [--image SIF | --venv DIR] [--submit]
    bids_harmonize-slurm /bids /out --partition P --resubmit-failed
    bids_harmonize-slurm /bids /out --level train --nodes 2 --gpus 4 --submit

Arguments after ``--`` go to every ``bids_harmonize ... participant`` call
(or to ``train`` with ``--level train``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from bids_harmonize.__about__ import __version__
from bids_harmonize.cli.parser import existing_dir, positive_int
from bids_harmonize.safeio import atomic_write_text
from bids_harmonize.slurm import scheduler
from bids_harmonize.slurm.recipe import (
    SLURM_DEFAULT_MAX_ARRAY,
    RecipeError,
    SlurmRecipe,
    array_spec,
    check_label,
    job_comment,
    read_participants,
    task_status,
    write_recipe,
)


def _abs(value: str) -> Path:
    return Path(value).expanduser().absolute()


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0: {value}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bids_harmonize-slurm``."""
    parser = argparse.ArgumentParser(
        prog="bids_harmonize-slurm",
        description="Write the SLURM recipe for a dataset: a participant job array (one task per "
        "participant), the group job that runs after it, and a multi-node training job. "
        "With --submit, submit them and print the job ids. Arguments after '--' are passed to "
        "bids_harmonize.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("bids_dir", type=existing_dir, help="the BIDS dataset (shared filesystem)")
    parser.add_argument("output_dir", type=_abs, help="the derivatives folder (shared filesystem)")
    parser.add_argument("--version", action="version", version=f"bids_harmonize {__version__}")
    parser.add_argument("--level", choices=("participant", "train"), default="participant",
                        help="participant: the array plus the dependent group job; train: the "
                        "training job")
    parser.add_argument("--partition", help="SLURM partition (default: the cluster's default)")
    parser.add_argument("--account", help="SLURM account to charge")
    parser.add_argument("--qos", help="SLURM quality of service")

    who = parser.add_argument_group("Participants")
    pick = who.add_mutually_exclusive_group()
    pick.add_argument("--participant-label", nargs="+", metavar="LABEL",
                      help="participants to run (default: participants.tsv, else every sub-<label> folder)")
    pick.add_argument("--participants-file", type=_abs, metavar="TXT",
                      help="a file with one participant label per line")

    env = parser.add_argument_group("Software")
    run = env.add_mutually_exclusive_group()
    run.add_argument("--image", type=_abs, metavar="SIF",
                     help="run the Apptainer/Singularity image (apptainer run --cleanenv "
                     "--containall, with --nv when GPUs are requested)")
    run.add_argument("--venv", type=_abs, metavar="DIR",
                     help="run bids_harmonize from this Python environment (default: the one "
                     "this command runs from)")
    env.add_argument("--container-command", default="apptainer", choices=("apptainer", "singularity"),
                     help="the container runtime on the compute nodes")
    env.add_argument("--templateflow-home", type=_abs, metavar="DIR",
                     help="TemplateFlow home visible on the compute nodes (default: "
                     "$TEMPLATEFLOW_HOME for --venv; the templates inside the image for --image)")

    res = parser.add_argument_group("Resources per task")
    res.add_argument("--cpus", type=positive_int, default=4,
                     help="CPUs per participant (becomes --nprocs)")
    res.add_argument("--mem", type=positive_int, default=8, metavar="GB",
                     help="memory per participant in GB (becomes --mem)")
    res.add_argument("--time", default="04:00:00", help="time limit per task (HH:MM:SS)")
    res.add_argument("--gpus", type=_count, default=0,
                     help="GPUs per task (per node with --level train); adds --device cuda")
    res.add_argument("--max-parallel", type=positive_int, metavar="N",
                     help="at most N array tasks at once (SLURM's %%N)")
    res.add_argument("--retries", type=_count, default=1,
                     help="reruns of a failed participant inside its task, reusing its work dir")
    res.add_argument("--scratch", default="${TMPDIR:-/tmp}",
                     help="node-local scratch root for work directories (a shell expression "
                     "evaluated on the node)")
    res.add_argument("--keep-work", action="store_true",
                     help="keep each task's work directory (to inspect or resume by hand)")

    train = parser.add_argument_group("Training (--level train)")
    train.add_argument("--nodes", type=positive_int, default=1, help="nodes for training")
    train.add_argument("--procs-per-node", type=positive_int, default=None,
                       help="training processes per node without GPUs (default 1)")

    act = parser.add_argument_group("Submission")
    act.add_argument("--script-dir", type=_abs, metavar="DIR",
                     help="where the scripts, logs and task status go (default: "
                     "<output_dir>/logs/slurm)")
    act.add_argument("--submit", action="store_true",
                     help="submit after writing, and print the job ids")
    act.add_argument("--resubmit-failed", action="store_true",
                     help="submit only the array tasks whose participant did not finish, then "
                     "the group job after them")
    return parser


def recipe_from_args(args, app_args: list[str]) -> SlurmRecipe:
    """A :class:`SlurmRecipe` from parsed arguments (venv defaults to this interpreter's)."""
    venv = args.venv
    if args.image is None and venv is None:
        here = Path(sys.prefix)
        if (here / "bin" / "bids_harmonize").exists():
            venv = here
        elif shutil.which("bids_harmonize"):
            venv = Path(shutil.which("bids_harmonize")).resolve().parent.parent
        else:
            raise RecipeError("bids_harmonize is not installed here: give --venv DIR or --image SIF")
    if args.image is not None and not args.image.is_file():
        raise RecipeError(f"no such image: {args.image}")
    if venv is not None and not (venv / "bin" / "bids_harmonize").exists():
        raise RecipeError(f"{venv}/bin/bids_harmonize does not exist")
    tf_home = args.templateflow_home
    if tf_home is None and args.image is None and os.environ.get("TEMPLATEFLOW_HOME"):
        tf_home = _abs(os.environ["TEMPLATEFLOW_HOME"])
    participants = read_participants(args.bids_dir, labels=args.participant_label,
                                     label_file=args.participants_file)
    if len(participants) > SLURM_DEFAULT_MAX_ARRAY:
        print(f"bids_harmonize-slurm: warning: {len(participants)} participants make one array "
              f"of {len(participants)} tasks; SLURM's default MaxArraySize is "
              f"{SLURM_DEFAULT_MAX_ARRAY} (indices up to {SLURM_DEFAULT_MAX_ARRAY - 1}): ask "
              "your admins, or split the list with --participants-file", file=sys.stderr)
    return SlurmRecipe(
        bids_dir=args.bids_dir, output_dir=args.output_dir, participants=participants,
        partition=args.partition, image=args.image, venv=None if args.image else venv,
        cpus=args.cpus, mem_gb=args.mem, time=args.time, gpus=args.gpus,
        max_parallel=args.max_parallel, retries=args.retries, scratch=args.scratch,
        keep_work=args.keep_work, account=args.account, qos=args.qos,
        templateflow_home=tf_home, container_command=args.container_command,
        extra_args=app_args, script_dir=args.script_dir,
    )


def _log_jobs(recipe: SlurmRecipe, rows: list[tuple[str, str, str]]) -> None:
    path = recipe.script_dir / "jobs.tsv"
    # rewritten whole (a small file): a full disk leaves the previous log, not half a line
    old = path.read_text() if path.is_file() else ""
    lines = [old if old else "submitted\tkind\tjob_id\tarray\tlist\n"]
    for kind, job_id, spec in rows:
        lines.append(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{kind}\t{job_id}\t{spec}"
                     f"\t{recipe.list_name if kind == 'participant' else ''}\n")
    atomic_write_text(path, "".join(lines))


def _last_list(recipe: SlurmRecipe) -> list[str] | None:
    """The participant list of the latest submitted array (its own file), if any."""
    path = recipe.script_dir / "jobs.tsv"
    if not path.exists():
        return None
    names = [cols[4] for cols in (line.split("\t") for line in
                                  path.read_text().splitlines()[1:])
             if len(cols) > 4 and cols[1] == "participant" and cols[4].strip()]
    if not names or not (recipe.script_dir / names[-1].strip()).is_file():
        return None
    text = (recipe.script_dir / names[-1].strip()).read_text()
    return [check_label(line) for line in text.splitlines() if line.strip()]


def refuse_if_queued(recipe: SlurmRecipe, *, submitting: bool = True) -> None:
    """Refuse to (re)write or (re)submit while jobs of this output folder are queued.

    Jobs are found by the output folder's ``--comment`` tag and by the ids in
    ``jobs.tsv``; without SLURM's ``squeue`` here nothing can be queued from here.
    When ``squeue`` is installed but SLURM does not answer (a client without a cluster),
    writing a recipe goes on with a warning (each submission has its own participant
    list, so queued tasks are never remapped); submitting is refused.
    """
    if shutil.which("squeue") is None:
        return
    try:
        previous = _previous_jobs(recipe)
        queued = dict(scheduler.queued(comment=job_comment(recipe.output_dir)))
        if previous:
            queued.update(scheduler.queued(job_ids=previous))
    except scheduler.SlurmError as exc:
        if submitting:
            raise
        print(f"bids_harmonize-slurm: warning: queued jobs not checked, SLURM does not answer "
              f"here ({exc})", file=sys.stderr)
        return
    if queued:
        raise RecipeError(f"jobs of {recipe.output_dir} are still queued ("
                          + " ".join(sorted(queued)) + "): wait for them or scancel them")


def _previous_jobs(recipe: SlurmRecipe) -> list[str]:
    path = recipe.script_dir / "jobs.tsv"
    if not path.exists():
        return []
    return [line.split("\t")[2] for line in path.read_text().splitlines()[1:] if line.strip()]


def submit_participants(recipe: SlurmRecipe, paths: dict[str, Path], *, failed_only: bool) -> int:
    """Submit the array (all tasks, or those not ``ok``) and the dependent group job."""
    if failed_only:
        todo = [i for i, state in task_status(recipe).items() if state != "ok"]
        if not todo:
            print(f"All {len(recipe.participants)} participant(s) finished: nothing to resubmit. "
                  f"Run the group level with: sbatch {paths['group']}")
            return 0
        spec = array_spec(todo, recipe.max_parallel)
        array_id = scheduler.submit(paths["participant"], f"--array={spec}")
        labels = ", ".join(f"sub-{recipe.participants[i]}" for i in todo)
        print(f"participant array {array_id}: resubmitted task(s) {spec} ({labels})")
    else:
        spec = recipe.array_spec
        array_id = scheduler.submit(paths["participant"])
        print(f"participant array {array_id}: {len(recipe.participants)} task(s), --array={spec}")
    group_id = scheduler.submit(paths["group"], f"--dependency=afterok:{array_id}")
    print(f"group job {group_id}: runs when every task of {array_id} has succeeded "
          f"(cancelled by SLURM if one fails; then use --resubmit-failed)")
    _log_jobs(recipe, [("participant", array_id, spec), ("group", group_id, "")])
    print(f"logs and task status: {recipe.script_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Write the recipe, submit when asked; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    app_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    try:
        if args.submit or args.resubmit_failed:
            scheduler.require_slurm()
        if args.resubmit_failed and args.level != "participant":
            raise RecipeError("--resubmit-failed applies to the participant array only")
        recipe = recipe_from_args(args, app_args)
        refuse_if_queued(recipe, submitting=args.submit or args.resubmit_failed)
        if args.resubmit_failed:
            earlier = _last_list(recipe)
            if earlier is not None and earlier != recipe.participants:
                print(f"Resubmitting from the earlier submission's list of {len(earlier)} "
                      "participant(s)")
                recipe.participants = earlier
        paths = write_recipe(recipe, args.level, train_nodes=args.nodes,
                             train_gpus_per_node=args.gpus, train_procs_per_node=args.procs_per_node)
        if args.level == "train":
            print(f"Wrote {paths['train']}")
            if args.submit:
                job = scheduler.submit(paths["train"])
                _log_jobs(recipe, [("train", job, "")])
                print(f"train job {job}: {args.nodes} node(s)")
            else:
                print(f"Submit with: sbatch {paths['train']}")
            return 0
        print(f"Wrote {paths['participant']} and {paths['group']} "
              f"({len(recipe.participants)} participant(s) in {paths['participants']})")
        if args.submit or args.resubmit_failed:
            return submit_participants(recipe, paths, failed_only=args.resubmit_failed)
        print(f"Submit with:\n  ARRAY=$(sbatch --parsable {paths['participant']})\n"
              f"  sbatch --dependency=afterok:$ARRAY {paths['group']}\n"
              "or rerun this command with --submit.")
        return 0
    except (RecipeError, scheduler.SlurmError) as exc:
        print(f"bids_harmonize-slurm: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
