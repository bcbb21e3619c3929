"""The sbatch recipe writer and the ``bids_harmonize-slurm`` command, without a scheduler."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bids_harmonize.slurm.cli import main
from bids_harmonize.slurm.recipe import (
    RecipeError,
    SlurmRecipe,
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
    assert 'WORK="/shared/scratch/bids_harmonize_work/' in kept and '/sub-$LABEL"' in kept
    assert "rm -rf" not in kept
    temporary = render_participant(_recipe(bids, tmp_path))
    assert "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}" in temporary and "rm -rf" in temporary


def test_image_and_venv_are_exclusive(bids, tmp_path):
    with pytest.raises(RecipeError, match="not both"):
        _recipe(bids, tmp_path, image=Path("/x.sif"), venv=Path("/env"))
    with pytest.raises(RecipeError, match="no participants"):
        SlurmRecipe(bids_dir=bids, output_dir=tmp_path, participants=[])


def test_task_status_reads_the_status_files(bids, tmp_path):
    recipe = _recipe(bids, tmp_path)
    paths = write_recipe(recipe)
    assert paths["participants"].read_text() == "01\n02\n03\n"
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
