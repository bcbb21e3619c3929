"""Progress lines and each participant's own time (issue 21): a Nipype status callback."""

from __future__ import annotations

import logging
import time

import pytest
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from bids_harmonize.app.record import Progress


def _work(x, pause):
    import time

    time.sleep(pause)
    return x + 1


def _graph(base_dir, pause=1.0):
    """bids_harmonize_wf > sub_<s>_wf > {a_wf (inputnode, work, a MapNode), b_wf (work)}."""
    top = Workflow(name="bids_harmonize_wf", base_dir=str(base_dir))
    for subject in ("01", "02"):
        sub = Workflow(name=f"sub_{subject}_wf")
        a_wf, b_wf = Workflow(name="a_wf"), Workflow(name="b_wf")
        inputnode = pe.Node(niu.IdentityInterface(fields=["x"]), name="inputnode")
        inputnode.inputs.x = 1
        work = pe.Node(niu.Function(function=_work, input_names=["x", "pause"],
                                    output_names=["y"]), name="work")
        work.inputs.pause = pause
        each = pe.MapNode(niu.Function(function=_work, input_names=["x", "pause"],
                                       output_names=["y"]), iterfield=["x"], name="each")
        each.inputs.x, each.inputs.pause = [1, 2], 0.0
        a_wf.connect(inputnode, "x", work, "x")
        a_wf.add_nodes([each])
        more = pe.Node(niu.Function(function=_work, input_names=["x", "pause"],
                                    output_names=["y"]), name="more")
        more.inputs.pause = 0.0
        b_wf.add_nodes([more])
        sub.connect(a_wf, "work.y", b_wf, "more.x")
        top.add_nodes([sub])
    return top


@pytest.mark.parametrize("plugin", ["Linear", "MultiProc"])
def test_progress_lines_on_a_first_run_and_a_cached_rerun(tmp_path, caplog, plugin):
    args = {"n_procs": 2} if plugin == "MultiProc" else {}
    for attempt in ("first", "cached"):
        wf = _graph(tmp_path)
        progress = Progress(wf, ["01", "02"])
        assert progress.expected == {("01", "a_wf"): 2, ("01", "b_wf"): 1,
                                     ("02", "a_wf"): 2, ("02", "b_wf"): 1}
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="bids_harmonize"):
            started = time.time()
            wf.run(plugin=plugin, plugin_args={**args, "status_callback": progress})
            elapsed = time.time() - started
        lines = [r.getMessage() for r in caplog.records if r.name == "bids_harmonize"]
        for subject in ("01", "02"):
            mine = [line for line in lines if line.startswith(f"sub-{subject}: ")]
            assert sum("a_wf finished (2 node(s))" in line for line in mine) == 1, mine
            assert sum("b_wf finished (1 node(s))" in line for line in mine) == 1, mine
            assert "2 of 2 stage(s) done" in mine[-1], (attempt, mine)
        if attempt == "first" and plugin == "Linear":
            # one participant after the other: each one's own time holds its own 1 s pause
            # and not the other's, so the two add up to no more than the whole run
            own = [progress.own_time(s) for s in ("01", "02")]
            assert min(own) >= 1.0 and sum(own) <= elapsed, (own, elapsed)
        if attempt == "cached":  # nothing ran again: neither pause is counted
            assert all(progress.own_time(s) < 1.0 for s in ("01", "02"))


def test_own_time_replaces_the_runs_time_in_the_status_record():
    from bids_harmonize.app.record import own_time

    class Measured:
        def own_time(self, subject):
            return {"01": 12.34}.get(subject)

    record = {"participant": "01", "runtime_s": 100.0}
    assert own_time(record, Measured())["runtime_s"] == 12.3
    assert own_time({"participant": "02", "runtime_s": 100.0}, Measured())["runtime_s"] == 100.0
    assert own_time(record, None)["runtime_s"] == 100.0
