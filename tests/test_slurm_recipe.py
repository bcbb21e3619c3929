"""The sbatch recipe writer and the ``bids_harmonize-slurm`` command, without a scheduler."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bids_harmonize.slurm.cli import main
from bids_harmonize.slurm.recipe import (
    RecipeError,
    SlurmRecipe,
    job_comment,
    read_participants,
    render_group,
    render_participant,
    render_train,
    task_status,
    write_recipe,
)


@pytest.fixture
def bids(tmp_path) -> Path:
    root = tmp_path / "bids"
    for label in ("01", "02", "03"):
        (root / f"sub-{label}").mkdir(parents=True)
    return root


def _recipe(bids, tmp_path, **kwargs) -> SlurmRecipe:
    return SlurmRecipe(bids_dir=bids, output_dir=tmp_path / "out",
                       participants=["01", "02", "03"], **kwargs)


def test_participants_from_tsv_folders_labels_and_files(bids, tmp_path):
    assert read_participants(bids) == ["01", "02", "03"]
    (bids / "participants.tsv").write_text("participant_id\tage\nsub-03\t70\nsub-01\t71\n")
    assert read_participants(bids) == ["01", "03"]
    assert read_participants(bids, labels=["sub-02"]) == ["02"]
    listing = tmp_path / "list.txt"
    listing.write_text("# batch 1\nsub-02\n03\n\n")
    assert read_participants(bids, label_file=listing) == ["02", "03"]
    with pytest.raises(RecipeError, match="not in .*: sub-09"):
        read_participants(bids, labels=["09"])
    (bids / "participants.tsv").write_text("\ufeffparticipant_id\nsub-02\n", encoding="utf-8")
    assert read_participants(bids) == ["02"]
    (bids / "participants.tsv").write_text("subject\nsub-02\n")
    with pytest.raises(RecipeError, match="no participant_id column"):
        read_participants(bids)


def test_participant_array_script(bids, tmp_path):
    recipe = _recipe(bids, tmp_path, partition="short", max_parallel=2, cpus=6, mem_gb=12,
                     venv=Path("/opt/env"), extra_args=["--sloppy"])
    text = render_participant(recipe)
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --partition=short", "#SBATCH --cpus-per-task=6",
                 "#SBATCH --mem=12G", "export NIPYPE_NO_ET=1"):
        assert line in text.splitlines()
    assert "/opt/env/bin/bids_harmonize" in text and "--sloppy" in text
    assert "--device cuda" not in text and "--gres" not in text
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0


def test_container_scripts_bind_and_request_gpus(bids, tmp_path):
    image = tmp_path / "bh.sif"
    recipe = _recipe(bids, tmp_path, image=image, gpus=1,
                     templateflow_home=Path("/site/templateflow"))
    text = render_participant(recipe)
    assert "apptainer run --cleanenv --containall --nv" in text
    assert f"-B {bids}:/data:ro" in text and f"-B {tmp_path / 'out'}:/out" in text
    assert '-B "$WORK":/work' in text and "-w /work" in text
    assert "--env TEMPLATEFLOW_HOME=/templateflow" in text and "#SBATCH --gres=gpu:1" in text
    assert "--device cuda" in text
    group = render_group(recipe)
    assert "/data /out group" in group and "--nv" not in group
    train = render_train(recipe, nodes=2, gpus_per_node=4)
    assert "#SBATCH --nodes=2" in train and "--nproc-per-node=4" in train
    assert "apptainer exec --cleanenv" in train and "--rdzv-backend=c10d" in train
    for script in (text, group, train):
        assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_kept_work_folder_is_stable_per_participant(bids, tmp_path):
    kept = render_participant(_recipe(bids, tmp_path, keep_work=True, scratch="/shared/scratch"))
    assert 'SCRATCH="/shared/scratch"' in kept
    assert 'KEEP_ROOT="$SCRATCH/bids_harmonize_work-$(id -u)"' in kept
    assert 'WORK="$KEEP_ROOT/' in kept and '/sub-$LABEL"' in kept
    assert "rm -rf" not in kept
    temporary = render_participant(_recipe(bids, tmp_path))
    assert 'SCRATCH="${TMPDIR:-/tmp}"' in temporary
    assert 'WORK=$(mktemp -d "$SCRATCH/bids_harmonize_${SLURM_ARRAY_JOB_ID}_' in temporary
    assert "rm -rf" in temporary


def _fake_app(tmp_path) -> Path:
    """A venv whose bids_harmonize records its work folder and exits 0."""
    venv = tmp_path / "env"
    (venv / "bin").mkdir(parents=True)
    exe = venv / "bin" / "bids_harmonize"
    exe.write_text('#!/bin/bash\nfor a in "$@"; do [ "$prev" = -w ] && echo "$a" >> '
                   f'{tmp_path}/work.log; prev=$a; done\n')
    exe.chmod(0o755)
    return venv


def _run_task(script: Path, tmp_path, index=0) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "SLURM_ARRAY_JOB_ID": "7", "SLURM_ARRAY_TASK_ID": str(index),
           "HOME": str(tmp_path)}
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)


def test_temporary_work_folder_is_private_and_removed(bids, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    recipe = _recipe(bids, tmp_path, venv=_fake_app(tmp_path), scratch=str(scratch))
    paths = write_recipe(recipe)
    # another user's predictable folder does not matter: mktemp picks a fresh name
    (scratch / "bids_harmonize_7_0").mkdir()
    done = _run_task(paths["participant"], tmp_path)
    assert done.returncode == 0, done.stderr
    work = Path((tmp_path / "work.log").read_text().strip())
    assert work.parent == scratch and work.name.startswith("bids_harmonize_7_0.")
    assert not work.exists()  # removed at the end
    assert (recipe.script_dir / "status" / "sub-01").read_text().startswith("ok ")


def test_kept_work_folder_is_private(bids, tmp_path):
    scratch = tmp_path / "scratch" / "not-yet"  # created by the task
    recipe = _recipe(bids, tmp_path, venv=_fake_app(tmp_path), scratch=str(scratch),
                     keep_work=True)
    paths = write_recipe(recipe)
    done = _run_task(paths["participant"], tmp_path, index=1)
    assert done.returncode == 0, done.stderr
    work = Path((tmp_path / "work.log").read_text().strip())
    assert work.name == "sub-02" and work.is_dir()
    for folder in (work, work.parent, work.parent.parent):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    # a rerun resumes in the same folder
    assert _run_task(paths["participant"], tmp_path, index=1).returncode == 0
    assert set((tmp_path / "work.log").read_text().split()) == {str(work)}


def test_kept_work_folder_that_is_a_link_is_refused(bids, tmp_path):
    scratch = tmp_path / "scratch"
    (tmp_path / "elsewhere").mkdir()
    scratch.mkdir()
    recipe = _recipe(bids, tmp_path, venv=_fake_app(tmp_path), scratch=str(scratch),
                     keep_work=True)
    paths = write_recipe(recipe)
    uid = subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip()
    (scratch / f"bids_harmonize_work-{uid}").symlink_to(tmp_path / "elsewhere")
    done = _run_task(paths["participant"], tmp_path)
    assert done.returncode == 2
    assert "refusing the work folder" in done.stderr and "not a directory owned by" in done.stderr
    assert not (tmp_path / "work.log").exists()  # the app never ran


def test_each_submission_has_its_own_participant_list(bids, tmp_path):
    first = _recipe(bids, tmp_path)
    paths1 = write_recipe(first)
    script1 = paths1["participant"].read_text()
    second = SlurmRecipe(bids_dir=bids, output_dir=tmp_path / "out", participants=["02", "03"])
    paths2 = write_recipe(second)
    assert paths1["participants"] != paths2["participants"]
    assert paths1["participants"].read_text() == "01\n02\n03\n"  # untouched
    assert paths1["participants"].name in script1
    assert paths2["participants"].name in paths2["participant"].read_text()
    assert (first.script_dir / "participants.txt").read_text() == "02\n03\n"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("partition", "short\n#SBATCH --uid=0", "--partition 'short\\n#SBATCH --uid=0' must not"),
    ("account", "lab one", "--account 'lab one' must not"),
    ("qos", "", "--qos '' must not be empty"),
    ("time", "04:00:00\necho hi", "is not a SLURM time"),
    ("time", "4h", "is not a SLURM time"),
    ("output_dir", "/out\nrm -rf ~", "contains a newline"),
    ("scratch", '/tmp"; rm -rf ~; "', "must not contain control characters, double quotes"),
    ("cpus", 0, "cpus must be a whole number >= 1"),
    ("participants", ["01", "0\n2"], "participant '0\\n2': a BIDS label is alphanumeric"),
])
def test_every_field_is_validated(bids, tmp_path, field, value, message):
    kwargs = {"bids_dir": bids, "output_dir": tmp_path / "out", "participants": ["01"],
              field: Path(value) if field == "output_dir" else value}
    with pytest.raises(RecipeError, match=re.escape(message)) as info:
        SlurmRecipe(**kwargs)
    assert len(str(info.value).splitlines()) == 1


@pytest.mark.parametrize("value", ["30", "30:00", "04:00:00", "2-00", "2-12:00", "1-00:00:00",
                                   "UNLIMITED"])
def test_slurm_time_grammar(bids, tmp_path, value):
    assert _recipe(bids, tmp_path, time=value).time == value


def test_participant_folder_with_newline_is_refused(bids, tmp_path, capsys):
    (bids / "sub-0\n4").mkdir()
    assert main([str(bids), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a BIDS label is alphanumeric" in err[0]
    assert not (tmp_path / "out").exists()


def test_refuses_while_jobs_of_the_output_folder_are_queued(bids, tmp_path, monkeypatch, capsys):
    from bids_harmonize.slurm import cli, scheduler

    out = tmp_path / "out"
    assert main([str(bids), str(out)]) == 0
    script = out / "logs" / "slurm" / "participant.sbatch"
    before = script.read_text()
    seen = {}

    def queued(comment=None, job_ids=()):
        seen["comment"] = comment if comment is not None else seen.get("comment")
        return {"41_0": "PENDING"} if comment == job_comment(out) else {}

    monkeypatch.setattr(cli.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(scheduler, "queued", queued)
    capsys.readouterr()
    assert main([str(bids), str(out), "--participant-label", "01"]) == 1
    err = capsys.readouterr().err
    assert f"jobs of {out} are still queued (41_0)" in err
    assert script.read_text() == before  # nothing rewritten
    assert seen["comment"] == job_comment(out)
    assert f"#SBATCH --comment={job_comment(out)}" in before.splitlines()


def test_unanswering_slurm_warns_when_writing_and_refuses_submitting(bids, tmp_path, monkeypatch,
                                                                       capsys):
    """squeue installed without a cluster (a client, or packages only): writing goes on with
    a warning; a submission is refused."""
    from bids_harmonize.slurm import cli, scheduler

    def no_answer(comment=None, job_ids=()):
        raise scheduler.SlurmError("squeue --noheader failed: squeue: fatal: Could not "
                                   "establish a configuration source")

    monkeypatch.setattr(cli.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(scheduler, "queued", no_answer)
    out = tmp_path / "out"
    assert main([str(bids), str(out), "--participant-label", "01"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning: queued jobs not checked" in err[0]
    assert (out / "logs" / "slurm" / "participant.sbatch").is_file()
    with pytest.raises(scheduler.SlurmError, match="configuration source"):
        cli.refuse_if_queued(_recipe(bids, tmp_path), submitting=True)


def test_image_and_venv_are_exclusive(bids, tmp_path):
    with pytest.raises(RecipeError, match="not both"):
        _recipe(bids, tmp_path, image=Path("/x.sif"), venv=Path("/env"))
    with pytest.raises(RecipeError, match="no participants"):
        SlurmRecipe(bids_dir=bids, output_dir=tmp_path, participants=[])


def test_task_status_reads_the_status_files(bids, tmp_path):
    recipe = _recipe(bids, tmp_path)
    paths = write_recipe(recipe)
    assert paths["participants"].read_text() == "01\n02\n03\n"
    assert paths["participants"].name.startswith("participants-")
    (recipe.script_dir / "status" / "sub-01").write_text("ok 2026-11-25T10:00:00Z job 5_0\n")
    (recipe.script_dir / "status" / "sub-02").write_text("failed 1 2026-11-25T10:00:00Z job 5_1\n")
    assert task_status(recipe) == {0: "ok", 1: "failed", 2: "missing"}


def test_command_writes_the_recipe_for_this_environment(bids, tmp_path, capsys):
    out = tmp_path / "out"
    status = main([str(bids), str(out), "--partition", "debug", "--participant-label", "02", "03",
                   "--", "--sloppy"])
    assert status == 0
    folder = out / "logs" / "slurm"
    assert (folder / "participants.txt").read_text() == "02\n03\n"
    text = (folder / "participant.sbatch").read_text()
    assert f"{Path(sys.prefix) / 'bin' / 'bids_harmonize'}" in text and "--sloppy" in text
    assert "#SBATCH --array=0-1" in text
    assert "sbatch --dependency=afterok:$ARRAY" in capsys.readouterr().out


def test_command_without_slurm_says_so(bids, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    status = main([str(bids), str(tmp_path / "out"), "--submit"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err == ["bids_harmonize-slurm: error: SLURM is not available on this machine "
                   "(sbatch, squeue, scontrol, scancel not found on PATH)"]
    assert not (tmp_path / "out").exists()


def test_command_refuses_unknown_participants(bids, tmp_path, capsys):
    assert main([str(bids), str(tmp_path / "out"), "--participant-label", "42"]) == 1
    assert "not in" in capsys.readouterr().err
