"""Plugin choice and failure accounting around ``workflow.run`` (bids_harmonize.execution)."""

from __future__ import annotations

import os

import pytest
from nipype.interfaces.utility import Function
from nipype.pipeline import engine as pe
from nipype.pipeline.plugins.base import PluginBase

from bids_harmonize.cli.run import main
from bids_harmonize.execution import (
    Execution,
    choose_plugin,
    request_node_resources,
    run_workflow,
    unfinished_nodes,
)
from bids_harmonize.slurm.scheduler import SlurmError


def _double(x):
    return 2 * x


def _fail(x):
    raise ValueError(f"refusing {x}")


def _graph(tmp_path, fail: bool):
    """top_wf.sub_01_wf: first -> second (which fails when asked) -> third."""
    inner = pe.Workflow(name="sub_01_wf")
    first = pe.Node(Function(function=_double, input_names=["x"], output_names=["y"]), name="first")
    first.inputs.x = 1
    second = pe.Node(Function(function=_fail if fail else _double, input_names=["x"],
                              output_names=["y"]), name="second")
    third = pe.Node(Function(function=_double, input_names=["x"], output_names=["y"]), name="third")
    inner.connect([(first, second, [("y", "x")]), (second, third, [("y", "x")])])
    top = pe.Workflow(name="top_wf", base_dir=str(tmp_path / "work"))
    top.add_nodes([inner])
    top.config["execution"] = {"crashdump_dir": str(tmp_path / "crash"), "crashfile_format": "txt"}
    return top


@pytest.fixture
def no_slurm(monkeypatch, tmp_path):
    """A PATH holding only this Python's folder: no sbatch, squeue, ..."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))


def test_default_plugins():
    assert choose_plugin(None, nprocs=1, mem_gb=None, run_id="r").plugin == "Linear"
    multi = choose_plugin(None, nprocs=3, mem_gb=None, run_id="r")
    assert multi.plugin == "MultiProc" and multi.plugin_args["n_procs"] == 3
    assert "memory_gb" not in multi.plugin_args and not multi.on_slurm
    with pytest.raises(ValueError, match="unknown Nipype plugin"):
        choose_plugin("PBS", nprocs=1, mem_gb=None, run_id="r")


def test_slurm_plugins_refuse_without_slurm(no_slurm):
    for name in ("SLURM", "SLURMGraph"):
        with pytest.raises(SlurmError, match="SLURM is not available on this machine"):
            choose_plugin(name, nprocs=1, mem_gb=None, run_id="r")


def test_slurm_plugin_args_carry_the_run_tag(monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for command in ("sbatch", "squeue", "scontrol", "scancel"):  # present, never run here
        (bin_dir / command).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / command).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("LOGNAME", raising=False)
    ex = choose_plugin("SLURMGraph", nprocs=1, mem_gb=None, run_id="abc",
                       user_args={"sbatch_args": "--partition=short"})
    assert ex.tag == "bids_harmonize-abc"
    assert ex.plugin_args["sbatch_args"] == "--partition=short --comment=bids_harmonize-abc"
    assert ex.plugin_args["dont_resubmit_completed_jobs"] is True
    assert os.environ["LOGNAME"]  # Nipype's SLURM plugins build job names from it


def test_node_resources_become_sbatch_arguments(tmp_path):
    wf = _graph(tmp_path, fail=False)
    node = wf.get_node("sub_01_wf.first")
    node.n_procs, node._mem_gb = 2, 3.5
    request_node_resources(wf, Execution("SLURM", {}, tag="t"))
    assert node.plugin_args["sbatch_args"] == " --cpus-per-task=2 --mem=3584M"
    assert wf.get_node("sub_01_wf.third").plugin_args["sbatch_args"] == " --cpus-per-task=1 --mem=1024M"


def test_failed_node_and_its_descendants_are_unfinished(tmp_path):
    wf = _graph(tmp_path, fail=True)
    error = run_workflow(wf, Execution("Linear"))
    assert isinstance(error, RuntimeError)
    assert unfinished_nodes(wf) == ["top_wf.sub_01_wf.second", "top_wf.sub_01_wf.third"]


def test_complete_run_leaves_nothing_unfinished(tmp_path):
    wf = _graph(tmp_path, fail=False)
    assert run_workflow(wf, Execution("Linear")) is None
    assert unfinished_nodes(wf) == []


class CrashingPlugin(PluginBase):
    """Fails the way Nipype's SLURM plugin does on a killed job (nipype issue 3372)."""

    def run(self, graph, config, updatehash=False):
        raise TypeError("'NoneType' object is not subscriptable")


def test_any_plugin_exception_is_a_failure(tmp_path):
    wf = _graph(tmp_path, fail=False)
    error = run_workflow(wf, Execution(CrashingPlugin()))
    assert isinstance(error, TypeError)
    assert len(unfinished_nodes(wf)) == 3


def test_app_without_slurm_says_so_in_one_line(no_slurm, tmp_path, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    status = main([str(bids), str(tmp_path / "out"), "participant", "--nipype-plugin", "SLURM"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert err == ["bids_harmonize: error: SLURM is not available on this machine "
                   "(sbatch, squeue, scontrol, scancel not found on PATH)"]
    assert not (tmp_path / "out").exists()


def test_plugin_args_must_be_a_json_object(tmp_path, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(bids), str(tmp_path / "out"), "participant", "--plugin-args", "[1, 2]"])
    assert exit_info.value.code == 2
    assert "neither a JSON object nor an existing file: [1, 2]" in capsys.readouterr().err
    (tmp_path / "args.json").write_text("[1, 2]")
    with pytest.raises(SystemExit):
        main([str(bids), str(tmp_path / "out"), "participant", "--plugin-args",
              str(tmp_path / "args.json")])
    assert "expected a JSON object" in capsys.readouterr().err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a GPU is present")
def test_device_cuda_without_gpu_is_one_line(synth_bids, templateflow_home, tmp_path, capsys):
    args = [str(synth_bids), str(tmp_path / "out"), "participant", "--output-spaces",
            "MNI152NLin2009aSym", "T1w"]
    assert main([*args, "--device", "cuda"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "bids_harmonize: error: --device cuda was requested but no CUDA GPU is available"]


def _stamp(x, name, log):
    with open(log, "a") as f:
        f.write(name + "\n")
    return x


def test_multiproc_starts_the_critical_path_first(tmp_path):
    """Two frame realignments and N4 are ready at once, one process: N4 starts first, and
    when it ends the template registration (which most of the graph waits for) starts
    before the realignments (Nipype alone starts them in graph order: realignments first)."""
    log = tmp_path / "order.txt"
    wf = pe.Workflow(name="sub_01_wf", base_dir=str(tmp_path / "work"))
    nodes = {}
    for name in ("n4", "static_a", "static_b", "register_template"):
        nodes[name] = pe.Node(Function(function=_stamp, input_names=["x", "name", "log"],
                                       output_names=["y"]), name=name)
        nodes[name].inputs.name, nodes[name].inputs.log = name, str(log)
        if name != "register_template":
            nodes[name].inputs.x = 1
    wf.add_nodes([nodes["static_a"], nodes["static_b"]])
    wf.connect(nodes["n4"], "y", nodes["register_template"], "x")
    execution = choose_plugin("MultiProc", nprocs=1, mem_gb=None, run_id="x")
    assert run_workflow(wf, execution) is None
    order = log.read_text().split()
    assert sorted(order) == sorted(nodes)
    assert order[:2] == ["n4", "register_template"], order
