"""Speed of the paired PET-CT / PET-MR simulator (``bids_harmonize.synth``).

    python benchmarks/synth_speed.py [--subjects 3] [--tracers PiB] [--resolution 2]

Prints a table: one-time setup (imports, nilearn template, label map), then per
subject the time of each stage (anatomy, uptake, PET-CT session, PET-MR session,
regional table, writing the BIDS files) and the total; then the process's peak
memory (resident set size).  Output files go to a temporary folder that is removed.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--tracers", default="PiB")
    parser.add_argument("--resolution", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    import torch  # noqa: F401  (imported by the simulator; timed as setup)

    from bids_harmonize.synth import template
    from bids_harmonize.synth.api import SynthConfig
    from bids_harmonize.synth.bids_writer import _write_subject
    from bids_harmonize.synth.simulate import _simulate

    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    template.padded_template()
    t_template = time.perf_counter() - t0

    config = SynthConfig(resolution_mm=args.resolution)
    tracers = [t.strip() for t in args.tracers.split(",") if t.strip()]
    stages = ["anatomy", "uptake", "session_petct", "session_petmr", "regional"]
    rows, cpu_rows = [], []
    out = Path(tempfile.mkdtemp(prefix="synth_speed_"))
    try:
        for index in range(1, args.subjects + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            subject, native, tracer_data = _simulate(index, seed=args.seed, tracers=tracers,
                                                     config=config, keep_native=True)
            t_sim, c_sim = time.perf_counter() - t0, time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            _write_subject(out, subject, native, tracer_data, config)
            t_write, c_write = time.perf_counter() - t0, time.process_time() - c0
            timing = subject.params["timing_s"]
            rows.append([timing[s] for s in stages] + [t_sim, t_write, t_sim + t_write])
            timing = subject.params["cpu_s"]
            cpu_rows.append([timing[s] for s in stages] + [c_sim, c_write, c_sim + c_write])
    finally:
        shutil.rmtree(out, ignore_errors=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    print(f"machine: {_cpu_name()}, {os.cpu_count()} cores, load average at start {load:.2f}")
    print(f"tracers: {','.join(tracers)}; resolution {args.resolution} mm; "
          f"{args.subjects} subject(s), both sessions each")
    print(f"one-time setup: imports {t_import:.1f} s, nilearn template + labels "
          f"{t_template:.1f} s")
    header = ["subject", *stages, "simulate", "write", "total"]
    for title, table in (("wall-clock seconds", rows), ("CPU seconds (all threads)", cpu_rows)):
        print(f"\n{title}")
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for i, row in enumerate(table, 1):
            print("| " + " | ".join([f"sub-{i:02d}"] + [f"{v:.2f}" for v in row]) + " |")
        if table:
            mean = [sum(col) / len(table) for col in zip(*table, strict=True)]
            print("| " + " | ".join(["mean"] + [f"{v:.2f}" for v in mean]) + " |")
    print(f"peak memory (RSS): {peak_mb:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
