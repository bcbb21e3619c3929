"""SLURM recipe fields a hostile or unlucky user can give (issue 22 item 9)."""

from __future__ import annotations

import pytest

from bids_harmonize.slurm.cli import main
from bids_harmonize.slurm.recipe import RecipeError, SlurmRecipe, render_participant


@pytest.fixture
def bids(tmp_path):
    """Empty participant folders: the recipe writer only lists them."""
    root = tmp_path / "bids"
    for label in ("01", "02"):
        (root / f"sub-{label}").mkdir(parents=True)
    return root


@pytest.mark.parametrize("scratch", ["$(touch /tmp/pwned)", "${TMPDIR:-$(id)}", "/tmp\\x",
                                     "$[1+1]"])
def test_scratch_cannot_run_commands(bids, tmp_path, scratch):
    with pytest.raises(RecipeError, match="command substitution"):
        SlurmRecipe(bids_dir=bids, output_dir=tmp_path / "out", participants=["01"],
                    scratch=scratch)


def test_default_scratch_still_expands(bids, tmp_path):
    recipe = SlurmRecipe(bids_dir=bids, output_dir=tmp_path / "out", participants=["01"])
    assert 'SCRATCH="${TMPDIR:-/tmp}"' in render_participant(recipe)


def test_output_path_with_spaces_and_percent(bids, tmp_path):
    out = tmp_path / "my out 100%"
    recipe = SlurmRecipe(bids_dir=bids, output_dir=out, participants=["01"])
    (line,) = [x for x in render_participant(recipe).splitlines()
               if x.startswith("#SBATCH --output=")]
    assert line.startswith('#SBATCH --output="') and line.endswith('"')
    assert "100%%/" in line and "%A" in line


def test_more_tasks_than_slurm_allows_is_warned(tmp_path, capsys):
    bids = tmp_path / "bids"
    for i in range(1005):
        (bids / f"sub-{i:04d}").mkdir(parents=True)
    code = main([str(bids), str(tmp_path / "out")])  # writes the recipe (no sbatch here)
    err = capsys.readouterr().err
    assert "1005 participants make one array" in err and "MaxArraySize" in err
    assert code == 0
