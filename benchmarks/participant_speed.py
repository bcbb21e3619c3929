"""Wall time and peak memory of ``participant`` for one simulated subject, and a cached rerun.

    python benchmarks/participant_speed.py [--subjects 1] [--tracers PiB] [--nprocs 2] [--sloppy]

Simulates the dataset, builds the offline template, runs the participant level
in a child process (measured with ``/usr/bin/time``-like rusage of children),
then reruns it on the same work directory to show Nipype's cache at work.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str], env: dict) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in GB of the largest child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak_kb, before) / 1024**2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=1)
    parser.add_argument("--tracers", default="PiB")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--sloppy", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bh-bench-"))
    env = {**os.environ, "TEMPLATEFLOW_HOME": str(root / "templateflow")}
    exe = Path(sys.executable).parent
    subprocess.run([exe / "bids_harmonize-templates", str(root / "templateflow")], env=env,
                   check=True, capture_output=True)
    subprocess.run([exe / "bids_harmonize-synth", str(root / "bids"), "--subjects",
                    str(args.subjects), "--tracers", args.tracers, "--seed", "0"], env=env,
                   check=True, capture_output=True)
    cmd = [str(exe / "bids_harmonize"), str(root / "bids"), str(root / "out"), "participant",
           "--output-spaces", "MNI152NLin2009aSym", "T1w", "--nprocs", str(args.nprocs),
           "--omp-nthreads", str(args.nprocs), "-w", str(root / "work")]
    if args.sloppy:
        cmd.append("--sloppy")
    first, peak1 = _run(cmd, env)
    second, peak2 = _run(cmd, env)
    print("\n| run | subjects | tracers | settings | wall time (s) | peak memory (GB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    mode = "sloppy" if args.sloppy else "default"
    print(f"| first | {args.subjects} | {args.tracers} | {mode}, {args.nprocs} procs | "
          f"{first:.0f} | {peak1:.2f} |")
    print(f"| rerun, same work dir | {args.subjects} | {args.tracers} | {mode} | {second:.0f} | "
          f"{peak2:.2f} |")
    print(f"\n(data and outputs left in {root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
