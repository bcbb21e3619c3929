"""sbatch scripts for a dataset: a participant job array, the group job, multi-node training.

Pure text rendering: :func:`render_participant`, :func:`render_group` and
:func:`render_train` turn a :class:`SlurmRecipe` into bash. The array reads its
participant from its own list, ``participants-<hash>.txt`` (line
``SLURM_ARRAY_TASK_ID + 1``; the hash is that of the list, so a later recipe with other
participants writes another file and never remaps the tasks of a queued array), works
in a private folder of node-local scratch (``mktemp -d``; with ``--keep-work`` a stable
folder under a per-user directory that must be the user's own, mode 700), sizes
``--nprocs``/``--mem`` from SLURM's variables, and writes ``status/sub-<label>``
(``ok``, ``running`` or ``failed <rc>``), from which a resubmission picks the tasks that
did not succeed. Every job carries ``--comment=<job_comment(output_dir)>`` so that the
jobs of an output folder can be found in the queue.

Every field is validated when the recipe is made (:meth:`SlurmRecipe.validate`):
participant labels through the app's own validator, no whitespace or control
characters in partition/account/qos, ``--time`` by SLURM's grammar, no control
characters in paths.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from bids_harmonize.__about__ import __version__
from bids_harmonize.safeio import atomic_write_text

#: where the BIDS dataset, the outputs and the work directory appear inside the container
CONTAINER_BIDS, CONTAINER_OUT, CONTAINER_WORK = "/data", "/out", "/work"


class RecipeError(ValueError):
    """The recipe cannot be written as asked; the message is one line."""


#: SLURM's ``--time`` formats (sbatch(1)): minutes, minutes:seconds, hours:minutes:seconds,
#: days-hours, days-hours:minutes, days-hours:minutes:seconds; or UNLIMITED/INFINITE.
_TIME = re.compile(r"\d+(:\d{1,2}){0,2}|\d+-\d{1,2}(:\d{1,2}){0,2}|UNLIMITED|INFINITE")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_time(value: str) -> str:
    """A SLURM time limit, or :class:`RecipeError`.

    >>> check_time("1-12:00:00"), check_time("90")
    ('1-12:00:00', '90')
    >>> check_time("04:00:00 rm")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bids_harmonize.slurm.recipe.RecipeError: --time '04:00:00 rm' is not a SLURM time (MM, ...)
    """
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise RecipeError(f"--time {value!r} is not a SLURM time (MM, MM:SS, HH:MM:SS, D-HH, "
                          "D-HH:MM or D-HH:MM:SS)")
    return value


def check_word(option: str, value: str | None) -> str | None:
    """A partition/account/qos name: no whitespace or control characters."""
    if value is not None and (not value or re.search(r"\s", value) or _CONTROL.search(value)):
        raise RecipeError(f"{option} {value!r} must not be empty or contain whitespace or "
                          "control characters")
    return value


def check_path(option: str, value) -> None:
    """Paths land in the scripts: no newline or other control character."""
    if value is not None and _CONTROL.search(str(value)):
        raise RecipeError(f"{option} {str(value)!r} contains a newline or control character")


def check_label(value: str) -> str:
    """A participant label, through the app's own validator (``sub-`` removed)."""
    from bids_harmonize.cli.parser import _label

    try:
        return _label(value)
    except argparse.ArgumentTypeError:  # its message quotes the value raw: word it here
        raise RecipeError(f"participant {value!r}: a BIDS label is alphanumeric") from None


def job_comment(output_dir: Path) -> str:
    """The ``--comment`` of every job of an output folder (found again with squeue)."""
    return "bids_harmonize-out-" + hashlib.sha1(str(output_dir).encode()).hexdigest()[:12]


@dataclass
class SlurmRecipe:
    """Everything the sbatch scripts need; paths absolute on the cluster's shared filesystem."""

    bids_dir: Path
    output_dir: Path
    participants: list[str]
    partition: str | None = None
    image: Path | None = None  # an Apptainer/Singularity .sif; None runs from venv
    venv: Path | None = None  # a Python environment holding bids_harmonize
    cpus: int = 4
    mem_gb: int = 8
    time: str = "04:00:00"
    gpus: int = 0
    max_parallel: int | None = None
    retries: int = 1
    scratch: str = "${TMPDIR:-/tmp}"
    keep_work: bool = False
    account: str | None = None
    qos: str | None = None
    templateflow_home: Path | None = None
    container_command: str = "apptainer"
    extra_args: list[str] = field(default_factory=list)
    group_args: list[str] = field(default_factory=list)
    script_dir: Path | None = None

    def __post_init__(self):
        if not self.participants:
            raise RecipeError("no participants to process")
        if self.image is not None and self.venv is not None:
            raise RecipeError("give --image or --venv, not both")
        if self.script_dir is None:
            self.script_dir = self.output_dir / "logs" / "slurm"
        self.validate()

    def validate(self) -> None:
        """Refuse any field that could change the scripts' meaning (one-line RecipeError)."""
        self.participants = [check_label(p) for p in self.participants]
        for option in ("partition", "account", "qos"):
            check_word(f"--{option}", getattr(self, option))
        check_time(self.time)
        for option, value in (("bids_dir", self.bids_dir), ("output_dir", self.output_dir),
                              ("--script-dir", self.script_dir), ("--image", self.image),
                              ("--venv", self.venv),
                              ("--templateflow-home", self.templateflow_home)):
            check_path(option, value)
        # the scripts expand it inside double quotes: ${TMPDIR:-/tmp} yes, $(cmd) no
        if (_CONTROL.search(self.scratch) or re.search(r'["`\\]', self.scratch)
                or "$(" in self.scratch or "$[" in self.scratch):
            raise RecipeError(f"--scratch {self.scratch!r} must not contain control characters, "
                              "double quotes, backquotes, backslashes or command substitution "
                              "($(...))")
        for option, least in (("cpus", 1), ("mem_gb", 1), ("gpus", 0), ("retries", 0)):
            value = getattr(self, option)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise RecipeError(f"{option} must be a whole number >= {least}, not {value!r}")
        if self.container_command not in ("apptainer", "singularity"):
            raise RecipeError(f"container command {self.container_command!r} is not "
                              "apptainer or singularity")

    @property
    def list_name(self) -> str:
        """This participant list's own file name (``participants-<hash>.txt``)."""
        digest = hashlib.sha1("\n".join(self.participants).encode()).hexdigest()[:10]
        return f"participants-{digest}.txt"

    @property
    def array_spec(self) -> str:
        """``0-N`` with ``%K`` when a concurrency limit is set."""
        return array_spec(range(len(self.participants)), self.max_parallel)


def array_spec(indices, max_parallel: int | None = None) -> str:
    """SLURM's ``--array`` value for these task indices.

    >>> array_spec(range(4), 2)
    '0-3%2'
    >>> array_spec([1, 4, 5])
    '1,4,5'
    """
    indices = sorted(set(indices))
    if not indices:
        raise RecipeError("no array task to submit")
    contiguous = indices == list(range(indices[0], indices[-1] + 1))
    spec = f"{indices[0]}-{indices[-1]}" if contiguous and len(indices) > 1 else ",".join(
        str(i) for i in indices)
    return f"{spec}%{max_parallel}" if max_parallel else spec


def read_participants(bids_dir: Path, labels: list[str] | None = None,
                      label_file: Path | None = None) -> list[str]:
    """Participant labels: given ones, a file of labels, ``participants.tsv``, or the ``sub-*`` folders.

    Labels are returned without ``sub-``, sorted, and must exist in the dataset.
    """
    if labels:
        found = [lab.removeprefix("sub-") for lab in labels]
    elif label_file is not None:
        from bids_harmonize.safeio import TABLE_LIMIT, UnsafeInputError, read_bytes_bounded

        try:
            text = read_bytes_bounded(label_file, TABLE_LIMIT).decode("utf-8-sig")
        except UnsafeInputError as exc:
            raise RecipeError(str(exc)) from None
        except UnicodeDecodeError as exc:
            raise RecipeError(f"{label_file}: not UTF-8 text (byte {exc.start})") from None
        except OSError as exc:
            raise RecipeError(f"{label_file}: cannot read it ({exc.strerror or exc})") from None
        found = [check_label(line.strip()) for line in text.splitlines()
                 if line.strip() and not line.startswith("#")]
    elif (bids_dir / "participants.tsv").is_file():
        tsv = bids_dir / "participants.tsv"
        try:
            with open(tsv, newline="", encoding="utf-8-sig") as handle:
                rows = list(csv.DictReader(handle, delimiter="\t"))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise RecipeError(f"{tsv}: cannot read it ({exc})") from None
        if rows and "participant_id" not in rows[0]:
            raise RecipeError(f"{tsv}: no participant_id column")
        found = [(row["participant_id"] or "").removeprefix("sub-") for row in rows]
    else:
        found = [p.name.removeprefix("sub-") for p in bids_dir.glob("sub-*") if p.is_dir()]
    missing = [lab for lab in found if not (bids_dir / f"sub-{lab}").is_dir()]
    if missing:
        raise RecipeError(f"not in {bids_dir}: " + ", ".join(f"sub-{m}" for m in missing))
    return sorted(dict.fromkeys(found))


def _sbatch_path(folder: Path, pattern: str) -> str:
    """An ``#SBATCH --output`` value: ``%`` in the folder is literal (``%%``; the log name's
    ``%A``/``%a`` stay patterns), and a path with spaces is double-quoted.

    >>> _sbatch_path(Path("/a b/100%"), "x-%A_%a.log")
    '"/a b/100%%/x-%A_%a.log"'
    """
    value = f"{str(folder).replace('%', '%%')}/{pattern}"
    return f'"{value}"' if any(ch.isspace() for ch in value) else value


#: SLURM's default MaxArraySize (slurm.conf): array indices stop at 1000.
SLURM_DEFAULT_MAX_ARRAY = 1001


def _header(recipe: SlurmRecipe, job: str, log: str, *, cpus: int, mem_gb: int, gpus: int,
            extra: tuple[str, ...] = ()) -> str:
    lines = ["#!/bin/bash", f"#SBATCH --job-name=bh-{job}",
             f"#SBATCH --comment={job_comment(recipe.output_dir)}"]
    if recipe.partition:
        lines.append(f"#SBATCH --partition={recipe.partition}")
    if recipe.account:
        lines.append(f"#SBATCH --account={recipe.account}")
    if recipe.qos:
        lines.append(f"#SBATCH --qos={recipe.qos}")
    lines += [f"#SBATCH {x}" for x in extra]
    lines += [f"#SBATCH --cpus-per-task={cpus}", f"#SBATCH --mem={mem_gb}G",
              f"#SBATCH --time={recipe.time}", f"#SBATCH --output={_sbatch_path(recipe.script_dir, log)}"]
    if gpus:
        lines.append(f"#SBATCH --gres=gpu:{gpus}")
    lines += [
        f"# Written by bids_harmonize-slurm {__version__}; rewrite it with that command rather than",
        "# editing by hand. Submitting it directly works too: sbatch <this file>.",
        "set -uo pipefail",
        "export NIPYPE_NO_ET=1",
    ]
    if recipe.templateflow_home is not None and recipe.image is None:
        lines.append(f"export TEMPLATEFLOW_HOME={shlex.quote(str(recipe.templateflow_home))}")
    return "\n".join(lines) + "\n"


def _runner(recipe: SlurmRecipe, *, work: str | None, gpus: int) -> tuple[str, str, str]:
    """(command prefix, BIDS path, output path) as seen by the app."""
    if recipe.image is None:
        exe = (recipe.venv / "bin" / "bids_harmonize") if recipe.venv else Path("bids_harmonize")
        return shlex.quote(str(exe)), shlex.quote(str(recipe.bids_dir)), shlex.quote(
            str(recipe.output_dir))
    binds = [shlex.quote(f"{recipe.bids_dir}:{CONTAINER_BIDS}:ro"),
             shlex.quote(f"{recipe.output_dir}:{CONTAINER_OUT}")]
    if work is not None:
        binds.append(f'"{work}":{CONTAINER_WORK}')
    if recipe.templateflow_home is not None:
        binds.append(shlex.quote(f"{recipe.templateflow_home}:/templateflow:ro"))
    parts = [recipe.container_command, "run", "--cleanenv", "--containall"]
    if gpus:
        parts.append("--nv")
    if recipe.templateflow_home is not None:
        parts.append("--env TEMPLATEFLOW_HOME=/templateflow")
    parts += [f"-B {b}" for b in binds] + [shlex.quote(str(recipe.image))]
    return " ".join(parts), CONTAINER_BIDS, CONTAINER_OUT


def render_participant(recipe: SlurmRecipe) -> str:
    """The participant job array: one task per line of its own ``participants-<hash>.txt``."""
    head = _header(recipe, "participant", "participant-%A_%a.out", cpus=recipe.cpus,
                   mem_gb=recipe.mem_gb, gpus=recipe.gpus, extra=(f"--array={recipe.array_spec}",))
    work = '"$WORK"' if recipe.image is None else CONTAINER_WORK
    exe, bids, out = _runner(recipe, work="$WORK", gpus=recipe.gpus)
    extra = " ".join(shlex.quote(a) for a in recipe.extra_args)
    device = " --device cuda" if recipe.gpus else ""
    cleanup = "" if recipe.keep_work else "trap 'rm -rf \"$WORK\"' EXIT\n"
    if recipe.keep_work:  # one stable folder per dataset and participant: reruns resume
        tag = hashlib.sha1(str(recipe.output_dir).encode()).hexdigest()[:8]
        work_line = f"""# kept work folder, stable across resubmissions (Nipype resumes from it), inside a
# per-user folder that must be this user's own directory (not a link), mode 700: Nipype
# loads pickles from it, so nobody else may create or write it
private_dir() {{
    if [ ! -e "$1" ] && ! mkdir -m 700 "$1"; then
        echo "cannot create the work folder $1" >&2; exit 2
    fi
    if [ -L "$1" ] || [ ! -d "$1" ] || [ "$(stat -c %u "$1")" != "$(id -u)" ]; then
        echo "refusing the work folder $1: not a directory owned by $(id -un)" >&2; exit 2
    fi
    chmod 700 "$1" || exit 2
}}
KEEP_ROOT="$SCRATCH/bids_harmonize_work-$(id -u)"
private_dir "$KEEP_ROOT"
private_dir "$KEEP_ROOT/{tag}"
WORK="$KEEP_ROOT/{tag}/sub-$LABEL"
private_dir "$WORK\""""
    else:
        work_line = (
            "# node-local scratch: a private folder (mktemp -d, mode 700), removed at the end\n"
            'WORK=$(mktemp -d "$SCRATCH/bids_harmonize_${SLURM_ARRAY_JOB_ID}_'
            '${SLURM_ARRAY_TASK_ID}.XXXXXXXX") || { echo "cannot create a work folder" >&2; '
            'exit 2; }')
    return head + f"""
RECIPE_DIR={shlex.quote(str(recipe.script_dir))}
LIST="$RECIPE_DIR/{recipe.list_name}"
LABEL=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$LIST")
if [ -z "$LABEL" ]; then
    echo "no participant on line $((SLURM_ARRAY_TASK_ID + 1)) of $LIST" >&2
    exit 2
fi
TASK="${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}"
SCRATCH="{recipe.scratch}"
mkdir -p "$SCRATCH" || {{ echo "cannot create the scratch folder $SCRATCH" >&2; exit 2; }}
{work_line}
{cleanup}NPROCS=${{SLURM_CPUS_PER_TASK:-1}}
MEM_GB=$(( ${{SLURM_MEM_PER_NODE:-{recipe.mem_gb * 1024}}} / 1024 ))
STATUS="$RECIPE_DIR/status/sub-$LABEL"
mkdir -p "$RECIPE_DIR/status"
echo "running $(date -u +%FT%TZ) job $TASK on $(hostname -s)" > "$STATUS"
echo "sub-$LABEL: task $TASK, $NPROCS CPUs, $MEM_GB GB, work in $WORK"

attempt=0
while true; do
    attempt=$((attempt + 1))
    {exe} {bids} {out} participant --participant-label "$LABEL" \\
        --nprocs "$NPROCS" --mem "$MEM_GB" -w {work}{device} {extra}
    rc=$?
    if [ "$rc" -eq 0 ] || [ "$attempt" -gt {recipe.retries} ]; then
        break
    fi
    echo "sub-$LABEL: attempt $attempt failed (exit $rc); retrying with the same work directory" >&2
done
if [ "$rc" -eq 0 ]; then
    echo "ok $(date -u +%FT%TZ) job $TASK" > "$STATUS"
else
    echo "failed $rc $(date -u +%FT%TZ) job $TASK" > "$STATUS"
fi
exit "$rc"
"""


def render_group(recipe: SlurmRecipe) -> str:
    """The group job (submitted with ``--dependency=afterok:<array>``)."""
    head = _header(recipe, "group", "group-%j.out", cpus=1, mem_gb=min(recipe.mem_gb, 4), gpus=0)
    exe, bids, out = _runner(recipe, work=None, gpus=0)
    extra = " ".join(shlex.quote(a) for a in recipe.group_args)
    return head + f"""
echo "group level over $(wc -l < {shlex.quote(str(recipe.script_dir / recipe.list_name))}) \
participant(s)"
{exe} {bids} {out} group {extra}
"""


def render_train(recipe: SlurmRecipe, *, nodes: int = 1, gpus_per_node: int = 1,
                 procs_per_node: int | None = None, port: int = 29500) -> str:
    """Multi-GPU, multi-node training: ``srun`` starts one ``torchrun`` per node.

    The rendezvous (c10d) runs on the job's first node; ``torchrun`` starts one
    process per GPU on each node, or ``procs_per_node`` CPU processes without GPUs.
    """
    procs = gpus_per_node or procs_per_node or 1
    head = _header(recipe, "train", "train-%j.out", cpus=recipe.cpus, mem_gb=recipe.mem_gb,
                   gpus=gpus_per_node, extra=(f"--nodes={nodes}", "--ntasks-per-node=1"))
    extra = " ".join(shlex.quote(a) for a in recipe.extra_args)
    device = "--device cuda" if gpus_per_node else "--device cpu"
    if recipe.image is None:
        python = shlex.quote(str(recipe.venv / "bin" / "python")) if recipe.venv else "python3"
        launcher = f"{python} -m torch.distributed.run"
        bids, out = shlex.quote(str(recipe.bids_dir)), shlex.quote(str(recipe.output_dir))
    else:
        prefix, bids, out = _runner(recipe, work=None, gpus=gpus_per_node)
        launcher = prefix.replace(" run ", " exec ", 1) + " python -m torch.distributed.run"
    return head + f"""
# rendezvous on the first node of the allocation
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
CPUS=${{SLURM_CPUS_PER_TASK:-{recipe.cpus}}}
export OMP_NUM_THREADS=$(( CPUS / {procs} > 0 ? CPUS / {procs} : 1 ))
echo "training on $SLURM_JOB_NUM_NODES node(s) x {procs} process(es), rendezvous $HEAD_NODE:{port}"
srun --ntasks-per-node=1 {launcher} \\
    --nnodes="$SLURM_JOB_NUM_NODES" --nproc-per-node={procs} \\
    --rdzv-id="$SLURM_JOB_ID" --rdzv-backend=c10d --rdzv-endpoint="$HEAD_NODE:{port}" \\
    -m bids_harmonize.cli.run {bids} {out} train {device} {extra}
"""


def write_recipe(recipe: SlurmRecipe, level: str = "participant", *, train_nodes: int = 1,
                 train_gpus_per_node: int = 0, train_procs_per_node: int | None = None
                 ) -> dict[str, Path]:
    """Write the level's scripts and return their paths.

    ``participant``: ``participants-<hash>.txt`` (this list's own file, never rewritten
    with other content; ``participants.txt`` is a copy of the latest, for people),
    ``participant.sbatch`` and ``group.sbatch``; ``train``: ``train.sbatch``. Refusing
    to write while jobs of the output folder are queued is the command's job
    (:func:`bids_harmonize.slurm.cli.main`), which can ask SLURM.
    """
    folder = recipe.script_dir
    try:
        (folder / "status").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RecipeError(f"cannot write the recipe to {folder}: {exc.strerror}") from None
    if level == "train":
        texts = {"train": render_train(recipe, nodes=train_nodes, gpus_per_node=train_gpus_per_node,
                                       procs_per_node=train_procs_per_node)}
    else:
        texts = {"participant": render_participant(recipe), "group": render_group(recipe)}
    paths = {}
    if level != "train":
        text = "\n".join(recipe.participants) + "\n"
        paths["participants"] = folder / recipe.list_name
        atomic_write_text(paths["participants"], text)
        atomic_write_text(folder / "participants.txt", text)  # the latest list, for people
    for key, text in texts.items():
        paths[key] = folder / f"{key}.sbatch"
        atomic_write_text(paths[key], text, mode=0o755)
    return paths


def task_status(recipe: SlurmRecipe) -> dict[int, str]:
    """``{array index: first word of its status file}`` (``missing`` when never started)."""
    states = {}
    for index, label in enumerate(recipe.participants):
        path = recipe.script_dir / "status" / f"sub-{label}"
        text = path.read_text().split() if path.is_file() else []
        states[index] = text[0] if text else "missing"
    return states
