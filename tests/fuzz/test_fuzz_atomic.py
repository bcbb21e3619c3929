"""Every output is written atomically (issue 22 item 6): a temporary name in the same folder,
then a rename, so a full disk or a kill leaves the previous file or none, never half of one.

Two checks: the package's source has no plain write left outside the few places that
write atomically themselves, and each output writer, with the disk failing under it,
leaves the previous file untouched and no temporary file behind.
"""

from __future__ import annotations

import ast
import errno
import os
from pathlib import Path

import pandas as pd
import pytest

import bids_harmonize
from bids_harmonize import safeio

PACKAGE = Path(bids_harmonize.__file__).parent

#: Files allowed to write without safeio, and why.
OWN_ATOMIC = {
    "safeio.py": "the atomic writers themselves",
    "locks.py": "locks are written whole, then hard-linked to their name",
}
OWN_FOLDERS = {
    "synth": "the simulator writes a new dataset, not outputs of a run",
    "interfaces": "Nipype nodes write into their own work folder; sinks stage and rename",
}
WRITE_METHODS = {"write_text", "write_bytes", "savefig"}


def _plain_writes(path: Path, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        where = f"{name}:{node.lineno}"
        if isinstance(func, ast.Attribute) and func.attr in WRITE_METHODS:
            found.append(f"{where} .{func.attr}()")
        elif isinstance(func, ast.Attribute) and func.attr == "to_csv":
            target = node.args[0] if node.args else None
            if not (isinstance(target, ast.Constant) and target.value is None):
                found.append(f"{where} .to_csv(<path>)")
        elif isinstance(func, ast.Name | ast.Attribute) and (
                getattr(func, "id", None) == "open" or getattr(func, "attr", None) == "open"):
            modes = [a for a in node.args[1:2]] + [k.value for k in node.keywords if k.arg == "mode"]
            if any(isinstance(m, ast.Constant) and set(str(m.value)) & set("wax") for m in modes):
                found.append(f"{where} open(..., {modes[0].value!r})")
    return found


def test_no_plain_output_writes_left_in_the_package():
    plain = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.name in OWN_ATOMIC and len(rel.parts) == 1 or rel.parts[0] in OWN_FOLDERS:
            continue
        plain += _plain_writes(path, str(rel))
    assert plain == [], "write these through bids_harmonize.safeio: " + "; ".join(plain)


def test_scanner_finds_plain_writes(tmp_path):
    """The check above would see each kind of plain write."""
    sample = tmp_path / "sample.py"
    sample.write_text("p.write_text('x')\nfig.savefig(p)\ndf.to_csv(p, sep='\\t')\n"
                      "df.to_csv(None)\nopen(p, 'w')\nopen(p)\np.open(mode='a')\n")
    found = [f.split(" ", 1)[1] for f in _plain_writes(sample, "sample.py")]
    assert found == [".write_text()", ".savefig()", ".to_csv(<path>)", "open(..., 'w')",
                     "open(..., 'a')"]


# ------------------------------------------------------------------ the disk fails mid-write


def _disk_full(monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safeio.os, "fsync", no_space)


def _group_table(path):
    from bids_harmonize.group.run import _write

    return _write(pd.DataFrame({"subject": ["01"], "tracer": ["PiB"]}), path)


def _quant_table(path):
    from bids_harmonize.quant.io import write_tsv

    return write_tsv(pd.DataFrame({"region": ["a"], "suvr": [1.1]}), path, {"suvr": {}})[0]


def _uptake_figure(path):
    from bids_harmonize.reports.reportlets import plot_uptake_window

    info = {"FrameTimesStart": [0, 600], "FrameDuration": [600, 600],
            "FrameWeights": [0, 1], "TimeWindowRequested": [10, 20]}
    return plot_uptake_window(info, path)


def _run_summary(path):
    from bids_harmonize.reports.runsummary import write_run_summary

    return write_run_summary(path.parent, records=[])


def _citation(path):
    from bids_harmonize.reports.boilerplate import boilerplate_from, write_citation_files

    return write_citation_files(path.parent, boilerplate_from(["Text [@ants]."]))[0]


def _description(path):
    from bids_harmonize.provenance import write_dataset_description

    return write_dataset_description(path.parent, path.parent.parent)


def _config(path):
    from bids_harmonize.config import RunConfig, save_config

    return save_config(RunConfig(bids_dir=Path("/b"), output_dir=Path("/o"),
                                 analysis_level="participant"), path)


WRITERS = {
    "group/pairs.tsv": _group_table,
    "sub-01_suvr.tsv": _quant_table,
    "figures/window.svg": _uptake_figure,
    "index.html": _run_summary,
    "logs/CITATION.md": _citation,
    "dataset_description.json": _description,
    "config.toml": _config,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_disk_full_keeps_the_previous_output(tmp_path, monkeypatch, name):
    out = tmp_path / "out" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("previous complete file\n")
    _disk_full(monkeypatch)
    with pytest.raises(safeio.DiskFullError, match=f"no space left on device writing {out}"):
        WRITERS[name](out)
    assert out.read_text() == "previous complete file\n"
    assert not [p for p in tmp_path.rglob("*.tmp")]
    monkeypatch.undo()
    assert WRITERS[name](out).stat().st_size > 0  # and it writes when there is room


def test_atomic_write_keeps_the_umask(tmp_path):
    """Without a mode the file gets what open(path, "w") would give (a shared cluster's 002)."""
    old = os.umask(0o002)
    try:
        path = safeio.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o664
    assert safeio.atomic_write_text(tmp_path / "b.txt", "x", mode=0o600).stat().st_mode & 0o777 == 0o600


def test_atomic_savefig_and_table(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    svg = safeio.atomic_savefig(fig, tmp_path / "f.svg")
    plt.close(fig)
    assert svg.read_text().lstrip().startswith("<?xml") and "</svg>" in svg.read_text()
    table = safeio.atomic_write_table(pd.DataFrame({"a": ["x", None]}), tmp_path / "t.tsv")
    assert table.read_text() == "a\nx\nn/a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.svg", "t.tsv"]
