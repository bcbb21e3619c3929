"""The local single-node SLURM cluster behaves like the cluster the workflows rely on.

Job arrays honour their ``%N`` throttle while still running tasks side by side,
``afterok`` dependencies wait for the whole array, a failed task cancels the dependent
job (kill_invalid_depend) instead of leaving it pending forever, and finished jobs stay
readable through ``scontrol`` (there is no accounting database, hence no sacct).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED"}

TASK_SCRIPT = """#!/bin/bash
out={out}
echo "start $SLURM_ARRAY_TASK_ID $(date +%s.%N)" >> "$out/times.txt"
env | grep -E '^(SLURM_[A-Z_]+|LOGNAME)=' > "$out/env_$SLURM_ARRAY_TASK_ID.txt"
sleep {sleep}
echo "end $SLURM_ARRAY_TASK_ID $(date +%s.%N)" >> "$out/times.txt"
[ "$SLURM_ARRAY_TASK_ID" != "{fail_task}" ]
"""


def _slurm(cluster, *args: str) -> str:
    proc = subprocess.run(list(args), env=cluster["env"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


def _sbatch(cluster, *args: str) -> str:
    return _slurm(cluster, "sbatch", "--parsable", *args).strip().split(";")[0]


def _records(cluster, job_id: str) -> list[dict[str, str]]:
    """``scontrol -o show job`` as one dict per job record (one per array task)."""
    records = []
    for line in _slurm(cluster, "scontrol", "-o", "show", "job", job_id).splitlines():
        fields = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        if fields:
            records.append(fields)
    return records


def _wait(cluster, job_id: str, timeout: float = 40) -> list[dict[str, str]]:
    """Poll until every record of ``job_id`` is in a terminal state; return the records."""
    deadline = time.monotonic() + timeout
    while True:
        records = _records(cluster, job_id)
        if records and all(r["JobState"] in TERMINAL for r in records):
            return records
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} not finished after {timeout} s: "
                        f"{[(r['JobId'], r['JobState'], r.get('Reason')) for r in records]}")
        time.sleep(0.2)


def _task_script(tmp_path: Path, *, sleep: float, fail_task: int = -1) -> Path:
    script = tmp_path / "task.sh"
    script.write_text(TASK_SCRIPT.format(out=tmp_path, sleep=sleep, fail_task=fail_task))
    script.chmod(0o755)
    return script


def _max_concurrency(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda ev: (ev[0], ev[1]))   # an end before a start at the same instant
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_array_throttle_and_afterok_dependency(slurm_cluster, tmp_path):
    if slurm_cluster["cpus"] < 2:
        pytest.skip("needs a node with at least 2 CPUs to run 2 array tasks at once")
    script = _task_script(tmp_path, sleep=1.5)
    array = _sbatch(slurm_cluster, "--array=0-5%2", "--cpus-per-task=1", "--mem=64M",
                    f"--chdir={tmp_path}", f"--output={tmp_path}/task_%a.log", str(script))
    child = _sbatch(slurm_cluster, f"--dependency=afterok:{array}", "--mem=32M",
                    f"--chdir={tmp_path}", f"--output={tmp_path}/child.log",
                    "--wrap", f'echo "child $(date +%s.%N)" >> {tmp_path}/child.txt')

    tasks = _wait(slurm_cluster, array)
    assert sorted(int(r["ArrayTaskId"]) for r in tasks) == list(range(6))
    assert {r["JobState"] for r in tasks} == {"COMPLETED"}
    child_record, = _wait(slurm_cluster, child)
    assert child_record["JobState"] == "COMPLETED"

    starts, ends = {}, {}
    for line in (tmp_path / "times.txt").read_text().splitlines():
        kind, task, stamp = line.split()
        (starts if kind == "start" else ends)[int(task)] = float(stamp)
    assert sorted(starts) == sorted(ends) == list(range(6))
    intervals = [(starts[t], ends[t]) for t in range(6)]
    assert _max_concurrency(intervals) == 2, f"%2 throttle not honoured or no overlap: {intervals}"

    child_start = float((tmp_path / "child.txt").read_text().split()[1])
    assert child_start >= max(ends.values()), "afterok child started before the array finished"

    # the job environment the workflows rely on
    task_env = dict(line.split("=", 1) for line in (tmp_path / "env_3.txt").read_text().splitlines())
    assert task_env["SLURM_ARRAY_TASK_ID"] == "3"
    assert task_env["SLURM_ARRAY_JOB_ID"] == array
    assert task_env["SLURM_JOB_ID"].isdigit()
    assert task_env["SLURM_CPUS_PER_TASK"] == "1"
    assert task_env["SLURM_MEM_PER_NODE"] == "64"
    assert task_env["SLURM_CONF"] == str(slurm_cluster["slurm_conf"])
    assert task_env.get("LOGNAME")


def test_failed_task_cancels_afterok_dependent(slurm_cluster, tmp_path):
    script = _task_script(tmp_path, sleep=0.2, fail_task=1)
    array = _sbatch(slurm_cluster, "--array=0-1", "--mem=64M", f"--chdir={tmp_path}",
                    f"--output={tmp_path}/task_%a.log", str(script))
    child = _sbatch(slurm_cluster, f"--dependency=afterok:{array}", "--mem=32M",
                    f"--chdir={tmp_path}", f"--output={tmp_path}/child.log",
                    "--wrap", f"touch {tmp_path}/child-ran")

    states = {int(r["ArrayTaskId"]): (r["JobState"], r["ExitCode"]) for r in _wait(slurm_cluster, array)}
    assert states == {0: ("COMPLETED", "0:0"), 1: ("FAILED", "1:0")}
    # kill_invalid_depend: cancelled rather than PENDING (DependencyNeverSatisfied) forever
    child_record, = _wait(slurm_cluster, child, timeout=20)
    assert child_record["JobState"] == "CANCELLED"
    assert child_record["Reason"] == "DependencyNeverSatisfied"
    assert not (tmp_path / "child-ran").exists()


def test_finished_job_state_readable_without_accounting(slurm_cluster, tmp_path):
    ok = _sbatch(slurm_cluster, "--mem=32M", f"--chdir={tmp_path}", "--output=/dev/null",
                 "--wrap", "true")
    bad = _sbatch(slurm_cluster, "--mem=32M", f"--chdir={tmp_path}", "--output=/dev/null",
                  "--wrap", "exit 3")
    ok_record, = _wait(slurm_cluster, ok)
    bad_record, = _wait(slurm_cluster, bad)
    assert (ok_record["JobState"], ok_record["ExitCode"]) == ("COMPLETED", "0:0")
    assert (bad_record["JobState"], bad_record["ExitCode"]) == ("FAILED", "3:0")
    # still readable afterwards (MinJobAge), and in the job-completion log
    time.sleep(1)
    assert _records(slurm_cluster, ok)[0]["JobState"] == "COMPLETED"
    jobcomp = (slurm_cluster["state_dir"] / "log" / "jobcomp.txt").read_text()
    assert f"JobId={bad} " in jobcomp and "JobState=FAILED" in jobcomp


def test_resubmit_single_array_index_and_srun(slurm_cluster, tmp_path):
    script = _task_script(tmp_path, sleep=0)
    again = _sbatch(slurm_cluster, "--array=3", "--mem=32M", f"--chdir={tmp_path}",
                    "--output=/dev/null", str(script))
    record, = _wait(slurm_cluster, again)
    assert (record["ArrayTaskId"], record["JobState"]) == ("3", "COMPLETED")
    assert (tmp_path / "env_3.txt").is_file()

    if slurm_cluster["cpus"] >= 2:
        out = _slurm(slurm_cluster, "srun", "-N1", "-n2", "--mem=32M", "hostname")
        assert out.split() == [slurm_cluster["node"]] * 2
