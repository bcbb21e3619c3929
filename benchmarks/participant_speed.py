"""Wall time and peak memory of ``participant`` for one simulated subject, and a cached rerun.

    python benchmarks/participant_speed.py [--subjects 1] [--tracers PiB] [--nprocs 2]
                                           [--omp-nthreads N] [--sloppy] [--nodes 12]

Simulates the dataset, builds the offline template, runs the participant level
in a child process (measured with ``/usr/bin/time``-like rusage of children),
then reruns it on the same work directory to show Nipype's cache at work.
Prints a Markdown table, then the first run's slowest Nipype nodes (their own elapsed
time from Nipype's log, and when each started after the first node: the critical path).
Without ``--omp-nthreads`` the app's default applies.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str], env: dict, log: Path | None = None) -> tuple[float, float]:
    """Run a command; return (wall seconds, peak RSS in GB of the largest child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    with open(log or os.devnull, "w") as out:
        subprocess.run(cmd, env=env, check=True, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak_kb, before) / 1024**2


_STAMP = re.compile(r"^\d{6}-(\d\d):(\d\d):(\d\d),(\d+) nipype")
_DONE = re.compile(r'\[Node\] Finished "([^"]+)", elapsed time ([0-9.]+)s')


def node_times(log: Path) -> list[tuple[float, float, str]]:
    """(start after the first node, elapsed, node name) of every finished node in a log."""
    now, rows = None, []
    for line in log.read_text(errors="replace").splitlines():
        stamp = _STAMP.match(line)
        if stamp:
            h, m, s, ms = (int(v) for v in stamp.groups())
            now = h * 3600 + m * 60 + s + ms / 1000
            continue
        done = _DONE.search(line)
        if done and now is not None:
            rows.append((now - float(done[2]), float(done[2]), done[1]))
    if not rows:
        return []
    t0 = min(r[0] for r in rows)
    return sorted(((r[0] - t0, r[1], r[2]) for r in rows), key=lambda r: -r[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=1)
    parser.add_argument("--tracers", default="PiB")
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--omp-nthreads", type=int, default=None,
                        help="threads per node (default: the app's default for --nprocs)")
    parser.add_argument("--sloppy", action="store_true")
    parser.add_argument("--nodes", type=int, default=12, help="slowest nodes to list")
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
           "-w", str(root / "work")]
    if args.omp_nthreads:
        cmd += ["--omp-nthreads", str(args.omp_nthreads)]
    if args.sloppy:
        cmd.append("--sloppy")
    first, peak1 = _run(cmd, env, root / "first.log")
    second, peak2 = _run(cmd, env, root / "rerun.log")
    print("\n| run | subjects | tracers | settings | wall time (s) | peak memory (GB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    mode = "sloppy" if args.sloppy else "default"
    if args.omp_nthreads:
        mode += f", --omp-nthreads {args.omp_nthreads}"
    print(f"| first | {args.subjects} | {args.tracers} | {mode}, {args.nprocs} procs | "
          f"{first:.0f} | {peak1:.2f} |")
    print(f"| rerun, same work dir | {args.subjects} | {args.tracers} | {mode} | {second:.0f} | "
          f"{peak2:.2f} |")
    rows = node_times(root / "first.log")
    if rows:
        print(f"\nFirst run: slowest nodes (sum of all {len(rows)} nodes' own times "
              f"{sum(r[1] for r in rows):.0f} s; last finished {max(r[0] + r[1] for r in rows):.0f} s "
              "after the first started)\n")
        print("| node | started (s) | elapsed (s) |")
        print("| --- | --- | --- |")
        for start, elapsed, name in rows[: args.nodes]:
            print(f"| {name} | {start:.0f} | {elapsed:.1f} |")
    print(f"\n(data, outputs and logs left in {root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
